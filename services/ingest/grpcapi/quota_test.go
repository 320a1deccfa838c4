package grpcapi_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/quota"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/ingest/app"
)

// quotaEnv is a real ingest on an embedded JetStream server with billing's QUOTAS bucket.
type quotaEnv struct {
	app       *app.App
	js        jetstream.JetStream
	kv        jetstream.KeyValue
	client    ingestv1.IngestServiceClient // as the gateway, with tenant-1's tokens
	delivery  ingestv1.IngestServiceClient // as the delivery service
	ctx       context.Context              // tenant-1's admin
	resetsAt  time.Time
	idCounter atomic.Int64
}

func newQuotaEnv(t *testing.T) *quotaEnv { return newQuotaEnvWith(t, natsjs.DefaultStream) }

func newQuotaEnvWith(t *testing.T, stream natsjs.StreamConfig) *quotaEnv {
	t.Helper()
	ns := natstest.StartServer(t)
	nc, js, err := natsjs.Connect(ns.ClientURL(), "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	kv, err := quota.OpenBucket(context.Background(), js)
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	ca := mtlstest.NewCA(t)
	a := servicetest.StartIngest(t, servicetest.IngestOptions{CA: ca, NATS: ns,
		Verifier: authn.Verifier{Tokens: authn.NewJWTVerifier(authn.StaticKeys{"k": pub})},
		Config:   func(c *app.Config) { c.Stream = stream }})
	dial := func(service string) ingestv1.IngestServiceClient {
		conn, err := grpc.NewClient(a.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(mtlstest.Source(t, ca, service).ClientConfig("ingest"))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return ingestv1.NewIngestServiceClient(conn)
	}
	now := time.Now()
	tok, err := authn.Sign(authn.Claims{RegisteredClaims: jwt.RegisteredClaims{Issuer: authn.Issuer, Audience: jwt.ClaimStrings{authn.Audience},
		Subject: "user-1", IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(10 * time.Minute))}, TenantID: "tenant-1", Role: "admin"}, "k", priv)
	if err != nil {
		t.Fatal(err)
	}
	return &quotaEnv{app: a, js: js, kv: kv, client: dial("gateway"), delivery: dial("delivery"), ctx: as(tok), resetsAt: quota.PeriodEnd(quota.Day, now)}
}

// publish puts tenant-1's quotas (as of now) and waits until ingest applies them.
func (e *quotaEnv) publish(t *testing.T, qs ...quota.Quota) {
	t.Helper()
	for i := range qs {
		qs[i].ResetsAt = quota.PeriodEnd(qs[i].Period, time.Now())
	}
	asOf := time.Now()
	if err := quota.Publish(context.Background(), e.kv, "tenant-1", quota.Snapshot{AsOf: asOf, Quotas: qs}); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 10*time.Second, func() bool {
		s, ok := e.app.Quotas().Snapshot("tenant-1")
		return ok && s.AsOf.Equal(asOf)
	}, "ingest did not apply the published quotas")
}

// send ingests n new events of tenant-1.
func (e *quotaEnv) send(n int) (*ingestv1.IngestEventsResponse, error) {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("q%d", e.idCounter.Add(1))
	}
	return e.client.IngestEvents(e.ctx, &ingestv1.IngestEventsRequest{Events: events(ids...)})
}

// storedEvents counts the events in the event stream (a message may hold several batches).
func storedEvents(t *testing.T, js jetstream.JetStream) int {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, natsjs.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		b, err := natsjs.DecodeBatch(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		n += len(b.GetEvents())
	}
	return n
}

// exceeded returns the value of campaignmesh_quota_exceeded_total{meter="events_accepted",kind}
// on ingest's /metrics.
func (e *quotaEnv) exceeded(t *testing.T, kind string) string {
	t.Helper()
	resp, err := http.Get("http://" + e.app.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	prefix := `campaignmesh_quota_exceeded_total{kind="` + kind + `",meter="events_accepted"} `
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			return v
		}
	}
	return "0"
}

// With a hard quota of L events a day, L events are accepted (whatever the request sizes), the
// next request is refused whole with the documented answer, nothing of it is stored, and the
// delivery service's reports of the tenant's events are still taken (counted, never refused).
func TestHardEventsQuota(t *testing.T) {
	e := newQuotaEnv(t)
	e.publish(t, quota.Quota{Meter: quota.EventsAccepted, Limit: 10, Hard: true, Period: quota.Day, Used: 4})
	for _, n := range []int{3, 2, 1} {
		if resp, err := e.send(n); err != nil || resp.GetAccepted() != int32(n) || len(resp.GetQuotaWarnings()) != 0 {
			t.Fatalf("%d events within the quota: %v, %v", n, resp, err)
		}
	}
	before := storedEvents(t, e.js)
	_, err := e.send(1)
	st := status.Convert(err)
	resets := e.resetsAt.UTC().Format(time.RFC3339)
	if st.Code() != codes.ResourceExhausted || st.Message() != "quota events_accepted exceeded: 10 per day, resets at "+resets {
		t.Fatalf("the 11th event: %v", err)
	}
	var info *errdetails.ErrorInfo
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			info = d
		case *errdetails.RetryInfo:
			retry = d
		}
	}
	md := info.GetMetadata()
	if info.GetReason() != "QUOTA_EXCEEDED" || info.GetDomain() != apperr.Domain || md["quota"] != "events_accepted" || md["limit"] != "10" ||
		md["period"] != "day" || md["resets_at"] != resets {
		t.Fatalf("error info %v", info)
	}
	if d := retry.GetRetryDelay().AsDuration(); d <= 0 || d > time.Until(e.resetsAt)+time.Second {
		t.Fatalf("retry info %v, want until %s", retry, resets)
	}
	if n := storedEvents(t, e.js); n != before {
		t.Fatalf("a refused request stored %d events", n-before)
	}
	if got := e.exceeded(t, "hard"); got != "1" {
		t.Fatalf("hard refusals counted %s, want 1", got)
	}
	// The streaming RPC goes through the same check: the stream ends with the refusal.
	stream, err := e.client.StreamEvents(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&ingestv1.StreamEventsRequest{Batch: 1, Events: events("s1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("streamed batch over the quota: %v", err)
	}
	// The platform's own reports of the tenant's events are taken over the quota.
	resp, err := e.delivery.IngestTenantEvents(context.Background(), &ingestv1.IngestTenantEventsRequest{TenantId: "tenant-1", Events: events("click:1")})
	if err != nil || resp.GetAccepted() != 1 {
		t.Fatalf("delivery's report over the quota: %v, %v", resp, err)
	}
	// A plan change that raises the limit lets events through again at once.
	e.publish(t, quota.Quota{Meter: quota.EventsAccepted, Limit: 100, Hard: true, Period: quota.Day, Used: 11})
	if _, err := e.send(5); err != nil {
		t.Fatalf("after the limit was raised: %v", err)
	}
}

// Delivery's reports count against the quota: the tenant's own events are refused once they
// and the reports together reach it.
func TestReportsOnBehalfCountAgainstTheQuota(t *testing.T) {
	e := newQuotaEnv(t)
	e.publish(t, quota.Quota{Meter: quota.EventsAccepted, Limit: 3, Hard: true, Period: quota.Day})
	if _, err := e.delivery.IngestTenantEvents(context.Background(), &ingestv1.IngestTenantEventsRequest{TenantId: "tenant-1",
		Events: events("open:1", "open:2")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.send(2); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("2 events over 2 reported of 3: %v", err)
	}
	if _, err := e.send(1); err != nil {
		t.Fatalf("the last event of the quota: %v", err)
	}
}

// A soft quota warns in the answer (unary and streaming) and in the metric; the events are stored.
func TestSoftEventsQuotaWarns(t *testing.T) {
	e := newQuotaEnv(t)
	e.publish(t, quota.Quota{Meter: quota.EventsAccepted, Limit: 5, Period: quota.Month, Used: 4})
	if resp, err := e.send(1); err != nil || len(resp.GetQuotaWarnings()) != 0 {
		t.Fatalf("within the soft quota: %v, %v", resp, err)
	}
	resp, err := e.send(2)
	if err != nil || resp.GetAccepted() != 2 || len(resp.GetQuotaWarnings()) != 1 {
		t.Fatalf("past the soft quota: %v, %v", resp, err)
	}
	w := resp.GetQuotaWarnings()[0]
	if w.GetQuota() != "events_accepted" || w.GetUsed() != 7 || w.GetLimit() != 5 || w.GetPeriod() != "month" ||
		!w.GetResetsAt().AsTime().Equal(quota.PeriodEnd(quota.Month, time.Now())) {
		t.Fatalf("warning %v", w)
	}
	stream, err := e.client.StreamEvents(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&ingestv1.StreamEventsRequest{Batch: 1, Events: events("s1")}); err != nil {
		t.Fatal(err)
	}
	if ack, err := stream.Recv(); err != nil || ack.GetAccepted() != 1 || len(ack.GetQuotaWarnings()) != 1 || ack.GetQuotaWarnings()[0].GetUsed() != 8 {
		t.Fatalf("streamed ack past the soft quota: %v, %v", ack, err)
	}
	if got := e.exceeded(t, "soft"); got != "2" {
		t.Fatalf("soft warnings counted %s, want 2", got)
	}
}

// Many parallel requests on one instance never take the tenant past a hard quota.
func TestParallelRequestsNeverPassTheHardQuota(t *testing.T) {
	e := newQuotaEnv(t)
	const limit, requests = 20, 60
	e.publish(t, quota.Quota{Meter: quota.EventsAccepted, Limit: limit, Hard: true, Period: quota.Day})
	before := storedEvents(t, e.js)
	var accepted, refused atomic.Int64
	var wg sync.WaitGroup
	for range requests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := e.send(1)
			switch {
			case err == nil && resp.GetAccepted() == 1:
				accepted.Add(1)
			case status.Code(err) == codes.ResourceExhausted:
				refused.Add(1)
			default:
				t.Errorf("unexpected answer %v, %v", resp, err)
			}
		}()
	}
	wg.Wait()
	if accepted.Load() != limit || refused.Load() != requests-limit {
		t.Fatalf("%d accepted, %d refused; want %d and %d", accepted.Load(), refused.Load(), limit, requests-limit)
	}
	if n := storedEvents(t, e.js) - before; n != limit {
		t.Fatalf("stream holds %d new events, want %d", n, limit)
	}
}

// A request whose events the stream refuses (full) uses none of the quota: the reservation is
// released, so the quota's remaining units are exactly the limit less the events stored.
func TestRefusedPublishUsesNoQuota(t *testing.T) {
	tiny := natsjs.DefaultStream
	tiny.MaxBytes = 64 << 10
	e := newQuotaEnvWith(t, tiny)
	const limit = 1_000_000
	e.publish(t, quota.Quota{Meter: quota.EventsAccepted, Limit: limit, Hard: true, Period: quota.Day})
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = e.send(100)
	}
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "full") {
		t.Fatalf("with the stream full: %v", err)
	}
	stored := int64(storedEvents(t, e.js))
	if d := e.app.Quotas().Check("tenant-1", quota.EventsAccepted, limit-stored, time.Now()); !d.Allow {
		t.Fatalf("%d events stored, but the quota counts %d", stored, d.Hard.Used)
	}
	if d := e.app.Quotas().Check("tenant-1", quota.EventsAccepted, limit-stored+1, time.Now()); d.Allow {
		t.Fatalf("the %d stored events are not all counted", stored)
	}
}
