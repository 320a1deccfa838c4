package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/campaignmesh/campaignmesh/gateway"
	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
	"github.com/campaignmesh/campaignmesh/services/ingest"
	"github.com/campaignmesh/campaignmesh/services/ingest/grpcapi"
	ingestjs "github.com/campaignmesh/campaignmesh/services/ingest/natsjs"
)

const batchSize = 100

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

func (b *bench) run(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "bench-ingest-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	progress("issuing certificates")
	if _, err := mtls.DevPKI(dir, []string{"ingest", "gateway"}); err != nil {
		return err
	}
	files := func(svc string) mtls.Files {
		return mtls.Files{Cert: filepath.Join(dir, svc+".pem"), Key: filepath.Join(dir, svc+"-key.pem"), CA: filepath.Join(dir, "ca.pem")}
	}
	ingestSrc, err := mtls.NewSource(files("ingest"), nil)
	if err != nil {
		return err
	}
	gatewaySrc, err := mtls.NewSource(files("gateway"), nil)
	if err != nil {
		return err
	}
	edgeSrc, err := mtls.NewSource(mtls.Files{Cert: filepath.Join(dir, "edge.pem"), Key: filepath.Join(dir, "edge-key.pem")}, nil)
	if err != nil {
		return err
	}

	progress("starting embedded NATS (JetStream, file storage, fsync always)")
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: filepath.Join(dir, "nats"), SyncAlways: true, NoLog: true, NoSigs: true})
	if err != nil {
		return err
	}
	go ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		return fmt.Errorf("nats not ready")
	}
	nc, js, err := natsjs.Connect(ns.ClientURL(), "bench")
	if err != nil {
		return err
	}
	defer nc.Close()

	chAddr := os.Getenv("CM_CLICKHOUSE_ADDR")
	if chAddr == "" {
		chAddr = "127.0.0.1:19000"
	}
	db := fmt.Sprintf("bench_%d", time.Now().UnixNano())
	chUser, err := clickhouse.EnvUser("CM_CLICKHOUSE")
	if err != nil {
		return err
	}
	admin, err := ch.Open(&ch.Options{Addr: []string{chAddr}, Auth: ch.Auth{Username: chUser.Name, Password: chUser.Password}})
	if err == nil {
		err = admin.Exec(ctx, "CREATE DATABASE "+db)
	}
	if err != nil {
		return fmt.Errorf("clickhouse at %s (run scripts/devenv.sh up): %w", chAddr, err)
	}
	defer func() { _ = admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db); admin.Close() }()

	fmt.Println()
	fmt.Printf("Baselines (%d callers, %s each, %d-event batches)\n", b.callers, b.duration, batchSize)
	a, err := b.rawGRPC(ctx, ingestSrc, gatewaySrc)
	if err != nil {
		return err
	}
	bb, err := b.rawJetStream(ctx, js)
	if err != nil {
		return err
	}
	c, err := b.rawClickHouse(ctx, chAddr, db+"_raw", admin, chUser)
	if err != nil {
		return err
	}

	fmt.Printf("\nPipeline\n")
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	token, err := authn.Sign(authn.Claims{RegisteredClaims: jwt.RegisteredClaims{Issuer: authn.Issuer, Audience: jwt.ClaimStrings{authn.Audience},
		Subject: "bench", IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}, TenantID: "bench", Role: "admin"}, "k", priv)
	if err != nil {
		return err
	}
	if err := natsjs.EnsureStreams(ctx, js, natsjs.DefaultStream); err != nil {
		return err
	}
	srv := grpcserver.New(grpcserver.WithLogger(slog.New(slog.DiscardHandler)), grpcserver.WithTLS(ingestSrc.ServerConfig()),
		grpcserver.WithVerifier(authn.Verifier{Tokens: authn.NewJWTVerifier(authn.StaticKeys{"k": pub})}))
	ingestv1.RegisterIngestServiceServer(srv.GRPC(), grpcapi.NewServer(ingest.NewService(ingestjs.NewPublisher(js, nil), ingest.DefaultLimits, ingest.RateLimits{PerTenant: 1e9, PerSource: 1e9})))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = srv.Serve(sctx, lis) }()

	chConn, err := clickhouse.Open(ctx, chAddr, db, chUser)
	if err != nil {
		return err
	}
	defer chConn.Close()
	wctx, stopWriter := context.WithCancel(ctx)
	defer stopWriter()
	startWriter := func(ctx context.Context) chan struct{} {
		done := make(chan struct{})
		w := writer.New(js, chConn, writer.DefaultConfig, slog.New(slog.DiscardHandler), nil)
		go func() { _ = w.Run(ctx); close(done) }()
		return done
	}
	// The writer starts only for the steady run: the acked phases measure ingest against
	// baselines (a) and (b), which run alone too; the stream holds their events meanwhile.
	var writerDone chan struct{}

	direct, err := dialIngest(lis.Addr().String(), gatewaySrc)
	if err != nil {
		return err
	}
	defer direct.Close()
	authCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	var accepted int64
	call := func(client ingestv1.IngestServiceClient, run string) func(context.Context, int, int) error {
		return func(_ context.Context, caller, i int) error {
			_, err := client.IngestEvents(authCtx, request(run, caller, i))
			return err
		}
	}
	directClient := ingestv1.NewIngestServiceClient(direct)
	calls, lat8, err := load(ctx, b.callers, b.duration, call(directClient, "d8"))
	if err != nil {
		return fmt.Errorf("direct ingest: %w", err)
	}
	accepted += calls * batchSize
	acked := float64(calls*batchSize) / b.duration.Seconds()
	b.add("(d) ingest direct: events durably acked", acked, "ev/s", "")
	calls, lat1, err := load(ctx, 1, b.duration/2, call(directClient, "d1"))
	if err != nil {
		return fmt.Errorf("direct ingest, 1 caller: %w", err)
	}
	accepted += calls * batchSize
	b.add("(d) 100-event call latency, 1 caller: p50", float64(percentile(lat1, 0.5).Microseconds()), "µs", "")
	b.add("(d) 100-event call latency, 1 caller: p99", float64(percentile(lat1, 0.99).Microseconds()), "µs", "")
	b.add(fmt.Sprintf("(d) 100-event call latency, %d callers: p50", b.callers), float64(percentile(lat8, 0.5).Microseconds()), "µs", "")
	b.add(fmt.Sprintf("(d) 100-event call latency, %d callers: p99", b.callers), float64(percentile(lat8, 0.99).Microseconds()), "µs", "")

	// The gateway: gRPC proxy and REST, on a TLS listener with the edge certificate.
	gwConn, err := grpcclient.Dial(lis.Addr().String(), "ingest", gatewaySrc)
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
	hs := &http.Server{Handler: gw, TLSConfig: edgeSrc.EdgeServerConfig(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.ServeTLS(gl, "", "") }()
	defer hs.Close()
	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	edgeTLS := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	viaGW, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(edgeTLS)))
	if err != nil {
		return err
	}
	defer viaGW.Close()
	calls, _, err = load(ctx, b.callers, b.duration, call(ingestv1.NewIngestServiceClient(viaGW), "g"))
	if err != nil {
		return fmt.Errorf("ingest through the gateway: %w", err)
	}
	accepted += calls * batchSize
	b.add("(d) ingest via gateway gRPC proxy: events durably acked", float64(calls*batchSize)/b.duration.Seconds(), "ev/s", "")

	httpc := &http.Client{Transport: &http.Transport{TLSClientConfig: edgeTLS, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: b.callers}, Timeout: 30 * time.Second}
	url := "https://" + gl.Addr().String() + "/v1/events:batch"
	calls, _, err = load(ctx, b.callers, b.duration, func(_ context.Context, caller, i int) error {
		body, _ := protojson.Marshal(request("r", caller, i))
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
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
	accepted += calls * batchSize
	b.add("(d) REST via gateway: events durably acked", float64(calls*batchSize)/b.duration.Seconds(), "ev/s", "")

	// Landing: a steady run with the writer running.
	progress("starting the writer; waiting for it to land the %d events accepted so far", accepted)
	writerDone = startWriter(wctx)
	before, err := waitLanded(ctx, chConn, uint64(accepted), 120*time.Second)
	if err != nil {
		return err
	}
	progress("steady run: %s of ingest while the writer lands events in ClickHouse", b.steady)
	steadyStart := time.Now()
	calls, _, err = load(ctx, b.callers, b.steady, call(directClient, "s"))
	if err != nil {
		return fmt.Errorf("steady run: %w", err)
	}
	accepted += calls * batchSize
	b.add("(d) ingest direct during the steady run: events durably acked", float64(calls*batchSize)/b.steady.Seconds(), "ev/s", "")
	after, err := countRows(ctx, chConn)
	if err != nil {
		return err
	}
	landedRate := float64(after-before) / time.Since(steadyStart).Seconds()
	b.add("(d) events landed in ClickHouse during the steady run", landedRate, "ev/s", "")
	landed, err := waitLanded(ctx, chConn, uint64(accepted), 60*time.Second)
	if err != nil {
		return err
	}
	b.add("(d) landed / accepted after the run", float64(landed)/float64(accepted)*100, "%", fmt.Sprintf("(%d of %d)", landed, accepted))

	// Drain: stop the writer, build a backlog, start it again.
	stopWriter()
	<-writerDone
	progress("building a backlog for %s with the writer stopped", b.duration)
	calls, _, err = load(ctx, b.callers, b.duration, call(directClient, "b"))
	if err != nil {
		return fmt.Errorf("backlog: %w", err)
	}
	accepted += calls * batchSize
	backlog := calls * batchSize
	drainStart := time.Now()
	wctx2, stopWriter2 := context.WithCancel(ctx)
	defer stopWriter2()
	done2 := startWriter(wctx2)
	if _, err := waitLanded(ctx, chConn, uint64(accepted), 120*time.Second); err != nil {
		stopWriter2()
		return err
	}
	drain := float64(backlog) / time.Since(drainStart).Seconds()
	stopWriter2()
	<-done2
	b.add("(d) writer backlog drain", drain, "ev/s", fmt.Sprintf("(%d events)", backlog))

	fmt.Printf("\nRatios\n")
	ab, abc := serial(a, bb), serial(a, bb, c)
	b.add("composite of (a) and (b) in series", ab, "ev/s", "")
	b.add("acked direct / composite(a,b)", acked/ab*100, "%", "(target ≥ 60%, and acked ≥ 100,000 ev/s)")
	b.add("composite of (a), (b) and (c) in series", abc, "ev/s", "")
	b.add("landed (steady) / composite(a,b,c)", landedRate/abc*100, "%", "(target ≥ 60%)")
	stop()
	return nil
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
	batch := &ingestv1.AcceptedBatch{}
	for _, e := range request("b", 0, 0).GetEvents() {
		batch.Events = append(batch.Events, &ingestv1.AcceptedEvent{Event: e, TenantId: "bench", ReceivedAt: timestamppb.Now(), CorrectedTime: timestamppb.Now()})
	}
	data, _ := proto.Marshal(batch)
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
	rows := make([]clickhouse.Row, 0, writer.DefaultConfig.BatchRows)
	for len(rows) < writer.DefaultConfig.BatchRows {
		for _, e := range request("c", len(rows), 0).GetEvents() {
			rows = append(rows, clickhouse.Row{Event: &ingestv1.AcceptedEvent{Event: e, TenantId: "bench", ReceivedAt: timestamppb.Now(), CorrectedTime: timestamppb.Now()}, Seq: 1})
		}
	}
	calls, _, err := load(ctx, 1, b.duration, func(ctx context.Context, _, _ int) error { return clickhouse.Insert(ctx, conn, rows) })
	if err != nil {
		return 0, fmt.Errorf("raw clickhouse: %w", err)
	}
	r := float64(calls*int64(len(rows))) / b.duration.Seconds()
	b.add("(c) raw ClickHouse insert, 10k-row blocks, 1 inserter", r, "rows/s", "")
	return r, nil
}

func countRows(ctx context.Context, conn ch.Conn) (uint64, error) {
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM events").Scan(&n); err != nil {
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
