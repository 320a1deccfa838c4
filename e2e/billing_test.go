package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestBilling is issue 18 end to end, with real processes over mTLS: an operator maps the
// tenant to a Stripe customer; events (some resent by the client) and analytics queries run
// while the analytics writer and billing are each killed with SIGKILL and restarted; the day's
// usage then equals independent counts (ClickHouse for the events stored, the events the test
// had acknowledged, the queries it ran); every meter event reaches the Stripe stand-in once
// despite injected 5xx answers, and reconciliation finds nothing to explain; a webhook with a
// bad signature is refused and a repeated one acted on once; and a hard quota refuses the next
// event with the quota's answer.
func TestBilling(t *testing.T) {
	t.Parallel()
	m := startMeshWith(t, meshConfig{splitWriter: true, providers: true})
	_, login, _ := m.rest(t, "POST", "/v1/auth/login", "", m.bootstrapFile(t, "admin.json"))
	token, _ := login["accessToken"].(string)
	_, who, _ := m.rest(t, "GET", "/v1/auth/whoami", token, nil)
	tenant, _ := who["tenantId"].(string)
	_, opLogin, _ := m.rest(t, "POST", "/v1/auth/login", "", m.bootstrapFile(t, "operator.json"))
	op, _ := opLogin["accessToken"].(string)
	if tenant == "" || token == "" || op == "" {
		t.Fatalf("logins: tenant %q", tenant)
	}
	if code, acct, _ := m.rest(t, "PUT", "/v1/billing/accounts/"+tenant, op, map[string]any{"stripeCustomerId": "cus_e2e"}); code != 200 {
		t.Fatalf("map the tenant to a Stripe customer: %d %v", code, acct)
	}
	// The stand-in fails the first meter events: twice before accepting, once after.
	standin := func(method, path string, body any) {
		t.Helper()
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(method, m.stripe+path, bytes.NewReader(b))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			t.Fatalf("stand-in %s %s: %d", method, path, resp.StatusCode)
		}
	}
	standin("POST", "/faults", map[string]any{"fault": "500", "count": 2})
	standin("POST", "/faults", map[string]any{"fault": "500-after-send", "count": 1})

	// 20 batches of 25 events; 3 of them sent twice (a client's retries: acknowledged again,
	// but the same batch for the event stream, so counted once). The writer is killed after the
	// 8th batch, billing after the 14th; both come back after the 17th.
	accepted := 0
	send := func(i int, retry bool) {
		t.Helper()
		var events []map[string]any
		for j := range 25 {
			events = append(events, map[string]any{"eventId": fmt.Sprintf("b%d-e%d", i, j), "type": "EVENT_TYPE_CLICK",
				"userId": fmt.Sprintf("u%d", j), "campaignId": "spring"})
		}
		code, resp, _ := m.rest(t, "POST", "/v1/events:batch", token, map[string]any{"events": events})
		if code != 200 || fmt.Sprint(resp["accepted"]) != "25" {
			t.Fatalf("batch %d: %d %v", i, code, resp)
		}
		if !retry {
			accepted += 25
		}
	}
	for i := range 20 {
		send(i, false)
		switch i {
		case 4, 9, 15:
			send(i, true)
		case 7:
			m.procs["analytics-writer-0"].kill9()
		case 13:
			m.procs["billing"].kill9()
		case 16:
			m.procs["analytics-writer-0"].start()
			m.procs["billing"].start()
		}
	}
	queries := 3
	for range queries {
		if code, _, _ := m.rest(t, "GET", "/v1/analytics/summary?campaignIds=spring", token, nil); code != 200 {
			t.Fatalf("analytics query: %d", code)
		}
	}

	// The independent counts: the events stored in ClickHouse, the events acknowledged above.
	conn := m.chConn(t, 0)
	var stored uint64
	waitFor(t, "the writer to store every event", time.Minute, func() bool {
		return conn.QueryRow(context.Background(), `SELECT count() FROM events WHERE tenant_id = ?`, tenant).Scan(&stored) == nil && stored == 500
	})
	today := time.Now().UTC()
	days := "startDay=" + today.AddDate(0, 0, -1).Format(time.DateOnly) + "&endDay=" + today.Format(time.DateOnly) // a run across midnight
	totals := func(token, query string) map[string]int64 {
		t.Helper()
		code, u, _ := m.rest(t, "GET", "/v1/usage?"+days+query, token, nil)
		if code != 200 {
			t.Fatalf("usage: %d %v", code, u)
		}
		out := map[string]int64{}
		rows, _ := u["totals"].([]any)
		for _, r := range rows {
			row, _ := r.(map[string]any)
			v, _ := strconv.ParseInt(fmt.Sprint(row["value"]), 10, 64)
			out[fmt.Sprint(row["meter"])] = v
		}
		return out
	}
	want := map[string]int64{"events_accepted": int64(accepted), "events_stored": int64(stored), "analytics_queries": int64(queries)}
	var got map[string]int64
	defer func() {
		if t.Failed() {
			t.Logf("last usage seen: %v, want %v", got, want)
		}
	}()
	waitFor(t, "the day's usage to equal the independent counts", time.Minute, func() bool {
		got = totals(token, "")
		for meter, n := range want {
			if got[meter] != n {
				return false
			}
		}
		return true
	})

	// The operator sees the same, naming the tenant.
	if opGot := totals(op, "&tenantId="+tenant); opGot["events_accepted"] != int64(accepted) {
		t.Fatalf("operator's usage of the tenant: %v", opGot)
	}

	// Every counter meter's units reach the stand-in exactly once, whatever the 5xx answers.
	var box struct {
		Received map[string]int `json:"received"`
		Events   []struct {
			Identifier string `json:"identifier"`
			EventName  string `json:"event_name"`
			Customer   string `json:"stripe_customer_id"`
			Value      int64  `json:"value"`
		} `json:"events"`
	}
	reported := map[string]int64{}
	waitFor(t, "the meter events to reach the Stripe stand-in", time.Minute, func() bool {
		resp, err := http.Get(m.stripe + "/outbox")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if json.NewDecoder(resp.Body).Decode(&box) != nil {
			return false
		}
		reported = map[string]int64{}
		for _, e := range box.Events {
			if e.Customer == "cus_e2e" {
				reported[e.EventName] += e.Value
			}
		}
		for meter, n := range want {
			if reported["cm_"+meter] != n {
				return false
			}
		}
		for _, n := range box.Received { // and the event accepted before its 500 was sent again
			if n > 1 {
				return true
			}
		}
		return false
	})
	retried := 0
	for id, n := range box.Received {
		if n > 1 {
			retried++
		}
		seen := 0
		for _, e := range box.Events {
			if e.Identifier == id {
				seen++
			}
		}
		if seen != 1 {
			t.Errorf("identifier %s accepted %d times", id, seen)
		}
	}
	if retried == 0 {
		t.Errorf("no meter event was sent twice: the injected 500-after-send did not happen (%v)", box.Received)
	}

	// Reconciliation: our usage, what Stripe acknowledged and Stripe's summaries agree (once the
	// reporter has read the answers to its retries).
	var rows []any
	defer func() {
		if t.Failed() {
			t.Logf("last reconciliation: %v", rows)
		}
	}()
	waitFor(t, "reconciliation to match every counter", time.Minute, func() bool {
		code, rec, _ := m.rest(t, "GET", "/v1/usage:reconcile?"+days+"&tenantId="+tenant, op, nil)
		if code != 200 {
			return false
		}
		rows, _ = rec["reconciliations"].([]any)
		matched := 0
		for _, r := range rows {
			row, _ := r.(map[string]any)
			if _, counter := want[fmt.Sprint(row["meter"])]; counter && fmt.Sprint(row["ours"]) != "0" {
				if row["explanation"] != "match" {
					return false
				}
				matched++
			}
		}
		return matched == len(want)
	})

	// Webhooks: a bad signature is refused; a repeated event is acted on once.
	code, _, _ := m.rest(t, "POST", "/webhooks/stripe", "", []byte(`{"id":"evt_forged","type":"invoice.paid"}`),
		"Stripe-Signature", fmt.Sprintf("t=%d,v1=%064x", time.Now().Unix(), 0))
	if code != http.StatusBadRequest {
		t.Fatalf("webhook with a bad signature: %d, want 400", code)
	}
	status := func() string {
		_, a, _ := m.rest(t, "GET", "/v1/billing/accounts/"+tenant, op, nil)
		return fmt.Sprint(a["status"])
	}
	standin("POST", "/webhooks/send", map[string]any{"type": "invoice.payment_failed", "customer": "cus_e2e", "id": "evt_e2e_failed"})
	if s := status(); s != "STATUS_FLAGGED" {
		t.Fatalf("after invoice.payment_failed: %s", s)
	}
	standin("POST", "/webhooks/send", map[string]any{"type": "invoice.paid", "customer": "cus_e2e", "id": "evt_e2e_paid"})
	if s := status(); s != "STATUS_OK" {
		t.Fatalf("after invoice.paid: %s", s)
	}
	standin("POST", "/webhooks/send", map[string]any{"type": "invoice.payment_failed", "customer": "cus_e2e", "id": "evt_e2e_failed"})
	if s := status(); s != "STATUS_OK" {
		t.Fatalf("the repeated invoice.payment_failed was acted on again: %s", s)
	}

	// A hard quota. First one at the usage so far: the probe finds ingest refusing once its
	// view has the plan; then, with billing's count caught up past the last event, a limit of
	// 10 more lets exactly 10 events through and refuses the next with the quota's answer.
	plan := func(limit int64) {
		t.Helper()
		code, p, _ := m.rest(t, "PUT", "/v1/plans/"+tenant, op, map[string]any{"tenantId": tenant, "name": "e2e",
			"limits": []map[string]any{{"meter": "events_accepted", "limit": strconv.FormatInt(limit, 10), "hard": true, "period": "day"}}})
		if code != 200 {
			t.Fatalf("set plan: %d %v", code, p)
		}
	}
	one := func(id string) (int, map[string]any, http.Header) {
		return m.rest(t, "POST", "/v1/events:batch", token, map[string]any{"events": []map[string]any{{"eventId": id, "type": "EVENT_TYPE_CLICK", "userId": "q"}}})
	}
	plan(int64(accepted))
	probe := 0
	waitFor(t, "ingest to enforce the plan", 30*time.Second, func() bool {
		probe++
		code, _, _ := one(fmt.Sprint("probe-", probe))
		if code == 200 {
			accepted++
		}
		return code == http.StatusTooManyRequests
	})
	lastAccepted := time.Now()
	kv := quotasBucket(t, m)
	waitFor(t, "billing's quota snapshot to count every accepted event", time.Minute, func() bool {
		e, err := kv.Get(context.Background(), "quota."+tenant)
		if err != nil {
			return false
		}
		var snap struct {
			AsOf   time.Time `json:"as_of"`
			Quotas []struct {
				Used int64 `json:"used"`
			} `json:"quotas"`
		}
		return json.Unmarshal(e.Value(), &snap) == nil && len(snap.Quotas) == 1 && snap.Quotas[0].Used == int64(accepted) &&
			snap.AsOf.After(lastAccepted.Add(2*time.Second))
	})
	plan(int64(accepted + 10))
	allowed := 0
	var refusal map[string]any
	var hdr http.Header
	waitFor(t, "ingest to let 10 more events through and refuse the next", 30*time.Second, func() bool {
		code, body, h := one(fmt.Sprint("more-", allowed, "-", time.Now().UnixNano()))
		switch code {
		case 200:
			allowed++
		case http.StatusTooManyRequests:
			refusal, hdr = body, h
			return allowed > 0 // before the first 200: the old plan still held
		}
		return false
	})
	// Never more than the limit. Billing's count and ingest's own may overlap at a snapshot's
	// edge, so a few units can count twice and refuse early (by design: counting errs high);
	// the exact count at the limit is ingest's test (grpcapi TestHardEventsQuota).
	if allowed < 1 || allowed > 10 {
		t.Fatalf("%d events allowed under a limit of 10 more", allowed)
	}
	t.Logf("%d of 10 more events allowed before the refusal", allowed)

	// billing's audit records reach auth's log (a record auth refused would hold every later one
	// in billing's outbox): the plan changes, the account mapping, the webhook's effects.
	waitFor(t, "billing's audit records in the platform's audit log", time.Minute, func() bool {
		code, page, _ := m.rest(t, "GET", "/v1/audit/records?pageSize=1000", op, nil)
		if code != 200 {
			return false
		}
		seen := map[string]int{}
		recs, _ := page["records"].([]any)
		for _, r := range recs {
			rec, _ := r.(map[string]any)
			seen[fmt.Sprint(rec["method"])+" "+fmt.Sprint(rec["resource"])]++
		}
		return seen["/campaignmesh.billing.v1.BillingService/SetPlan plans/"+tenant] == 2 &&
			seen["/campaignmesh.billing.v1.BillingAccountService/SetBillingAccount billing_accounts/"+tenant] == 1
	})
	if hdr.Get("Retry-After") == "" {
		t.Errorf("quota refusal without Retry-After: %v", hdr)
	}
	info := fmt.Sprint(refusal)
	for _, want := range []string{"QUOTA_EXCEEDED", "events_accepted", "resets at"} {
		if !strings.Contains(info, want) {
			t.Errorf("quota refusal %s lacks %q", info, want)
		}
	}
}

// quotasBucket is the QUOTAS bucket as the mesh's NATS admin sees it.
func quotasBucket(t *testing.T, m *mesh) jetstream.KeyValue {
	t.Helper()
	nc, err := nats.Connect(m.natsURL, nats.UserInfo(m.natsAdmin.Name, m.natsAdmin.Password))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), "QUOTAS")
	if err != nil {
		t.Fatal(err)
	}
	return kv
}
