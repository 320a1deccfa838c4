package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	auditnats "github.com/campaignmesh/campaignmesh/internal/platform/audit/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
)

// authLog stands for auth's AppendAuditRecords: it keeps what the gateway delivered.
type authLog struct {
	mu   sync.Mutex
	recs []*authv1.AuditRecord
}

func (a *authLog) AppendAuditRecords(_ context.Context, in *authv1.AppendAuditRecordsRequest, _ ...grpc.CallOption) (*authv1.AppendAuditRecordsResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.recs = append(a.recs, in.GetRecords()...)
	return &authv1.AppendAuditRecordsResponse{Appended: int64(len(in.GetRecords()))}, nil
}

func (a *authLog) all() []*authv1.AuditRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*authv1.AuditRecord(nil), a.recs...)
}

// auditedGateway is a gateway whose refusals go through a real audit sink (the audit stream
// of an embedded JetStream) delivered to auth. It returns what auth received and a count of
// the records still in the stream.
func auditedGateway(t *testing.T, cfg Config, backends []Backend) (*Gateway, *authLog, func() uint64) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	nc, err := nats.Connect(natstest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	auth := &authLog{}
	sink, err := auditnats.New(ctx, js, "gateway", auth, slog.New(slog.DiscardHandler), auditnats.DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = sink.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; nc.Close() })
	cfg.Auditor, cfg.Logger = sink, slog.New(slog.DiscardHandler)
	g, err := New(ctx, cfg, backends)
	if err != nil {
		t.Fatal(err)
	}
	stored := func() uint64 { return natstest.StreamMsgs(t, js, auditnats.StreamName) }
	return g, auth, stored
}

func restFrom(g *Gateway, ip, method, path string, body string) int {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r.RemoteAddr = ip + ":40000"
	w := httptest.NewRecorder()
	g.ServeHTTP(w, r)
	return w.Code
}

// Each refusal kind (rate limit, size) of each client address is one anonymous record of the
// platform's chain per rate window, counting the requests refused, over REST and gRPC alike.
func TestRefusalsAreOneRecordPerAddressKindAndWindow(t *testing.T) {
	g, auth, stored := auditedGateway(t, Config{RateLimit: 3, RateWindow: time.Second, MaxBodyBytes: 1024}, startEchoMesh(t).backends)

	limited := 0
	for range 20 {
		if restFrom(g, "10.0.0.1", http.MethodGet, "/healthz", "") == http.StatusTooManyRequests {
			limited++
		}
	}
	for range 2 {
		if code := restFrom(g, "10.0.0.2", http.MethodPost, "/v1/auth/login", strings.Repeat("x", 2048)); code != http.StatusRequestEntityTooLarge {
			t.Fatalf("oversized body: %d, want 413", code)
		}
	}
	// A Segment body over the cap is refused with 400 (SDKs must drop it, not retry) and recorded alike.
	if code := restFrom(g, "10.0.0.3", http.MethodPost, "/v1/batch", strings.Repeat("x", 2048)); code != http.StatusBadRequest {
		t.Fatalf("oversized Segment body: %d, want 400", code)
	}
	// gRPC from the edge's loopback client: one oversized message, then calls over the limit.
	client := grpcEdge(t, g)
	_, err := client.CreateCampaign(context.Background(), &campaignsv1.CreateCampaignRequest{Campaign: &campaignsv1.Campaign{Name: strings.Repeat("x", 2048)}})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized gRPC message: %v", err)
	}
	grpcLimited := 0
	for range 10 {
		if _, err := client.GetCampaign(context.Background(), &campaignsv1.GetCampaignRequest{Id: "c"}); status.Code(err) == codes.ResourceExhausted {
			grpcLimited++
		}
	}
	if limited == 0 || grpcLimited == 0 {
		t.Fatalf("REST refused %d, gRPC %d: the limit did not bite", limited, grpcLimited)
	}

	want := map[string]string{
		MethodRateLimited + " 10.0.0.1":      fmt.Sprintf("%d refused", limited),
		MethodRequestTooLarge + " 10.0.0.2":  "2 refused",
		MethodRequestTooLarge + " 10.0.0.3":  "1 refused",
		MethodRequestTooLarge + " 127.0.0.1": "1 refused",
		MethodRateLimited + " 127.0.0.1":     fmt.Sprintf("%d refused", grpcLimited),
	}
	meshtest.Eventually(t, 15*time.Second, func() bool {
		return len(auth.all()) >= len(want) && stored() == 0
	}, "one record per address and kind")
	g.Stop() // nothing is still being counted: no record is added
	if n := stored(); n != 0 {
		t.Fatalf("stop stored %d more records", n)
	}
	recs := auth.all()
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d: %v", len(recs), len(want), recs)
	}
	for _, r := range recs {
		key := r.GetMethod() + " " + r.GetClientAddress()
		if want[key] == "" || r.GetResource() != want[key] {
			t.Errorf("record %s: resource %q, want %q", key, r.GetResource(), want[key])
		}
		if r.GetTenantId() != "" || r.GetActor() != "" || r.GetActorKind() != "anonymous" || r.GetService() != "gateway" ||
			r.GetOutcome() != "RESOURCE_EXHAUSTED" || r.GetRequestId() == "" {
			t.Errorf("record %s: %v; want an anonymous gateway record of the platform chain with the first refusal's request id", key, r)
		}
		delete(want, key)
	}
}

// A flood from many addresses stays a bounded number of records: addresses past the bound
// share one record.
func TestRefusalsOfAFloodAreBounded(t *testing.T) {
	g, auth, stored := auditedGateway(t, Config{RateLimit: 1, RateWindow: time.Second}, nil)
	const addresses, each = maxRefusalAddresses + 50, 3
	for i := range addresses {
		ip := fmt.Sprintf("10.1.%d.%d", i/256, i%256)
		for j := range 1 + each {
			if code := restFrom(g, ip, http.MethodGet, "/healthz", ""); (j == 0) != (code == http.StatusOK) {
				t.Fatalf("request %d of %s: %d", j, ip, code)
			}
		}
	}
	meshtest.Eventually(t, 15*time.Second, func() bool {
		return len(auth.all()) >= maxRefusalAddresses+1 && stored() == 0
	}, "the flood's records")
	recs := auth.all()
	if len(recs) != maxRefusalAddresses+1 {
		t.Fatalf("%d records for a flood from %d addresses, want %d", len(recs), addresses, maxRefusalAddresses+1)
	}
	shared := 0
	for _, r := range recs {
		switch {
		case r.GetClientAddress() == "":
			shared++
			if want := fmt.Sprintf("%d refused from addresses past the first %d", (addresses-maxRefusalAddresses)*each, maxRefusalAddresses); r.GetResource() != want {
				t.Errorf("shared record: %q, want %q", r.GetResource(), want)
			}
		case r.GetResource() != fmt.Sprintf("%d refused", each):
			t.Errorf("record of %s: %q", r.GetClientAddress(), r.GetResource())
		}
	}
	if shared != 1 {
		t.Fatalf("%d shared records, want 1", shared)
	}
}
