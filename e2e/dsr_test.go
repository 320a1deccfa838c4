package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/campaignmesh/campaignmesh/internal/platform/chtest"
)

// dsrSession is a mesh with a tenant admin's token, an events.write key and a connection to the
// mesh's ClickHouse database, for the data-subject request tests.
type dsrSession struct {
	*mesh
	t      *testing.T
	token  string // the acme admin: holds dsr.manage and privacy.manage
	key    string // events.write API key
	tenant string // acme's id
	ch     driver.Conn
}

func startDSRSession(t *testing.T, cfg meshConfig) *dsrSession {
	t.Helper()
	m := startMeshWith(t, cfg)
	s := &dsrSession{mesh: m, t: t}
	_, login, _ := m.rest(t, "POST", "/v1/auth/login", "", m.bootstrapFile(t, "admin.json"))
	s.token, _ = login["accessToken"].(string)
	_, who, _ := m.rest(t, "GET", "/v1/auth/whoami", s.token, nil)
	s.tenant, _ = who["tenantId"].(string)
	code, created, _ := m.rest(t, "POST", "/v1/apikeys", s.token, map[string]any{"name": "sdk", "scopes": []string{"events.write"}})
	s.key, _ = created["secret"].(string)
	if s.token == "" || s.tenant == "" || code != 200 || s.key == "" {
		t.Fatalf("session: token %t, tenant %q, key %d %v", s.token != "", s.tenant, code, created)
	}
	admin := chtest.Admin(t)
	conn, err := ch.Open(&ch.Options{Addr: []string{chtest.Addr()}, Auth: ch.Auth{Database: m.clickhouseDB, Username: admin.Name, Password: admin.Password}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s.ch = conn
	return s
}

// event is one event of the test's data set.
type event struct{ id, user, anon, campaign, typ string }

func (e event) json() map[string]any {
	m := map[string]any{"eventId": e.id, "type": e.typ, "name": "e", "campaignId": e.campaign,
		"properties": map[string]any{"plan": "pro"}}
	if e.user != "" {
		m["userId"] = e.user
	}
	if e.anon != "" {
		m["anonymousId"] = e.anon
	}
	return m
}

// send sends events and returns the response's accepted and suppressed counts.
func (s *dsrSession) send(events ...event) (accepted, suppressed float64) {
	s.t.Helper()
	batch := []map[string]any{}
	for _, e := range events {
		batch = append(batch, e.json())
	}
	code, resp, _ := s.rest(s.t, "POST", "/v1/events:batch", s.key, map[string]any{"events": batch})
	if code != 200 {
		s.t.Fatalf("send events: %d %v", code, resp)
	}
	a, _ := resp["accepted"].(float64)
	sup, _ := resp["suppressed"].(float64)
	return a, sup
}

// count runs a count query on the mesh's ClickHouse database.
func (s *dsrSession) count(query string, args ...any) uint64 {
	s.t.Helper()
	var n uint64
	if err := s.ch.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		s.t.Fatalf("%s: %v", query, err)
	}
	return n
}

// subjectRows counts the stored events of the tenant with any of these ids as user or
// anonymous id.
func (s *dsrSession) subjectRows(ids ...string) uint64 {
	return s.count(`SELECT count() FROM events WHERE tenant_id = ? AND (has(?, user_id) OR has(?, anonymous_id))`, s.tenant, ids, ids)
}

// perSubject counts stored events per subject (user id, else anonymous id) of the tenant.
func (s *dsrSession) perSubject() map[string]uint64 {
	s.t.Helper()
	rows, err := s.ch.Query(context.Background(), `SELECT if(user_id != '', user_id, anonymous_id) AS subject, count() FROM events WHERE tenant_id = ? GROUP BY subject`, s.tenant)
	if err != nil {
		s.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]uint64{}
	for rows.Next() {
		var k string
		var n uint64
		if err := rows.Scan(&k, &n); err != nil {
			s.t.Fatal(err)
		}
		out[k] = n
	}
	return out
}

// uniqueUsers returns a campaign's unique users as the summary reports them, from the rollup
// (estimate states) and exactly.
func (s *dsrSession) uniqueUsers(campaign string) (rollup, exact string) {
	s.t.Helper()
	_, a, _ := s.rest(s.t, "GET", "/v1/analytics/summary?campaignIds="+campaign, s.token, nil)
	_, b, _ := s.rest(s.t, "GET", "/v1/analytics/summary?exactUniqueUsers=true&campaignIds="+campaign, s.token, nil)
	ta, _ := a["total"].(map[string]any)
	tb, _ := b["total"].(map[string]any)
	ra, _ := ta["uniqueUsers"].(string)
	rb, _ := tb["uniqueUsers"].(string)
	return ra, rb
}

// createRequest creates a DSR through REST and returns its id.
func (s *dsrSession) createRequest(kind string, requestID string, subject ...map[string]string) string {
	s.t.Helper()
	// REST: the body is the request itself; the idempotency key travels as a query parameter.
	body := map[string]any{"kind": kind, "regulation": "REGULATION_GDPR", "subject": subject}
	path := "/v1/dsr/requests"
	if requestID != "" {
		path += "?requestId=" + requestID
	}
	code, r, _ := s.rest(s.t, "POST", path, s.token, body)
	id, _ := r["id"].(string)
	if code != 200 || id == "" {
		s.t.Fatalf("create %s request: %d %v", kind, code, r)
	}
	return id
}

// awaitState waits until the request reaches state and returns it.
func (s *dsrSession) awaitState(id, state string, within time.Duration) map[string]any {
	s.t.Helper()
	var last map[string]any
	waitFor(s.t, "request "+id+" "+state, within, func() bool {
		_, last, _ = s.rest(s.t, "GET", "/v1/dsr/requests/"+id, s.token, nil)
		if st, _ := last["state"].(string); st == "STATE_FAILED" || st == "STATE_CANCELLED" {
			s.t.Fatalf("request %s ended %s: %v", id, st, last)
		}
		return last["state"] == state
	})
	return last
}

func userID(v string) map[string]string { return map[string]string{"kind": "KIND_USER_ID", "value": v} }
func email(v string) map[string]string  { return map[string]string{"kind": "KIND_EMAIL", "value": v} }

// TestErasureEndToEnd is the erasure scenario: a subject with a user id and a linked
// anonymous id, events over three campaigns among other subjects, some of the subject's events
// still in the stream (the writer stopped) when the request is created. After completion:
// nothing of the subject is stored, unique users are lower by exactly one where it appeared,
// every other subject's rows are unchanged, new events are answered suppressed, and the receipt
// verifies (a tampered copy does not).
func TestErasureEndToEnd(t *testing.T) {
	t.Parallel()
	s := startDSRSession(t, meshConfig{splitWriter: true})
	campaigns := []string{"c1", "c2", "c3"}
	var events []event
	// The subject is one user in each campaign: logged in with its device's anonymous id in c1
	// (the link), by user id alone in c2, anonymous before login in c3.
	events = append(events,
		event{"s-1a", "subj-1", "anon-subj-1", "c1", "EVENT_TYPE_IMPRESSION"},
		event{"s-1b", "subj-1", "anon-subj-1", "c1", "EVENT_TYPE_CLICK"},
		event{"s-2a", "subj-1", "", "c2", "EVENT_TYPE_IMPRESSION"},
		event{"s-3a", "", "anon-subj-1", "c3", "EVENT_TYPE_IMPRESSION"},
		event{"s-3b", "", "anon-subj-1", "c3", "EVENT_TYPE_CLICK"})
	for i, c := range campaigns {
		for o := 0; o < 4; o++ {
			events = append(events, event{fmt.Sprintf("o-%d-%d", i, o), fmt.Sprintf("other-%d", o), "", c, "EVENT_TYPE_IMPRESSION"})
		}
	}
	events = append(events, event{"o-x", "other-9", "", "c4", "EVENT_TYPE_CLICK"}) // a campaign the subject never saw
	if a, _ := s.send(events...); a != float64(len(events)) {
		t.Fatalf("accepted %v of %d", a, len(events))
	}
	// Stored in the raw table and in the rollup: ClickHouse commits an insert's part of the raw
	// table before the part its materialized view writes to the rollup, so a reader can see the
	// first without the second for a moment (long enough under load).
	waitFor(t, "events stored", 30*time.Second, func() bool {
		return s.count(`SELECT count() FROM events WHERE tenant_id = ?`, s.tenant) == uint64(len(events)) &&
			s.count(`SELECT countMerge(events) FROM events_hourly WHERE tenant_id = ?`, s.tenant) == uint64(len(events))
	})
	usersBefore := map[string][2]string{}
	for _, c := range append(campaigns, "c4") {
		r, e := s.uniqueUsers(c)
		usersBefore[c] = [2]string{r, e}
	}

	// The writer stops; events of the subject and of others wait in the stream.
	s.procs["analytics-writer-0"].stop()
	inflight := []event{
		{"s-late-1", "subj-1", "", "c1", "EVENT_TYPE_CONVERSION"},
		{"s-late-2", "", "anon-subj-1", "c2", "EVENT_TYPE_CLICK"},
		{"o-late-1", "other-1", "", "c1", "EVENT_TYPE_CONVERSION"},
	}
	if a, _ := s.send(inflight...); a != 3 {
		t.Fatalf("in-flight events accepted %v of 3", a)
	}
	others := s.perSubject()
	delete(others, "subj-1")
	delete(others, "anon-subj-1")
	others["other-1"]++ // its in-flight event lands later

	id := s.createRequest("KIND_ERASURE", "", userID("subj-1"))
	// From now on ingest answers the subject's events suppressed (within the documented 5 s).
	waitFor(t, "the user id suppressed at ingest", 5*time.Second, func() bool {
		a, sup := s.send(event{"s-new-" + fmt.Sprint(time.Now().UnixNano()), "subj-1", "", "c1", "EVENT_TYPE_CLICK"})
		return a == 0 && sup == 1
	})
	// While the stream still holds batches accepted before the request, the erasure waits for
	// the writer: done now, the subject's in-flight events could still land (after an
	// UNSUPPRESS, say).
	waitFor(t, "the analytics participant polled while the writer is stopped", 30*time.Second, func() bool {
		_, r, _ := s.rest(t, "GET", "/v1/dsr/requests/"+id, s.token, nil)
		if r["state"] == "STATE_COMPLETED" {
			t.Fatalf("the erasure completed while the writer was stopped with the subject's events in the stream: %v", r)
		}
		for _, p := range asList(r["participants"]) {
			if p["participant"] == "analytics" && p["attempts"] != nil && p["attempts"].(float64) >= 3 {
				return true
			}
		}
		return false
	})
	s.procs["analytics-writer-0"].start()
	done := s.awaitState(id, "STATE_COMPLETED", 90*time.Second)

	// Covered: the named user id and the linked anonymous id.
	covered, _ := json.Marshal(done["covered"])
	if !strings.Contains(string(covered), `"anon-subj-1"`) || !strings.Contains(string(covered), `"linked":true`) {
		t.Errorf("covered identifiers miss the linked anonymous id: %s", covered)
	}
	for _, p := range done["participants"].([]any) {
		if st := p.(map[string]any)["state"]; st != "STATE_DONE" {
			t.Errorf("participant %v", p)
		}
	}
	// New events of the linked id are suppressed too, and nothing of the subject lands.
	if a, sup := s.send(event{"s-after", "", "anon-subj-1", "c3", "EVENT_TYPE_CLICK"}); a != 0 || sup != 1 {
		t.Errorf("an event of the linked id after completion: accepted %v, suppressed %v", a, sup)
	}
	waitFor(t, "the other subject's in-flight event stored", 30*time.Second, func() bool { return s.perSubject()["other-1"] == others["other-1"] })
	if n := s.subjectRows("subj-1", "anon-subj-1"); n != 0 {
		t.Errorf("%d rows of the erased subject remain", n)
	}
	if got := s.perSubject(); fmt.Sprint(got) != fmt.Sprint(others) {
		t.Errorf("other subjects' rows changed:\n got %v\nwant %v", got, others)
	}
	for _, c := range append(campaigns, "c4") {
		r, e := s.uniqueUsers(c)
		want := usersBefore[c]
		if c != "c4" { // the subject was one user in each of c1, c2, c3
			want = [2]string{dec(t, want[0]), dec(t, want[1])}
		}
		if r != want[0] || e != want[1] {
			t.Errorf("campaign %s unique users (rollup, exact) = (%s, %s), want (%s, %s)", c, r, e, want[0], want[1])
		}
	}

	// The receipt verifies, through the API and offline with the CLI; a changed byte fails.
	code, receipt, _ := s.rest(t, "GET", "/v1/dsr/requests/"+id+"/receipt", s.token, nil)
	if code != 200 || receipt["payload"] == "" {
		t.Fatalf("receipt: %d %v", code, receipt)
	}
	if strings.Contains(fmt.Sprint(receipt), "subj-1") {
		t.Errorf("the receipt holds a raw identifier: %v", receipt)
	}
	_, verdict, _ := s.rest(t, "POST", "/v1/dsr/receipts:verify", "", map[string]any{"receipt": receipt})
	if verdict["valid"] != true {
		t.Errorf("VerifyReceipt: %v", verdict)
	}
	cli := bin(t, "cmesh")
	file := filepath.Join(s.dir, "receipt.json")
	writeJSON(t, file, receipt)
	if out, err := s.cmesh(cli, "dsr", "receipt", "verify", file); err != nil {
		t.Errorf("cmesh dsr receipt verify: %v\n%s", err, out)
	}
	tampered := map[string]any{}
	for k, v := range receipt {
		tampered[k] = v
	}
	tampered["payload"] = strings.Replace(receipt["payload"].(string), `"KIND_ERASURE"`, `"KIND_ACCESS"`, 1)
	if tampered["payload"] == receipt["payload"] {
		tampered["payload"] = receipt["payload"].(string) + " "
	}
	writeJSON(t, file, tampered)
	if out, err := s.cmesh(cli, "dsr", "receipt", "verify", file); err == nil {
		t.Errorf("a tampered receipt verified:\n%s", out)
	}
	if _, verdict, _ := s.rest(t, "POST", "/v1/dsr/receipts:verify", "", map[string]any{"receipt": tampered}); verdict["valid"] == true {
		t.Errorf("VerifyReceipt accepted a tampered receipt")
	}
}

// dec returns a decimal string one lower.
func dec(t *testing.T, s string) string {
	t.Helper()
	var n int64
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return fmt.Sprint(n - 1)
}

func writeJSON(t *testing.T, file string, v any) {
	t.Helper()
	data, _ := json.Marshal(v)
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func (s *dsrSession) cmesh(cli string, args ...string) ([]byte, error) {
	cmd := exec.Command(cli, append([]string{"-addr", s.gateway, "-cacert", filepath.Join(s.certs, "ca.pem")}, args...)...)
	cmd.Env = append(cmd.Environ(), "CMESH_TOKEN="+s.token, "CMESH_CREDENTIALS="+filepath.Join(s.dir, "credentials.json"))
	return cmd.CombinedOutput()
}

// TestAccessEndToEnd: the export holds exactly the subject's events (as many as ClickHouse
// counts) and the staff profile whose email matches; another tenant gets NOT_FOUND for the
// request and its export.
func TestAccessEndToEnd(t *testing.T) {
	t.Parallel()
	s := startDSRSession(t, meshConfig{})
	code, _, _ := s.rest(t, "POST", "/v1/users", s.token, map[string]any{
		"user": map[string]any{"email": "pat@acme.example", "displayName": "Pat", "role": "ROLE_ANALYST"}, "password": "a long enough password"})
	if code != 200 {
		t.Fatalf("create user: %d", code)
	}
	var events []event
	for i := 0; i < 30; i++ {
		events = append(events, event{fmt.Sprintf("p-%d", i), "pat-42", "", "c1", "EVENT_TYPE_IMPRESSION"})
	}
	events = append(events, event{"q-1", "someone-else", "", "c1", "EVENT_TYPE_IMPRESSION"})
	s.send(events...)
	waitFor(t, "events stored", 30*time.Second, func() bool {
		return s.count(`SELECT count() FROM events WHERE tenant_id = ?`, s.tenant) == uint64(len(events))
	})

	id := s.createRequest("KIND_ACCESS", "", userID("pat-42"), email("pat@acme.example"))
	done := s.awaitState(id, "STATE_COMPLETED", 60*time.Second)
	if done["export"] == nil {
		t.Fatalf("no export manifest: %v", done)
	}
	req, _ := http.NewRequest("GET", s.url("/v1/dsr/requests/"+id+"/export"), nil)
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := s.httpc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	byType := map[string]int{}
	lines := bufio.NewScanner(resp.Body)
	lines.Buffer(make([]byte, 1<<20), 1<<20)
	for lines.Scan() {
		var line struct {
			Result struct {
				Manifest map[string]any
				Record   struct {
					Participant, Type string
					Data              map[string]any
				}
			}
		}
		if err := json.Unmarshal(lines.Bytes(), &line); err != nil {
			t.Fatalf("export line %s: %v", lines.Bytes(), err)
		}
		if r := line.Result.Record; r.Type != "" {
			byType[r.Participant+"/"+r.Type]++
			if r.Type == "event" && fmt.Sprint(r.Data) != "" && strings.Contains(fmt.Sprint(r.Data), "someone-else") {
				t.Errorf("the export holds another subject's event: %v", r.Data)
			}
		}
	}
	if want := s.subjectRows("pat-42"); uint64(byType["analytics/event"]) != want || want != 30 {
		t.Errorf("exported %d events, ClickHouse holds %d of the subject", byType["analytics/event"], want)
	}
	if byType["auth/user"] != 1 {
		t.Errorf("the export holds %d staff profiles, want 1 (%v)", byType["auth/user"], byType)
	}

	// Another tenant's admin sees neither the request nor its export.
	other := s.otherTenantAdmin(t)
	for _, path := range []string{"/v1/dsr/requests/" + id, "/v1/dsr/requests/" + id + "/export", "/v1/dsr/requests/" + id + "/receipt"} {
		if code, _, _ := s.rest(t, "GET", path, other, nil); code != http.StatusNotFound {
			t.Errorf("GET %s as another tenant: %d, want 404", path, code)
		}
	}
}

// otherTenantAdmin creates tenant globex with an admin (through the operator's invitation) and
// returns the admin's access token.
func (s *dsrSession) otherTenantAdmin(t *testing.T) string {
	t.Helper()
	_, login, _ := s.rest(t, "POST", "/v1/auth/login", "", s.bootstrapFile(t, "operator.json"))
	op, _ := login["accessToken"].(string)
	code, tenant, _ := s.rest(t, "POST", "/v1/tenants", op, map[string]any{"slug": "globex", "displayName": "Globex"})
	tid, _ := tenant["id"].(string)
	if code != 200 || tid == "" {
		t.Fatalf("create tenant: %d %v", code, tenant)
	}
	code, inv, _ := s.rest(t, "POST", "/v1/tenants/"+tid+"/invitations", op, map[string]any{"invitation": map[string]any{"email": "gia@globex.example", "role": "ROLE_ADMIN"}})
	token, _ := inv["secret"].(string)
	if code != 200 || token == "" {
		t.Fatalf("invite: %d %v", code, inv)
	}
	if code, r, _ := s.rest(t, "POST", "/v1/invitations:accept", "", map[string]any{"token": token, "displayName": "Gia", "password": "gia has a long password"}); code != 200 {
		t.Fatalf("accept: %d %v", code, r)
	}
	_, login, _ = s.rest(t, "POST", "/v1/auth/login", "", map[string]any{"tenant": "globex", "email": "gia@globex.example", "password": "gia has a long password"})
	admin, _ := login["accessToken"].(string)
	if admin == "" {
		t.Fatalf("login as globex admin: %v", login)
	}
	return admin
}

// TestDSRJobsSurviveFaults: dsr killed (-9) in the middle of a job completes it once after its
// restart; analytics stopped for 30 s during a job keeps the job waiting (retrying, with the
// error visible) until it returns; a repeated create with the same request_id makes one job.
func TestDSRJobsSurviveFaults(t *testing.T) {
	t.Parallel()
	s := startDSRSession(t, meshConfig{})
	var events []event
	for i := 0; i < 20; i++ {
		events = append(events, event{fmt.Sprintf("k-%d", i), fmt.Sprintf("kill-%d", i%2), "", "c1", "EVENT_TYPE_IMPRESSION"})
	}
	s.send(events...)
	waitFor(t, "events stored", 30*time.Second, func() bool { return s.count(`SELECT count() FROM events WHERE tenant_id = ?`, s.tenant) == 20 })

	// One job per request_id.
	first := s.createRequest("KIND_ERASURE", "retry-1", userID("kill-0"))
	if again := s.createRequest("KIND_ERASURE", "retry-1", userID("kill-0")); again != first {
		t.Errorf("a retried create made request %s, the first was %s", again, first)
	}
	// dsr dies mid-job (erasure running) and comes back.
	waitFor(t, "the erasure running", 30*time.Second, func() bool {
		_, r, _ := s.rest(t, "GET", "/v1/dsr/requests/"+first, s.token, nil)
		return r["state"] == "STATE_RUNNING" || r["state"] == "STATE_VERIFYING"
	})
	s.procs["dsr"].kill9()
	s.procs["dsr"].start()
	waitFor(t, "dsr back", 30*time.Second, func() bool { return httpOK("http://" + s.admins["dsr"] + "/healthz") })
	done := s.awaitState(first, "STATE_COMPLETED", 60*time.Second)
	for _, p := range asList(done["participants"]) { // erased once: the subject's 10 events
		if counts, _ := p["counts"].(map[string]any); p["participant"] == "analytics" && counts["events"] != "10" {
			t.Errorf("analytics counts after the restart: %v", p)
		}
	}
	if n := s.subjectRows("kill-0"); n != 0 {
		t.Errorf("%d rows of kill-0 remain", n)
	}
	_, list, _ := s.rest(t, "GET", "/v1/dsr/requests", s.token, nil)
	if reqs, _ := list["requests"].([]any); len(reqs) != 1 {
		t.Errorf("%d requests listed, want 1: %v", len(reqs), list)
	}

	// analytics is down for 30 s during a job: the job waits, shows why, and completes after.
	s.procs["analytics"].stop()
	id := s.createRequest("KIND_ERASURE", "", userID("kill-1"))
	waitFor(t, "the analytics participant retrying", 30*time.Second, func() bool {
		_, r, _ := s.rest(t, "GET", "/v1/dsr/requests/"+id, s.token, nil)
		for _, p := range asList(r["participants"]) {
			if p["participant"] == "analytics" && p["state"] == "STATE_RETRYING" && p["lastError"] != "" && p["attempts"] != nil {
				return true
			}
		}
		return false
	})
	downFor := time.Now().Add(30 * time.Second)
	waitFor(t, "30 s of analytics outage", 40*time.Second, func() bool {
		_, r, _ := s.rest(t, "GET", "/v1/dsr/requests/"+id, s.token, nil)
		if r["state"] == "STATE_COMPLETED" || r["state"] == "STATE_FAILED" {
			t.Fatalf("the request ended while analytics was down: %v", r)
		}
		return time.Now().After(downFor)
	})
	s.procs["analytics"].start()
	s.awaitState(id, "STATE_COMPLETED", 90*time.Second)
	if n := s.subjectRows("kill-1"); n != 0 {
		t.Errorf("%d rows of kill-1 remain", n)
	}
}

func asList(v any) []map[string]any {
	var out []map[string]any
	l, _ := v.([]any)
	for _, e := range l {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// TestPrivacyPolicyAppliesAtIngest: a tenant's policy hashes one property (same value, same
// hash), drops another, truncates the IP and drops the user agent before anything reaches the
// stream; the stored event shows the policy's effect and no raw value.
func TestPrivacyPolicyAppliesAtIngest(t *testing.T) {
	t.Parallel()
	s := startDSRSession(t, meshConfig{})
	code, p, _ := s.rest(t, "PATCH", "/v1/privacy/policy", s.token, map[string]any{
		"propertyRules":     []map[string]any{{"key": "email", "action": "PROPERTY_ACTION_HASH"}, {"key": "phone", "action": "PROPERTY_ACTION_DROP"}},
		"ipHandling":        "IP_HANDLING_TRUNCATE",
		"userAgentHandling": "USER_AGENT_HANDLING_DROP",
	})
	if code != 200 {
		t.Fatalf("update policy: %d %v", code, p)
	}
	sendOne := func(id, email string) {
		code, resp, _ := s.rest(t, "POST", "/v1/events:batch", s.key, map[string]any{"events": []map[string]any{{
			"eventId": id, "type": "EVENT_TYPE_CLICK", "name": "e", "userId": "pol-1", "campaignId": "c1",
			"properties": map[string]any{"email": email, "phone": "+1 555", "plan": "pro"},
			"context":    map[string]any{"ip": "203.0.113.77", "userAgent": "Mozilla/5.0"},
		}}})
		if code != 200 || resp["accepted"] != float64(1) {
			t.Fatalf("send: %d %v", code, resp)
		}
	}
	type stored struct{ ip, ua, email, phone, plan string }
	read := func(id string) (st stored) {
		waitFor(t, id+" stored", 20*time.Second, func() bool {
			return s.count(`SELECT count() FROM events WHERE tenant_id = ? AND event_id = ?`, s.tenant, id) == 1
		})
		err := s.ch.QueryRow(context.Background(), `SELECT ip, user_agent, prop_values[indexOf(prop_keys, 'email')],
			prop_values[indexOf(prop_keys, 'phone')], prop_values[indexOf(prop_keys, 'plan')], has(prop_keys, 'phone')
			FROM events WHERE tenant_id = ? AND event_id = ?`, s.tenant, id).Scan(&st.ip, &st.ua, &st.email, &st.phone, &st.plan, new(uint8))
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	// The policy applies within the documented bound (30 s; in practice at once).
	n := 0
	var first stored
	waitFor(t, "the policy applied at ingest", 30*time.Second, func() bool {
		n++
		first = read(func() string { id := fmt.Sprint("pol-", n); sendOne(id, "pat@example.com"); return id }())
		return first.ip == "203.0.113.0"
	})
	second := read(func() string { sendOne("pol-again", "pat@example.com"); return "pol-again" }())
	other := read(func() string { sendOne("pol-other", "sam@example.com"); return "pol-other" }())
	if first.ua != "" || first.phone != "" || first.plan != "pro" {
		t.Errorf("stored %+v: want no user agent, no phone, plan kept", first)
	}
	if !strings.HasPrefix(first.email, "h:") || first.email != second.email || first.email == other.email {
		t.Errorf("hashed emails: %q, %q (same input), %q (other input)", first.email, second.email, other.email)
	}
	if n := s.count(`SELECT count() FROM events WHERE tenant_id = ? AND event_id IN ('pol-again', 'pol-other')
		AND (has(prop_values, 'pat@example.com') OR has(prop_values, 'sam@example.com') OR has(prop_keys, 'phone') OR ip = '203.0.113.77' OR user_agent != '')`, s.tenant); n != 0 {
		t.Errorf("%d events stored with raw values", n)
	}

	// Another tenant with the same rule hashes the same value differently.
	globex := s.otherTenantAdmin(t)
	if code, p, _ := s.rest(t, "PATCH", "/v1/privacy/policy", globex, map[string]any{
		"propertyRules": []map[string]any{{"key": "email", "action": "PROPERTY_ACTION_HASH"}}}); code != 200 {
		t.Fatalf("globex policy: %d %v", code, p)
	}
	_, created, _ := s.rest(t, "POST", "/v1/apikeys", globex, map[string]any{"name": "sdk", "scopes": []string{"events.write"}})
	gkey, _ := created["secret"].(string)
	var hashed string
	m := 0
	waitFor(t, "globex's policy applied", 30*time.Second, func() bool {
		m++
		id := fmt.Sprint("g-", m)
		s.rest(t, "POST", "/v1/events:batch", gkey, map[string]any{"events": []map[string]any{{
			"eventId": id, "type": "EVENT_TYPE_CLICK", "name": "e", "userId": "pol-1", "properties": map[string]any{"email": "pat@example.com"}}}})
		waitFor(t, id+" stored", 20*time.Second, func() bool {
			return s.count(`SELECT count() FROM events WHERE tenant_id != ? AND event_id = ?`, s.tenant, id) == 1
		})
		_ = s.ch.QueryRow(context.Background(), `SELECT prop_values[indexOf(prop_keys, 'email')] FROM events WHERE tenant_id != ? AND event_id = ?`, s.tenant, id).Scan(&hashed)
		return strings.HasPrefix(hashed, "h:")
	})
	if hashed == first.email {
		t.Errorf("two tenants' hashes of one value are equal: %s", hashed)
	}
}
