package grpcapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/campaignmesh/campaignmesh/gateway"
	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/ingest/app"
)

// writeKey is a browser write key: an API key of tenant-1 whose only scope is events.write.
const writeKey = authn.APIKeyPrefix + "writeonly"

// writeKeys stands in for auth's API key verification (the part under test is ingest's access
// rule): writeKey is tenant-1's events.write-only key, every other key is unknown.
type writeKeys struct{}

func (writeKeys) VerifyAPIKey(_ context.Context, secret string) (*authn.Principal, error) {
	if secret != writeKey {
		return nil, errors.New("unknown api key")
	}
	return &authn.Principal{TenantID: "tenant-1", Subject: "key-1", Permissions: []string{rbac.EventsWrite}, Kind: authn.KindAPIKey}, nil
}

// asKey is the outgoing context of a call with API key k.
func asKey(k string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+k)
}

// tail opens a tail as ctx and collects what it receives until the test ends.
func tail(t *testing.T, e *privacyEnv, ctx context.Context) <-chan *ingestv1.TailEventsResponse {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	stream, err := e.client.TailEvents(ctx, &ingestv1.TailEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// The server sends the headers once the tail is registered: events sent after this are seen.
	if _, err := stream.Header(); err != nil {
		t.Fatal(err)
	}
	out := make(chan *ingestv1.TailEventsResponse, 10000)
	go func() {
		defer close(out)
		for {
			r, err := stream.Recv()
			if err != nil {
				return
			}
			out <- r
		}
	}()
	return out
}

// next waits for the next outcome of c.
func next(t *testing.T, c <-chan *ingestv1.TailEventsResponse) *ingestv1.TailEventsResponse {
	t.Helper()
	select {
	case r, ok := <-c:
		if !ok {
			t.Fatal("tail ended")
		}
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no outcome within 10s")
	}
	return nil
}

// A tail of a tenant sees every outcome of that tenant's requests, and only those: rejected
// events with field and reason and no values, suppressed events by id only, accepted events as
// stored (after the privacy policy), each with its sender; another tenant's events never show.
func TestTailSeesItsTenantsOutcomes(t *testing.T) {
	e := newPrivacyEnv(t)
	if err := privacy.PutSuppression(context.Background(), e.kv, "tenant-1", e.hasher.SubjectHash("tenant-1", "gone"), "dsr_1"); err != nil {
		t.Fatal(err)
	}
	sender := as(e.tokenOf("tenant-1"))
	meshtest.Eventually(t, 5*time.Second, func() bool {
		resp, err := e.client.IngestEvents(sender, &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{click("probe", "gone", "")}})
		return err == nil && resp.GetSuppressed() == 1
	}, "the suppression of %q never applied", "gone")
	outs := tail(t, e, as(e.tokenOf("tenant-1")))

	if _, err := e.client.IngestEvents(as(e.tokenOf("tenant-2")), &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{click("other-tenant", "u", "")}}); err != nil {
		t.Fatal(err)
	}
	bad := click("bad", "", "")
	bad.Properties = &structpb.Struct{Fields: map[string]*structpb.Value{"secret": structpb.NewStringValue("s3cr3t-value")}}
	resp, err := e.client.IngestEvents(sender, &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{bad, click("gone-1", "gone", ""), click("ok-1", "u1", "")}})
	if err != nil || resp.GetAccepted() != 1 || resp.GetSuppressed() != 1 || len(resp.GetRejected()) != 1 {
		t.Fatalf("ingest: %v, %v", resp, err)
	}

	seen := map[ingestv1.EventOutcome]*ingestv1.TailEventsResponse{}
	for len(seen) < 3 {
		r := next(t, outs)
		if r.GetEventId() == "other-tenant" {
			t.Fatalf("tenant-1's tail saw tenant-2's event: %v", r)
		}
		if r.GetSource() != "user-1" || r.GetTime() == nil {
			t.Errorf("outcome without its sender or time: %v", r)
		}
		seen[r.GetOutcome()] = r
	}
	if r := seen[ingestv1.EventOutcome_EVENT_OUTCOME_REJECTED]; r.GetEventId() != "bad" || r.GetRejection().GetField() == "" || r.GetRejection().GetReason() == "" || r.GetEvent() != nil {
		t.Errorf("rejected: %v", r)
	}
	if r := seen[ingestv1.EventOutcome_EVENT_OUTCOME_SUPPRESSED]; r.GetEventId() != "gone-1" || r.GetEvent() != nil || r.GetRejection() != nil {
		t.Errorf("suppressed (only its id may show): %v", r)
	}
	if r := seen[ingestv1.EventOutcome_EVENT_OUTCOME_ACCEPTED]; r.GetEventId() != "ok-1" || r.GetEvent().GetUserId() != "u1" {
		t.Errorf("accepted: %v", r)
	}
	for _, r := range seen {
		if containsValue(r, "s3cr3t-value") {
			t.Errorf("a rejected event's property value reached the tail: %v", r)
		}
	}
}

func containsValue(r *ingestv1.TailEventsResponse, v string) bool {
	return r.GetOutcome() != ingestv1.EventOutcome_EVENT_OUTCOME_ACCEPTED && strings.Contains(prototext.Format(r), v)
}

// Outcomes over a tail's rate are dropped, never waited for: ingest answers every request,
// and the tail is told how many it missed before the next outcome it receives.
func TestTailDropsOverItsRateWithAMarker(t *testing.T) {
	e := newPrivacyEnvOn(t, natstest.StartServer(t), func(c *app.Config) { c.Tails.PerSecond = 2 })
	outs := tail(t, e, as(e.tokenOf("tenant-1")))
	sender := as(e.tokenOf("tenant-1"))
	var batch []*ingestv1.Event
	for i := range 50 {
		batch = append(batch, click(fmt.Sprintf("e-%d", i), "u", ""))
	}
	if _, err := e.client.IngestEvents(sender, &ingestv1.IngestEventsRequest{Events: batch}); err != nil {
		t.Fatal(err)
	}
	// The next second's outcome comes after a marker counting the 48 dropped.
	meshtest.Eventually(t, 10*time.Second, func() bool {
		_, err := e.client.IngestEvents(sender, &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{click("later", "u", "")}})
		return err == nil && len(outs) >= 3
	}, "fewer than 3 outcomes reached the tail: %d", len(outs))
	got := []*ingestv1.TailEventsResponse{next(t, outs), next(t, outs), next(t, outs)}
	if got[0].GetOutcome() != ingestv1.EventOutcome_EVENT_OUTCOME_ACCEPTED || got[1].GetOutcome() != ingestv1.EventOutcome_EVENT_OUTCOME_ACCEPTED {
		t.Fatalf("first two: %v", got[:2])
	}
	if got[2].GetOutcome() != ingestv1.EventOutcome_EVENT_OUTCOME_DROPPED || got[2].GetDropped() < 48 {
		t.Fatalf("third: %v, want a DROPPED marker of at least 48", got[2])
	}
}

// Tailing reads a tenant's events: a write key (events.write only) and an analyst cannot; and
// the tails of a tenant are bounded.
func TestTailAccess(t *testing.T) {
	e := newPrivacyEnvOn(t, natstest.StartServer(t), func(c *app.Config) { c.Tails.PerTenant = 1 })
	for name, ctx := range map[string]context.Context{"write key": asKey(writeKey), "analyst": as(e.tokenAs("tenant-1", "analyst"))} {
		stream, err := e.client.TailEvents(ctx, &ingestv1.TailEventsRequest{})
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: %v, want PermissionDenied", name, err)
		}
	}
	// The write key still sends.
	if _, err := e.client.IngestEvents(asKey(writeKey), &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{click("k-1", "u", "")}}); err != nil {
		t.Fatalf("write key ingest: %v", err)
	}
	tail(t, e, as(e.tokenOf("tenant-1")))
	stream, err := e.client.TailEvents(as(e.tokenOf("tenant-1")), &ingestv1.TailEventsRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.ResourceExhausted || errors.Is(err, io.EOF) {
		t.Errorf("second tail of a tenant allowed one: %v, want ResourceExhausted", err)
	}
}

// With several ingest instances, a tail opened on one sees the events sent to any of them.
func TestTailAcrossInstances(t *testing.T) {
	ns := natstest.StartServer(t)
	a, b := newPrivacyEnvOn(t, ns), newPrivacyEnvOn(t, ns)
	outs := tail(t, a, as(a.tokenOf("tenant-1")))
	for _, via := range []*privacyEnv{b, a} {
		n, id := 0, ""
		// b hears of the tail through the bucket's watch: until then it publishes nothing.
		meshtest.Eventually(t, 10*time.Second, func() bool {
			n++
			id = fmt.Sprintf("%p-%d", via, n)
			_, err := via.client.IngestEvents(as(via.tokenOf("tenant-1")), &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{click(id, "u", "")}})
			return err == nil && len(outs) > 0
		}, "no outcome of an event sent to the other instance reached the tail")
		for r := next(t, outs); r.GetEventId() != id; r = next(t, outs) {
			if r.GetOutcome() != ingestv1.EventOutcome_EVENT_OUTCOME_ACCEPTED {
				t.Fatalf("outcome %v", r)
			}
		}
	}
}

// While nobody tails a tenant, ingest publishes nothing of its events on debug.events.>; a
// tail of another tenant changes nothing for it.
func TestNoTailNoPublish(t *testing.T) {
	e := newPrivacyEnv(t)
	got := make(chan string, 1000)
	sub, err := e.nc.Subscribe("debug.events.>", func(m *nats.Msg) { got <- m.Subject })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	send := func(tenant, id string) {
		t.Helper()
		bad := click("bad-"+id, "", "")
		if _, err := e.client.IngestEvents(as(e.tokenOf(tenant)), &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{click(id, "u", ""), bad}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		send("tenant-1", fmt.Sprintf("untailed-%d", i))
	}
	tail(t, e, as(e.tokenOf("tenant-2")))
	send("tenant-1", "still-untailed")
	send("tenant-2", "tailed")
	// Ingest's messages reach the subscriber in the order ingest published them: the first one
	// must be tenant-2's.
	select {
	case s := <-got:
		if s != "debug.events.tenant-2" {
			t.Fatalf("published on %s while nobody tailed it", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the tailed tenant's outcomes were never published")
	}
}

// Through the gateway's REST mapping a tail is newline-delimited JSON, one outcome a line.
func TestGatewayRESTTail(t *testing.T) {
	e := newPrivacyEnv(t)
	conn, err := grpcclient.Dial(e.ingest.Addr(), "ingest", mtlstest.Source(t, e.ca, "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	gw, err := gateway.New(context.Background(), gateway.Config{RateLimit: 1 << 20, Logger: slog.New(slog.DiscardHandler)},
		[]gateway.Backend{{Package: "campaignmesh.ingest.v1", Conn: conn, RegisterREST: ingestv1.RegisterIngestServiceHandler}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	lines := make(chan string, 1000)
	statusCodes := make(chan int, 1)
	go func() {
		defer close(lines)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/events:tail", nil)
		req.Header.Set("Authorization", "Bearer "+e.tokenOf("tenant-1"))
		resp, err := srv.Client().Do(req)
		if err != nil {
			return
		}
		defer resp.Body.Close()
		statusCodes <- resp.StatusCode
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	n := 0
	meshtest.Eventually(t, 10*time.Second, func() bool {
		n++
		_, err := e.client.IngestEvents(as(e.tokenOf("tenant-1")), &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{click(fmt.Sprintf("rest-%d", n), "u", "")}})
		return err == nil && len(lines) > 0
	}, "no NDJSON line reached the REST tail")
	if code := <-statusCodes; code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	var line struct {
		Result struct {
			Outcome, EventID, Source string
		}
	}
	raw := <-lines
	if err := json.Unmarshal([]byte(raw), &line); err != nil || line.Result.Outcome != "EVENT_OUTCOME_ACCEPTED" || !strings.HasPrefix(line.Result.EventID, "rest-") || line.Result.Source != "user-1" {
		t.Fatalf("line %s (%v)", raw, err)
	}
}

// until reads c up to and including the outcome of event id.
func until(t *testing.T, c <-chan *ingestv1.TailEventsResponse, id string) []*ingestv1.TailEventsResponse {
	t.Helper()
	var out []*ingestv1.TailEventsResponse
	for {
		r := next(t, c)
		out = append(out, r)
		if r.GetEventId() == id {
			return out
		}
	}
}

func outcomeIDs(outs []*ingestv1.TailEventsResponse) string {
	ids := make([]string, len(outs))
	for i, o := range outs {
		ids[i] = strings.TrimPrefix(o.GetOutcome().String(), "EVENT_OUTCOME_") + ":" + o.GetEventId()
	}
	return strings.Join(ids, " ")
}

// A tail starts with the tenant's recent outcomes, oldest first, the accepted events exactly as
// stored in the stream (after the tenant's policy), then goes on with the live ones, none twice.
func TestTailStartsWithRecentOutcomes(t *testing.T) {
	e := newPrivacyEnv(t)
	pol := privacy.Policy{Version: 1, PropertyRules: map[string]privacy.Action{"email": privacy.ActionHash, "address": privacy.ActionDrop}, IP: privacy.IPTruncate}
	if err := privacy.PutPolicy(context.Background(), e.kv, "tenant-1", pol); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 5*time.Second, func() bool { return e.ingest.Privacy().Policy("tenant-1").Version == 1 }, "the policy did not reach ingest")
	sender := as(e.tokenOf("tenant-1"))
	withPII := click("ok-1", "u1", "")
	withPII.Properties, _ = structpb.NewStruct(map[string]any{"email": "raw@example.com", "address": "1 Raw Street", "plan": "pro"})
	withPII.Context = &ingestv1.EventContext{Ip: "203.0.113.77"}
	for _, batch := range [][]*ingestv1.Event{{withPII}, {click("bad", "", ""), click("ok-2", "u2", "")}, {click("ok-3", "", "a3")}} {
		if _, err := e.client.IngestEvents(sender, &ingestv1.IngestEventsRequest{Events: batch}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.client.IngestEvents(as(e.tokenOf("tenant-2")), &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{click("other", "u", "")}}); err != nil {
		t.Fatal(err)
	}
	outs := tail(t, e, as(e.tokenOf("tenant-1")))
	start := until(t, outs, "ok-3")
	if got := outcomeIDs(start); got != "ACCEPTED:ok-1 REJECTED:bad ACCEPTED:ok-2 ACCEPTED:ok-3" {
		t.Fatalf("the tail starts with %s", got)
	}
	stored := map[string]*ingestv1.Event{}
	for _, a := range e.stored(t) {
		stored[a.GetEvent().GetEventId()] = a.GetEvent()
	}
	for _, o := range start {
		if o.GetOutcome() == ingestv1.EventOutcome_EVENT_OUTCOME_ACCEPTED && !proto.Equal(o.GetEvent(), stored[o.GetEventId()]) {
			t.Errorf("recent %v is not the event as stored: %v", o.GetEvent(), stored[o.GetEventId()])
		}
		if text := prototext.Format(o); strings.Contains(text, "raw@example.com") || strings.Contains(text, "Raw Street") || strings.Contains(text, "203.0.113.77") {
			t.Errorf("a raw value the policy hashes or drops reached the tail: %v", o)
		}
		if o.GetSource() != "user-1" || o.GetTime() == nil {
			t.Errorf("recent outcome without its sender or time: %v", o)
		}
	}
	if _, err := e.client.IngestEvents(sender, &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{click("live-1", "u", "")}}); err != nil {
		t.Fatal(err)
	}
	if r := next(t, outs); r.GetEventId() != "live-1" {
		t.Fatalf("after the recent outcomes came %v, want live-1", r)
	}
}

// With several ingest instances, a tail opened on one starts with the recent outcomes of all of
// them, merged by time.
func TestTailStartsWithRecentOutcomesOfEveryInstance(t *testing.T) {
	ns := natstest.StartServer(t)
	// Room for the other instance's answer on a busy machine (the default is 250 ms).
	a, b := newPrivacyEnvOn(t, ns, func(c *app.Config) { c.Tails.HistoryWait = 2 * time.Second }), newPrivacyEnvOn(t, ns)
	for _, via := range []struct {
		env *privacyEnv
		id  string
	}{{b, "via-b-1"}, {a, "via-a"}, {b, "via-b-2"}} {
		if _, err := via.env.client.IngestEvents(as(via.env.tokenOf("tenant-1")), &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{click(via.id, "u", "")}}); err != nil {
			t.Fatal(err)
		}
	}
	outs := tail(t, a, as(a.tokenOf("tenant-1")))
	if got := outcomeIDs(until(t, outs, "via-b-2")); got != "ACCEPTED:via-b-1 ACCEPTED:via-a ACCEPTED:via-b-2" {
		t.Fatalf("the tail starts with %s", got)
	}
}

// A tail leaves out of its start the accepted events of a subject suppressed since they were
// sent; events suppressed when sent show by id only.
func TestTailStartLeavesOutSubjectsSuppressedSince(t *testing.T) {
	e := newPrivacyEnv(t)
	sender := as(e.tokenOf("tenant-1"))
	if _, err := e.client.IngestEvents(sender, &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{click("gone-1", "later-gone", ""), click("kept-1", "stays", "")}}); err != nil {
		t.Fatal(err)
	}
	if err := privacy.PutSuppression(context.Background(), e.kv, "tenant-1", e.hasher.SubjectHash("tenant-1", "later-gone"), "dsr_1"); err != nil {
		t.Fatal(err)
	}
	probe := ""
	meshtest.Eventually(t, 5*time.Second, func() bool {
		probe = fmt.Sprintf("probe-%d", time.Now().UnixNano())
		resp, err := e.client.IngestEvents(sender, &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{click(probe, "later-gone", "")}})
		return err == nil && resp.GetSuppressed() == 1
	}, "the suppression never applied")
	outs := tail(t, e, as(e.tokenOf("tenant-1")))
	start := until(t, outs, probe)
	kept := false
	for _, o := range start {
		switch {
		case o.GetOutcome() == ingestv1.EventOutcome_EVENT_OUTCOME_ACCEPTED && o.GetEvent().GetUserId() == "later-gone":
			t.Errorf("the tail starts with an event of a subject suppressed since: %v", o)
		case o.GetOutcome() == ingestv1.EventOutcome_EVENT_OUTCOME_SUPPRESSED && (o.GetEvent() != nil || o.GetRejection() != nil):
			t.Errorf("a suppressed event shows more than its id: %v", o)
		case o.GetEventId() == "kept-1":
			kept = true
		}
	}
	if !kept {
		t.Errorf("the tail starts without the event of a subject not suppressed: %s", outcomeIDs(start))
	}
}
