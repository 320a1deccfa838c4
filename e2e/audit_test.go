package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	auditnats "github.com/campaignmesh/campaignmesh/internal/platform/audit/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
)

// Every refused credential, in every service, is one record in the tenant's chain — exactly
// once, also when auth is down when the refusal happens: an API key lacking a scope is refused
// by ingest and by analytics before and while auth is killed; once auth is back, the tenant's
// chain holds one record per refused call (found by request id), from the service that refused
// it, and verifies.
func TestRefusedCredentialsAreAuditedThroughAnAuthOutage(t *testing.T) {
	t.Parallel()
	m := startMesh(t)
	_, login, _ := m.rest(t, "POST", "/v1/auth/login", "", m.bootstrapFile(t, "admin.json"))
	token, _ := login["accessToken"].(string)
	code, created, _ := m.rest(t, "POST", "/v1/apikeys", token, map[string]any{"name": "narrow", "scopes": []string{"users.read"}})
	key, _ := created["secret"].(string)
	apiKey, _ := created["apiKey"].(map[string]any)
	keyID, _ := apiKey["id"].(string)
	if code != 200 || key == "" || keyID == "" {
		t.Fatalf("create API key: %d %v", code, created)
	}

	refused := map[string]string{} // request id → the service that refused it
	refuse := func(phase string) {
		t.Helper()
		for _, call := range []struct{ service, method, path string }{
			{"ingest", "POST", "/v1/events:batch"},
			{"analytics", "GET", "/v1/analytics/summary?campaignIds=launch"},
		} {
			id := fmt.Sprintf("refused-%s-%s", call.service, phase)
			var body any
			if call.method == "POST" {
				body = map[string]any{"events": []map[string]any{{"eventId": "e1", "type": "EVENT_TYPE_CLICK", "userId": "u1"}}}
			}
			if code, resp, _ := m.rest(t, call.method, call.path, key, body, "X-Request-Id", id); code != http.StatusForbidden {
				t.Fatalf("%s (%s) with a key lacking its scope: %d %v, want 403", call.service, phase, code, resp)
			}
			refused[id] = call.service
		}
	}
	refuse("auth-up") // the services now also hold the key's verification for a while

	m.procs["auth"].kill9()
	refuse("auth-down-1")
	refuse("auth-down-2")
	m.procs["auth"].start()
	waitFor(t, "auth back", 30*time.Second, func() bool { return httpOK("http://" + m.authAdmin + "/healthz") })

	records := func() map[string][]map[string]any {
		byRequest := map[string][]map[string]any{}
		q := url.Values{"actor": {keyID}, "outcome": {"PERMISSION_DENIED"}, "pageSize": {"1000"}}
		code, page, _ := m.rest(t, "GET", "/v1/audit/records?"+q.Encode(), token, nil)
		if code != http.StatusOK {
			return nil
		}
		recs, _ := page["records"].([]any)
		for _, r := range recs {
			rec, _ := r.(map[string]any)
			id, _ := rec["requestId"].(string)
			byRequest[id] = append(byRequest[id], rec)
		}
		return byRequest
	}
	meshtest.Eventually(t, 60*time.Second, func() bool {
		got := records()
		missing := map[string]string{}
		for id, svc := range refused {
			if len(got[id]) == 0 {
				missing[id] = svc
			}
		}
		return len(missing) == 0
	}, "the records of the refused calls %v did not all reach the tenant's chain", refused)
	// Nothing is left to deliver, so no duplicate can still arrive.
	for _, svc := range []string{"ingest", "analytics"} {
		if n := auditPending(t, m, svc); n != 0 {
			t.Fatalf("%s still has %d audit records to deliver", svc, n)
		}
	}
	got := records()
	for id, svc := range refused {
		recs := got[id]
		if len(recs) != 1 {
			t.Fatalf("request %s has %d records, want exactly 1: %v", id, len(recs), recs)
		}
		if r := recs[0]; r["service"] != svc || r["actorKind"] != "api_key" || r["outcome"] != "PERMISSION_DENIED" {
			t.Errorf("record of %s: %v; want service %s, actor kind api_key, PERMISSION_DENIED", id, r, svc)
		}
	}
	if len(got) != len(refused) {
		t.Errorf("the key's refusals are %d records, want %d (one per refused call): %v", len(got), len(refused), got)
	}
	if code, chain, _ := m.rest(t, "POST", "/v1/audit:verify", token, map[string]any{}); code != 200 || chain["ok"] != true {
		t.Fatalf("audit chain: %d %v", code, chain)
	}
}

// auditPending counts the records service stored in the audit stream and has not delivered.
func auditPending(t *testing.T, m *mesh, service string) uint64 {
	t.Helper()
	nc, err := nats.Connect(m.natsURL, nats.UserInfo(m.natsAdmin.Name, m.natsAdmin.Password))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return natstest.ConsumerPending(t, js, auditnats.StreamName, auditnats.ConsumerName(service))
}
