package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/campaignmesh/campaignmesh/gateway"
	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
	"github.com/campaignmesh/campaignmesh/internal/platform/usage"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
	"github.com/campaignmesh/campaignmesh/services/ingest"
	"github.com/campaignmesh/campaignmesh/services/ingest/app"
)

const batchSize = 100

// tenant is the tenant of the bench's token: every event ingest accepts is its.
const tenant = "bench"

// request builds a 100-event batch whose ids are unique to (run, caller, call).
func request(run string, caller, call int) *ingestv1.IngestEventsRequest {
	req := &ingestv1.IngestEventsRequest{Events: make([]*ingestv1.Event, batchSize)}
	now := timestamppb.Now()
	for j := range req.Events {
		req.Events[j] = &ingestv1.Event{
			EventId: fmt.Sprintf("%s-%d-%d-%d", run, caller, call, j), Type: ingestv1.EventType_EVENT_TYPE_IMPRESSION,
			UserId: fmt.Sprintf("user-%d", j), CampaignId: "bench", Variant: "a", Timestamp: now,
		}
	}
	return req
}

type noop struct {
	ingestv1.UnimplementedIngestServiceServer
}

func (noop) IngestEvents(_ context.Context, r *ingestv1.IngestEventsRequest) (*ingestv1.IngestEventsResponse, error) {
	return &ingestv1.IngestEventsResponse{Accepted: int32(len(r.GetEvents()))}, nil
}

// run sets up what every phase shares, measures the baselines, then the pipeline, and prints
// the ratios between them.
func (b *bench) run(ctx context.Context) error {
	r, err := setUp(ctx, true)
	if r != nil {
		defer r.tearDown()
	}
	if err != nil {
		return err
	}

	fmt.Println()
	fmt.Printf("Baselines (%d callers, %s each, %d-event batches)\n", b.callers, b.duration, batchSize)
	base, err := b.baselines(ctx, r)
	if err != nil {
		return err
	}

	fmt.Printf("\nPipeline\n")
	p, err := startPipeline(ctx, r)
	if err != nil {
		return err
	}
	defer p.stop()
	acked, err := b.ackedDirect(ctx, p)
	if err != nil {
		return err
	}
	if err := b.viaGateway(ctx, r, p); err != nil {
		return err
	}
	landed, err := b.steadyRuns(ctx, r, p)
	if err != nil {
		return err
	}
	if err := b.backlogDrains(ctx, r, p); err != nil {
		return err
	}

	b.ratios(base, acked, landed)
	return nil
}

// rig is what the phases share: certificates, the embedded NATS server and the bench's own
// JetStream connection, and a ClickHouse database dropped at the end.
type rig struct {
	dir                            string
	ingestSrc, gatewaySrc, edgeSrc *mtls.Source
	ns                             *server.Server
	js                             jetstream.JetStream
	chAddr, db                     string
	chUser                         clickhouse.User
	admin                          ch.Conn
	cleanups                       []func()
}

// files are the certificate files DevPKI issued to svc.
func (r *rig) files(svc string) mtls.Files {
	return mtls.Files{Cert: filepath.Join(r.dir, svc+".pem"), Key: filepath.Join(r.dir, svc+"-key.pem"), CA: filepath.Join(r.dir, "ca.pem")}
}

func (r *rig) onTearDown(f func()) { r.cleanups = append(r.cleanups, f) }

// tearDown releases what setUp built, last first.
func (r *rig) tearDown() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

// setUp issues the certificates, starts NATS (JetStream, file storage, fsync always) and, with
// withClickHouse, creates the bench's ClickHouse database. On an error the rig returned holds
// what was built, for tearDown.
func setUp(ctx context.Context, withClickHouse bool) (*rig, error) {
	dir, err := os.MkdirTemp("", "bench-ingest-")
	if err != nil {
		return nil, err
	}
	r := &rig{dir: dir}
	r.onTearDown(func() { _ = os.RemoveAll(dir) })
	progress("issuing certificates")
	if _, err := mtls.DevPKI(dir, []string{"ingest", "gateway"}); err != nil {
		return r, err
	}
	if r.ingestSrc, err = mtls.NewSource(r.files("ingest"), nil); err != nil {
		return r, err
	}
	if r.gatewaySrc, err = mtls.NewSource(r.files("gateway"), nil); err != nil {
		return r, err
	}
	if r.edgeSrc, err = mtls.NewSource(mtls.Files{Cert: filepath.Join(dir, "edge.pem"), Key: filepath.Join(dir, "edge-key.pem")}, nil); err != nil {
		return r, err
	}

	progress("starting embedded NATS (JetStream, file storage, fsync always)")
	if r.ns, err = server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: filepath.Join(dir, "nats"), SyncAlways: true, NoLog: true, NoSigs: true}); err != nil {
		return r, err
	}
	go r.ns.Start()
	r.onTearDown(r.ns.Shutdown)
	if !r.ns.ReadyForConnections(10 * time.Second) {
		return r, fmt.Errorf("nats not ready")
	}
	nc, js, err := natsjs.Connect(r.ns.ClientURL(), "bench")
	if err != nil {
		return r, err
	}
	r.onTearDown(nc.Close)
	r.js = js
	if !withClickHouse {
		return r, nil
	}

	r.chAddr = os.Getenv("CM_CLICKHOUSE_ADDR")
	if r.chAddr == "" {
		r.chAddr = "127.0.0.1:19000"
	}
	r.db = fmt.Sprintf("bench_%d", time.Now().UnixNano())
	if r.chUser, err = clickhouse.EnvUser("CM_CLICKHOUSE"); err != nil {
		return r, err
	}
	r.admin, err = ch.Open(&ch.Options{Addr: []string{r.chAddr}, Auth: ch.Auth{Username: r.chUser.Name, Password: r.chUser.Password}})
	if err == nil {
		err = r.admin.Exec(ctx, "CREATE DATABASE "+r.db)
	}
	if err != nil {
		return r, fmt.Errorf("clickhouse at %s (run scripts/devenv.sh up): %w", r.chAddr, err)
	}
	r.onTearDown(func() { _ = r.admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+r.db); r.admin.Close() })
	return r, nil
}

// baseline are the physical limits the pipeline is compared with, in events (rows) a second.
type baseline struct {
	grpc, jetStream, clickHouse float64
}

// baselines measures (a) raw gRPC, (b) raw JetStream and (c) raw ClickHouse, one at a time.
func (b *bench) baselines(ctx context.Context, r *rig) (baseline, error) {
	var base baseline
	var err error
	if base.grpc, err = b.rawGRPC(ctx, r.ingestSrc, r.gatewaySrc); err != nil {
		return base, err
	}
	if base.jetStream, err = b.rawJetStream(ctx, r.js); err != nil {
		return base, err
	}
	if base.clickHouse, err = b.rawClickHouse(ctx, r.chAddr, r.db+"_raw", r.admin, r.chUser); err != nil {
		return base, err
	}
	return base, nil
}

// pipeline is ingest as cmd/ingest builds it (through services/ingest/app, with a JWT verifier
// of the bench's own key instead of the auth service, and rate limits out of the way), the
// ClickHouse database the writer lands events in, and a count of the events acknowledged so far.
type pipeline struct {
	js       jetstream.JetStream
	ingest   *app.App
	served   chan error
	stopServ context.CancelFunc
	token    string
	authCtx  context.Context
	plainCtx context.Context // as plainTenant (the privacy comparison)
	hasher   *privacy.Hasher
	direct   *grpc.ClientConn
	client   ingestv1.IngestServiceClient
	chConn   ch.Conn
	accepted int64
}

// startPipeline builds and starts ingest on the embedded NATS and opens the ClickHouse database
// (the writer starts only for the steady run: the acked phases measure ingest against
// baselines (a) and (b), which run alone too; the stream holds their events meanwhile).
func startPipeline(ctx context.Context, r *rig) (_ *pipeline, err error) {
	p := &pipeline{js: r.js}
	defer func() {
		if err != nil {
			p.stop()
		}
	}()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	if p.token, err = authn.Sign(authn.Claims{RegisteredClaims: jwt.RegisteredClaims{Issuer: authn.Issuer, Audience: jwt.ClaimStrings{authn.Audience},
		Subject: "bench", IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}, TenantID: tenant, Role: "admin"}, "k", priv); err != nil {
		return nil, err
	}
	p.authCtx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+p.token)
	if p.plainCtx, err = plainContext(ctx, priv); err != nil {
		return nil, err
	}
	if p.hasher, err = newHasher(); err != nil {
		return nil, err
	}

	cfg := app.DefaultConfig()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.TLS = r.files("ingest")
	cfg.NATS = natsjs.ClientFlags{URL: r.ns.ClientURL()}
	cfg.Rates = ingest.RateLimits{PerTenant: 1e9, PerSource: 1e9}
	cfg.Verifier = authn.Verifier{Tokens: authn.NewJWTVerifier(authn.StaticKeys{"k": pub}), Keys: benchKeys{}}
	cfg.Hasher = p.hasher
	if p.ingest, err = app.New(ctx, cfg, slog.New(slog.DiscardHandler)); err != nil {
		return nil, err
	}
	sctx, stop := context.WithCancel(ctx)
	p.stopServ, p.served = stop, make(chan error, 1)
	go func() { p.served <- p.ingest.Run(sctx) }()

	if r.admin != nil { // the privacy comparison has no ClickHouse
		if p.chConn, err = clickhouse.Open(ctx, r.chAddr, r.db, r.chUser); err != nil {
			return nil, err
		}
	}
	if p.direct, err = dialIngest(p.ingest.Addr(), r.gatewaySrc); err != nil {
		return nil, err
	}
	p.client = ingestv1.NewIngestServiceClient(p.direct)
	return p, nil
}

// stop ends ingest and closes the connections.
func (p *pipeline) stop() {
	if p.direct != nil {
		_ = p.direct.Close()
	}
	if p.stopServ != nil {
		p.stopServ()
		<-p.served
	}
	if p.ingest != nil {
		p.ingest.Close()
	}
	if p.chConn != nil {
		_ = p.chConn.Close()
	}
}

// call is a load function sending request(run, …) through client as the bench's tenant.
func (p *pipeline) call(client ingestv1.IngestServiceClient, run string) func(context.Context, int, int) error {
	return func(_ context.Context, caller, i int) error {
		_, err := client.IngestEvents(p.authCtx, request(run, caller, i))
		return err
	}
}

// writerConfig is writer i of n as the bench runs it: the writer's defaults, a fixed identity
// per index (a later phase's writer of the same index takes the lease back at once).
func writerConfig(i, n int) writer.Config {
	cfg := writer.DefaultConfig
	cfg.Index, cfg.Count = i, n
	cfg.Identity = fmt.Sprintf("bench-writer-%d", i)
	return cfg
}

// startWriters runs n writers — writer i of n for each i, as n analytics processes would: each
// with its own JetStream and ClickHouse connections — on the bench's database of the one shard,
// until the returned stop is called; stop returns once every writer has stopped and its
// connections are closed. Run errors other than the stop are kept and returned by stop.
func startWriters(ctx context.Context, r *rig, n int) (stop func() error, err error) {
	wctx, cancel := context.WithCancel(ctx)
	var closers []func()
	var dones []chan error
	stop = func() error {
		cancel()
		var errs []error
		for _, d := range dones {
			errs = append(errs, <-d)
		}
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
		return errors.Join(errs...)
	}
	for i := 0; i < n; i++ {
		nc, js, err := natsjs.Connect(r.ns.ClientURL(), fmt.Sprintf("bench-writer-%d", i))
		if err != nil {
			_ = stop()
			return nil, fmt.Errorf("writer %d of %d: %w", i, n, err)
		}
		closers = append(closers, nc.Close)
		// Opened one after the other: each Open checks the schema is up to date.
		conn, err := clickhouse.Open(ctx, r.chAddr, r.db, r.chUser)
		if err != nil {
			_ = stop()
			return nil, fmt.Errorf("writer %d of %d: %w", i, n, err)
		}
		closers = append(closers, func() { _ = conn.Close() })
		// As in production (analytics' app): each batch's accepted events are recorded as usage
		// units on the USAGE stream before the batch is acknowledged.
		if _, err := usage.EnsureStream(ctx, js); err != nil {
			_ = stop()
			return nil, fmt.Errorf("writer %d of %d: %w", i, n, err)
		}
		w := writer.New(js, []writer.Sink{clickhouse.NewEventSink(conn)}, writerConfig(i, n), slog.New(slog.DiscardHandler), nil,
			writer.WithAcceptedUsage())
		done := make(chan error, 1)
		dones = append(dones, done)
		go func(i int) {
			if err := w.Run(wctx); err != nil {
				done <- fmt.Errorf("writer %d of %d: %w", i, n, err)
				return
			}
			done <- nil
		}(i)
	}
	return stop, nil
}

// ackedDirect measures events durably acknowledged by ingest called directly by b.callers,
// then the latency of a 100-event call at 1 and at b.callers callers. It returns the acked rate.
func (b *bench) ackedDirect(ctx context.Context, p *pipeline) (float64, error) {
	calls, lat8, err := load(ctx, b.callers, b.duration, p.call(p.client, "d8"))
	if err != nil {
		return 0, fmt.Errorf("direct ingest: %w", err)
	}
	p.accepted += calls * batchSize
	acked := float64(calls*batchSize) / b.duration.Seconds()
	b.add("(d) ingest direct: events durably acked", acked, "ev/s", "")
	calls, lat1, err := load(ctx, 1, b.duration/2, p.call(p.client, "d1"))
	if err != nil {
		return 0, fmt.Errorf("direct ingest, 1 caller: %w", err)
	}
	p.accepted += calls * batchSize
	b.add("(d) 100-event call latency, 1 caller: p50", float64(percentile(lat1, 0.5).Microseconds()), "µs", "")
	b.add("(d) 100-event call latency, 1 caller: p99", float64(percentile(lat1, 0.99).Microseconds()), "µs", "")
	b.add(fmt.Sprintf("(d) 100-event call latency, %d callers: p50", b.callers), float64(percentile(lat8, 0.5).Microseconds()), "µs", "")
	b.add(fmt.Sprintf("(d) 100-event call latency, %d callers: p99", b.callers), float64(percentile(lat8, 0.99).Microseconds()), "µs", "")
	return acked, nil
}

// viaGateway measures events acknowledged through the gateway, on a TLS listener with the edge
// certificate: its gRPC proxy, then REST.
func (b *bench) viaGateway(ctx context.Context, r *rig, p *pipeline) error {
	gwConn, err := grpcclient.Dial(p.ingest.Addr(), "ingest", r.gatewaySrc)
	if err != nil {
		return err
	}
	defer gwConn.Close()
	gw, err := gateway.New(ctx, gateway.Config{RateLimit: 1 << 30, Logger: slog.New(slog.DiscardHandler)},
		[]gateway.Backend{{Package: "campaignmesh.ingest.v1", Conn: gwConn, RegisterREST: ingestv1.RegisterIngestServiceHandler}})
	if err != nil {
		return err
	}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: gw, TLSConfig: r.edgeSrc.EdgeServerConfig(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.ServeTLS(gl, "", "") }()
	defer hs.Close()
	caPEM, _ := os.ReadFile(filepath.Join(r.dir, "ca.pem"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	edgeTLS := &tls.Config{RootCAs: pool, ServerName: "localhost"}

	viaGW, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(edgeTLS)))
	if err != nil {
		return err
	}
	defer viaGW.Close()
	calls, _, err := load(ctx, b.callers, b.duration, p.call(ingestv1.NewIngestServiceClient(viaGW), "g"))
	if err != nil {
		return fmt.Errorf("ingest through the gateway: %w", err)
	}
	p.accepted += calls * batchSize
	b.add("(d) ingest via gateway gRPC proxy: events durably acked", float64(calls*batchSize)/b.duration.Seconds(), "ev/s", "")

	httpc := &http.Client{Transport: &http.Transport{TLSClientConfig: edgeTLS, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: b.callers}, Timeout: 30 * time.Second}
	url := "https://" + gl.Addr().String() + "/v1/events:batch"
	calls, _, err = load(ctx, b.callers, b.duration, func(_ context.Context, caller, i int) error {
		body, _ := protojson.Marshal(request("r", caller, i))
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+p.token)
		resp, err := httpc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("REST status %d", resp.StatusCode)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("REST through the gateway: %w", err)
	}
	p.accepted += calls * batchSize
	rest := float64(calls*batchSize) / b.duration.Seconds()
	b.add("(d) REST via gateway: events durably acked", rest, "ev/s", "")

	// The Segment HTTP API (/v1/batch, a write key in Basic auth), plain and gzip.
	for _, compress := range []bool{false, true} {
		name, run := "(d) Segment /v1/batch via gateway: events durably acked", "s"
		if compress {
			name, run = "(d) Segment /v1/batch gzip via gateway: events durably acked", "z"
		}
		calls, err := b.segmentLoad(ctx, httpc, "https://"+gl.Addr().String()+"/v1/batch", run, compress)
		if err != nil {
			return fmt.Errorf("segment through the gateway: %w", err)
		}
		p.accepted += calls * batchSize
		rate := float64(calls*batchSize) / b.duration.Seconds()
		b.add(name, rate, "ev/s", fmt.Sprintf("%.0f %% of REST (target ≥ 90 %%)", 100*rate/rest))
	}
	return nil
}

// steadyRuns runs the steady run once for each writer count of b.writers, one after the
// other on the same stream and database, and returns the landed rate of the run with one writer
// (of the first run when there is none), which the ratios compare with the baselines. With
// more than one count it also prints each count's landed rate against one writer's.
func (b *bench) steadyRuns(ctx context.Context, r *rig, p *pipeline) (float64, error) {
	rates := map[int]float64{}
	for _, n := range b.writers {
		rate, err := b.steadyRun(ctx, r, p, n)
		if err != nil {
			return 0, err
		}
		rates[n] = rate
	}
	for _, s := range scaling("landed (steady)", b.writers, rates) {
		b.add(s.name, s.value, "%", s.note)
	}
	if rate, ok := rates[1]; ok {
		return rate, nil
	}
	return rates[b.writers[0]], nil
}

// figure is a computed result line, before it is printed.
type figure struct {
	name  string
	value float64
	note  string
}

// scaling compares the rate (of the figure named name) of every writer count other than one with
// the rate of one writer, in percent (200 % is twice one writer's rate); nothing without a run
// of one writer.
func scaling(name string, counts []int, rates map[int]float64) []figure {
	one, ok := rates[1]
	if !ok || one <= 0 {
		return nil
	}
	var out []figure
	for _, n := range counts {
		if n == 1 {
			continue
		}
		out = append(out, figure{steadyName(name, n) + " / 1 writer", rates[n] / one * 100,
			fmt.Sprintf("(%.0f vs %.0f ev/s)", rates[n], one)})
	}
	return out
}

// steadyName is the name of a steady-run or drain figure with n writers: the one-writer figures
// keep the names they had before the bench ran several writers.
func steadyName(name string, n int) string {
	if n == 1 {
		return name
	}
	return fmt.Sprintf("%s, %d writers", name, n)
}

// parseWriterCounts reads -writers: a comma-separated list of writer counts, each from 1 to
// natsjs.MaxWriters.
func parseWriterCounts(s string) ([]int, error) {
	var counts []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > natsjs.MaxWriters {
			return nil, fmt.Errorf("-writers %q: each count must be a number from 1 to %d", s, natsjs.MaxWriters)
		}
		if slices.Contains(counts, n) {
			return nil, fmt.Errorf("-writers %q: %d twice", s, n)
		}
		counts = append(counts, n)
	}
	return counts, nil
}

// steadyRun starts n writers (writer i of n each), sends one more request and waits until they
// have landed everything accepted so far — the request's events fall in every partition
// (requestPartitions), so every writer has started and written —, then ingests for b.steady
// while they land events in ClickHouse, and waits for the rest. It returns the rate events
// landed at during the run; the writers are stopped when it returns.
func (b *bench) steadyRun(ctx context.Context, r *rig, p *pipeline, n int) (_ float64, err error) {
	progress("starting %d writer(s); waiting for them to land the events accepted so far", n)
	stop, err := startWriters(ctx, r, n)
	if err != nil {
		return 0, err
	}
	defer func() {
		if stopErr := stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	if _, err := p.client.IngestEvents(p.authCtx, request(fmt.Sprintf("w%d", n), 0, 0)); err != nil {
		return 0, fmt.Errorf("steady run, %d writers: %w", n, err)
	}
	p.accepted += batchSize
	before, err := waitLanded(ctx, p.chConn, uint64(p.accepted), 120*time.Second)
	if err != nil {
		return 0, err
	}
	if before < uint64(p.accepted) {
		return 0, fmt.Errorf("steady run, %d writers: %d of %d accepted events landed before the run", n, before, p.accepted)
	}
	progress("steady run: %s of ingest while %d writer(s) land events in ClickHouse", b.steady, n)
	steadyStart := time.Now()
	calls, _, err := load(ctx, b.callers, b.steady, p.call(p.client, fmt.Sprintf("s%d", n)))
	if err != nil {
		return 0, fmt.Errorf("steady run, %d writers: %w", n, err)
	}
	p.accepted += calls * batchSize
	b.add(steadyName("(d) ingest direct during the steady run: events durably acked", n), float64(calls*batchSize)/b.steady.Seconds(), "ev/s", "")
	after, err := countRows(ctx, p.chConn)
	if err != nil {
		return 0, err
	}
	landedRate := float64(after-before) / time.Since(steadyStart).Seconds()
	b.add(steadyName("(d) events landed in ClickHouse during the steady run", n), landedRate, "ev/s", "")
	landed, err := waitLanded(ctx, p.chConn, uint64(p.accepted), 60*time.Second)
	if err != nil {
		return 0, err
	}
	b.add(steadyName("(d) landed / accepted after the run", n), float64(landed)/float64(p.accepted)*100, "%", landedNote(landed, uint64(p.accepted)))
	return landedRate, nil
}

// landedNote says how many of the accepted events landed, and calls out a count that is not
// all of them (lost, or not landed within the wait) or more than them (counted twice).
func landedNote(landed, accepted uint64) string {
	note := fmt.Sprintf("(%d of %d)", landed, accepted)
	switch {
	case landed < accepted:
		note += " NOT ALL LANDED"
	case landed > accepted:
		note += " MORE THAN ACCEPTED"
	}
	return note
}

// backlogDrains runs the backlog drain once for each writer count of b.writers and, with more
// than one count, prints each count's drain rate once reading against one writer's.
func (b *bench) backlogDrains(ctx context.Context, r *rig, p *pipeline) error {
	rates := map[int]float64{}
	for _, n := range b.writers {
		rate, err := b.backlogDrain(ctx, r, p, n)
		if err != nil {
			return err
		}
		rates[n] = rate
	}
	for _, s := range scaling("writer backlog drain once reading", b.writers, rates) {
		b.add(s.name, s.value, "%", s.note)
	}
	return nil
}

// backlogDrain builds a backlog for b.duration with the writers stopped, starts n writers
// (writer i of n each) and measures how fast they land the backlog: from their start (the
// figure the bench has always printed, which includes a writer's start: rebuilding its dedup
// filter from the stored ids, creating its consumer), and from when every writer has read from
// the stream, which it returns: what n writers land once running.
func (b *bench) backlogDrain(ctx context.Context, r *rig, p *pipeline, n int) (_ float64, err error) {
	progress("building a backlog for %s with the writers stopped, for %d writer(s)", b.duration, n)
	calls, _, err := load(ctx, b.callers, b.duration, p.call(p.client, fmt.Sprintf("b%d", n)))
	if err != nil {
		return 0, fmt.Errorf("backlog: %w", err)
	}
	p.accepted += calls * batchSize
	backlog := calls * batchSize
	// The consumers of the writers stopped before are deleted, so that a consumer that has
	// delivered messages is one of the writers started now.
	if err := deleteWriterConsumers(ctx, r.js); err != nil {
		return 0, err
	}
	drainStart := time.Now()
	stop, err := startWriters(ctx, r, n)
	if err != nil {
		return 0, err
	}
	defer func() {
		if stopErr := stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	if err := waitReading(ctx, r.js, n, 120*time.Second); err != nil {
		return 0, err
	}
	readingStart := time.Now()
	atReading, err := countRows(ctx, p.chConn)
	if err != nil {
		return 0, err
	}
	landed, err := waitLanded(ctx, p.chConn, uint64(p.accepted), 120*time.Second)
	if err != nil {
		return 0, err
	}
	end := time.Now()
	drain := float64(backlog) / end.Sub(drainStart).Seconds()
	note := fmt.Sprintf("(%d events)", backlog)
	if landed != uint64(p.accepted) {
		note += " " + landedNote(landed, uint64(p.accepted))
	}
	b.add(steadyName("(d) writer backlog drain", n), drain, "ev/s", note)
	reading := float64(landed-atReading) / end.Sub(readingStart).Seconds()
	b.add(steadyName("(d) writer backlog drain once reading", n), reading, "ev/s",
		fmt.Sprintf("(%d events, %s after the start)", landed-atReading, readingStart.Sub(drainStart).Round(time.Millisecond)))
	return reading, nil
}

// deleteWriterConsumers deletes the consumers of every writer index (their writers are
// stopped; a writer recreates its own at its start anyway).
func deleteWriterConsumers(ctx context.Context, js jetstream.JetStream) error {
	for i := 0; i < natsjs.MaxWriters; i++ {
		if err := js.DeleteConsumer(ctx, natsjs.StreamName, natsjs.WriterConsumerName(i)); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("delete consumer %s: %w", natsjs.WriterConsumerName(i), err)
		}
	}
	return nil
}

// waitReading waits until the consumer of every writer i of n exists and has delivered
// messages: each writer is past its start and reading (within limit).
func waitReading(ctx context.Context, js jetstream.JetStream, n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for i := 0; i < n; {
		name := natsjs.WriterConsumerName(i)
		cons, err := js.Consumer(ctx, natsjs.StreamName, name)
		if err == nil && cons.CachedInfo().Delivered.Consumer > 0 {
			i++
			continue
		}
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("consumer %s: %w", name, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("writer %d of %d has read nothing within %s", i, n, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// ratios compares the pipeline with its baselines put in series.
func (b *bench) ratios(base baseline, acked, landed float64) {
	fmt.Printf("\nRatios\n")
	ab, abc := serial(base.grpc, base.jetStream), serial(base.grpc, base.jetStream, base.clickHouse)
	b.add("composite of (a) and (b) in series", ab, "ev/s", "")
	b.add("acked direct / composite(a,b)", acked/ab*100, "%", "(target ≥ 60%, and acked ≥ 100,000 ev/s)")
	b.add("composite of (a), (b) and (c) in series", abc, "ev/s", "")
	b.add("landed (steady) / composite(a,b,c)", landed/abc*100, "%", "(target ≥ 60%)")
}

func dialIngest(addr string, src *mtls.Source) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(src.ClientConfig("ingest"))))
}

func (b *bench) rawGRPC(ctx context.Context, serverSrc, clientSrc *mtls.Source) (float64, error) {
	progress("(a) raw gRPC over mTLS, no-op handler")
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(serverSrc.ServerConfig())))
	ingestv1.RegisterIngestServiceServer(s, noop{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	go func() { _ = s.Serve(lis) }()
	defer s.Stop()
	conn, err := dialIngest(lis.Addr().String(), clientSrc)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	client := ingestv1.NewIngestServiceClient(conn)
	calls, _, err := load(ctx, b.callers, b.duration, func(ctx context.Context, caller, i int) error {
		_, err := client.IngestEvents(ctx, request("a", caller, i))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("raw grpc: %w", err)
	}
	r := float64(calls*batchSize) / b.duration.Seconds()
	b.add("(a) raw gRPC mTLS unary, batch 100, no-op handler", r, "ev/s", "")
	return r, nil
}

func (b *bench) rawJetStream(ctx context.Context, js jetstream.JetStream) (float64, error) {
	progress("(b) raw JetStream publish, fsync always")
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "BENCH", Subjects: []string{"bench.>"}, Storage: jetstream.FileStorage}); err != nil {
		return 0, err
	}
	// The batch as ingest publishes it (compact, natsjs.EncodeBatch), the client's clock trusted.
	var batch []*ingestv1.AcceptedEvent
	received := timestamppb.Now()
	for _, e := range request("b", 0, 0).GetEvents() {
		batch = append(batch, &ingestv1.AcceptedEvent{Event: e, TenantId: "bench", Source: "bench", ReceivedAt: received, CorrectedTime: e.GetTimestamp()})
	}
	data, err := natsjs.EncodeBatch(batch)
	if err != nil {
		return 0, err
	}
	calls, _, err := load(ctx, b.callers, b.duration, func(ctx context.Context, caller, i int) error {
		_, err := js.Publish(ctx, "bench.t", data, jetstream.WithMsgID(fmt.Sprintf("%d-%d", caller, i)))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("raw jetstream: %w", err)
	}
	_ = js.DeleteStream(ctx, "BENCH")
	r := float64(calls*batchSize) / b.duration.Seconds()
	b.add("(b) raw JetStream publish, 100-event batches, fsync", r, "ev/s", fmt.Sprintf("(%d bytes a batch)", len(data)))
	return r, nil
}

func (b *bench) rawClickHouse(ctx context.Context, addr, db string, admin ch.Conn, user clickhouse.User) (float64, error) {
	progress("(c) raw ClickHouse native batch insert, %d rows a block", writer.DefaultConfig.BatchRows)
	if err := admin.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		return 0, err
	}
	defer func() { _ = admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db) }()
	conn, err := clickhouse.Open(ctx, addr, db, user)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	sink := clickhouse.NewEventSink(conn)
	rows := make([]writer.Row, 0, writer.DefaultConfig.BatchRows)
	for len(rows) < writer.DefaultConfig.BatchRows {
		for _, e := range request("c", len(rows), 0).GetEvents() {
			rows = append(rows, writer.Row{Event: &ingestv1.AcceptedEvent{Event: e, TenantId: "bench", ReceivedAt: timestamppb.Now(), CorrectedTime: timestamppb.Now()}, Seq: 1})
		}
	}
	month := writer.MonthOf(rows[0].Event.GetCorrectedTime().AsTime())
	commits := []writer.Commit{{Part: 0, Seqs: []uint64{1}}}
	calls, _, err := load(ctx, 1, b.duration, func(ctx context.Context, _, _ int) error { return sink.Insert(ctx, month, rows, commits) })
	if err != nil {
		return 0, fmt.Errorf("raw clickhouse: %w", err)
	}
	r := float64(calls*int64(len(rows))) / b.duration.Seconds()
	b.add("(c) raw ClickHouse insert, 10k-row blocks, 1 inserter", r, "rows/s", "")
	return r, nil
}

func countRows(ctx context.Context, conn ch.Conn) (uint64, error) {
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM events WHERE tenant_id != ''").Scan(&n); err != nil {
		return 0, fmt.Errorf("count landed rows: %w", err)
	}
	return n, nil
}

func waitLanded(ctx context.Context, conn ch.Conn, want uint64, limit time.Duration) (uint64, error) {
	deadline := time.Now().Add(limit)
	for {
		n, err := countRows(ctx, conn)
		if err != nil || n >= want || time.Now().After(deadline) {
			return n, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}
