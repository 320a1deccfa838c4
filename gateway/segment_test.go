package gateway_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/campaignmesh/campaignmesh/gateway"
	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/ingest"
	"github.com/campaignmesh/campaignmesh/services/ingest/app"
)

// Write keys of the tests: API keys of two tenants, and a key that may only read.
const (
	keyA        = "cmk_0123456789abcdef0123456789abcdef_writeA"
	keyB        = "cmk_0123456789abcdef0123456789abcdee_writeB"
	keyReadOnly = "cmk_0123456789abcdef0123456789abcded_read"
	keyWide     = "cmk_0123456789abcdef0123456789abcdec_wide"
)

// testKeys verifies the tests' API keys as auth would: an unknown or revoked key is refused.
type testKeys struct {
	mu   sync.Mutex
	keys map[string]authn.Principal
}

func (k *testKeys) VerifyAPIKey(_ context.Context, secret string) (*authn.Principal, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	p, ok := k.keys[secret]
	if !ok {
		return nil, fmt.Errorf("unknown api key")
	}
	return &p, nil
}

func (k *testKeys) revoke(secret string) { k.mu.Lock(); delete(k.keys, secret); k.mu.Unlock() }

// segmentEnv is a gateway in front of a real ingest on an embedded JetStream server.
type segmentEnv struct {
	url  string
	ns   *server.Server
	keys *testKeys
	reg  *prometheus.Registry
}

func newSegmentEnv(t testing.TB, rates *ingest.RateLimits) *segmentEnv {
	t.Helper()
	e := &segmentEnv{ns: natstest.StartServer(t), reg: prometheus.NewRegistry(), keys: &testKeys{keys: map[string]authn.Principal{
		keyA:        {TenantID: "tenant-a", Subject: "key-a", Permissions: []string{rbac.EventsWrite}, Kind: authn.KindAPIKey},
		keyB:        {TenantID: "tenant-b", Subject: "key-b", Permissions: []string{rbac.EventsWrite}, Kind: authn.KindAPIKey},
		keyReadOnly: {TenantID: "tenant-a", Subject: "key-r", Permissions: []string{rbac.AnalyticsRead}, Kind: authn.KindAPIKey},
		keyWide:     {TenantID: "tenant-a", Subject: "key-w", Permissions: []string{rbac.AnalyticsRead, rbac.EventsWrite}, Kind: authn.KindAPIKey},
	}}}
	ca := mtlstest.NewCA(t)
	in := servicetest.StartIngest(t, servicetest.IngestOptions{CA: ca, NATS: e.ns, Verifier: authn.Verifier{Keys: e.keys},
		Config: func(c *app.Config) {
			if rates != nil {
				c.Rates = *rates
			}
		}})
	conn, err := grpcclient.Dial(in.Addr(), "ingest", mtlstest.Source(t, ca, "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	gw, err := gateway.New(context.Background(), gateway.Config{RateLimit: 1 << 20, Logger: slog.New(slog.DiscardHandler), Registry: e.reg,
		CORSOrigins: []string{"https://shop.example"}},
		[]gateway.Backend{{Package: "campaignmesh.ingest.v1", Conn: conn, RegisterREST: ingestv1.RegisterIngestServiceHandler}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(srv.Close)
	e.url = srv.URL
	return e
}

// post sends body to path with the given headers and returns the status, headers and body.
func (e *segmentEnv) post(t *testing.T, path string, body io.Reader, header map[string]string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(raw)
}

// noRedirect answers a 3xx as it is, so a redirect fails the tests instead of being followed.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func basic(key string) map[string]string {
	return map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(key+":")),
		"Content-Type": "application/json"}
}

// stored is every event in the event stream, by event id.
func (e *segmentEnv) stored(t *testing.T) map[string]*ingestv1.AcceptedEvent {
	t.Helper()
	return e.streamEvents(t, natsjs.StreamName)
}

// deadLetters is every event in the dead-letter stream (ingest keeps rejected events there), by
// event id.
func (e *segmentEnv) deadLetters(t *testing.T) map[string]*ingestv1.AcceptedEvent {
	t.Helper()
	return e.streamEvents(t, natsjs.DeadLetterName)
}

func (e *segmentEnv) streamEvents(t *testing.T, stream string) map[string]*ingestv1.AcceptedEvent {
	t.Helper()
	nc, js, err := natsjs.Connect(e.ns.ClientURL(), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*ingestv1.AcceptedEvent{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		b, err := natsjs.DecodeBatch(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range b.GetEvents() {
			out[ev.GetEvent().GetEventId()] = ev
		}
	}
	return out
}

func gzipped(t *testing.T, s string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write([]byte(s))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

const success = `{"success":true}` + "\n"

// Every single-event route, its short path and a trailing slash answer 200 once ingest stored
// the event, with the type taken from the path; nothing is ever redirected.
func TestSegmentSingleEventRoutes(t *testing.T) {
	e := newSegmentEnv(t, nil)
	cases := []struct {
		path string
		want ingestv1.EventType
	}{
		{"/v1/track", ingestv1.EventType_EVENT_TYPE_TRACK}, {"/v1/t", ingestv1.EventType_EVENT_TYPE_TRACK},
		{"/v1/identify", ingestv1.EventType_EVENT_TYPE_IDENTIFY}, {"/v1/i", ingestv1.EventType_EVENT_TYPE_IDENTIFY},
		{"/v1/page", ingestv1.EventType_EVENT_TYPE_PAGE}, {"/v1/p", ingestv1.EventType_EVENT_TYPE_PAGE},
		{"/v1/screen", ingestv1.EventType_EVENT_TYPE_PAGE}, {"/v1/s", ingestv1.EventType_EVENT_TYPE_PAGE},
		{"/v1/group", ingestv1.EventType_EVENT_TYPE_IDENTIFY}, {"/v1/g", ingestv1.EventType_EVENT_TYPE_IDENTIFY},
		{"/v1/alias", ingestv1.EventType_EVENT_TYPE_IDENTIFY}, {"/v1/a", ingestv1.EventType_EVENT_TYPE_IDENTIFY},
		{"/v1/track/", ingestv1.EventType_EVENT_TYPE_TRACK}, {"/v1/t//", ingestv1.EventType_EVENT_TYPE_TRACK},
		{"/v1//t", ingestv1.EventType_EVENT_TYPE_TRACK}, {"//v1/p", ingestv1.EventType_EVENT_TYPE_PAGE},
	}
	for i, c := range cases {
		id := fmt.Sprintf("m-%d", i)
		// "type" in the body is ignored: the path decides.
		body := fmt.Sprintf(`{"type":"nonsense","messageId":%q,"event":"Signed Up","name":"Home","userId":"u1","writeKey":%q}`, id, keyA)
		code, _, answer := e.post(t, c.path, strings.NewReader(body), map[string]string{"Content-Type": "text/plain"})
		if code != http.StatusOK || answer != success { // the client follows no redirect: a 3xx fails here too
			t.Fatalf("%s: %d %s", c.path, code, answer)
		}
		if got := e.stored(t)[id]; got == nil || got.GetEvent().GetType() != c.want || got.GetTenantId() != "tenant-a" {
			t.Fatalf("%s: stored %v, want type %v in tenant-a", c.path, got, c.want)
		}
	}
}

// The recorded request shapes of the browser library and of the mobile and server SDKs.
func TestSegmentRecordedShapes(t *testing.T) {
	e := newSegmentEnv(t, nil)
	// analytics-next, one event per request: text/plain, the write key in the body, context of
	// the page, ISO timestamps with milliseconds.
	browser := `{"timestamp":"2026-11-29T07:00:00.123Z","integrations":{},"type":"track","properties":{"plan":"pro","campaign_id":"c-spring","variant":"b"},` +
		`"event":"Plan Chosen","messageId":"ajs-next-1","context":{"page":{"path":"/","url":"https://shop.example/"},"userAgent":"Mozilla/5.0","locale":"en-US",` +
		`"library":{"name":"analytics.js","version":"next-1.70.0"}},"anonymousId":"anon-1","writeKey":"` + keyA + `","userId":null,"sentAt":"2026-11-29T07:00:00.200Z","_metadata":{"bundled":["Segment.io"]}}`
	// analytics-next with batching: /b, text/plain, a batch with the key in the body.
	browserBatch := `{"batch":[{"type":"page","name":"Home","messageId":"ajs-next-2","anonymousId":"anon-1","properties":{"path":"/"},"timestamp":"2026-11-29T07:00:01.000Z"},` +
		`{"type":"identify","messageId":"ajs-next-3","userId":"u-7","anonymousId":"anon-1","traits":{"email":"u7@shop.example","plan":"pro"}}],` +
		`"sentAt":"2026-11-29T07:00:02.000Z","writeKey":"` + keyA + `"}`
	// analytics-kotlin / analytics-swift: /b, gzip with Content-Encoding, Basic auth, batch-level context.
	mobile := `{"batch":[{"type":"screen","name":"Cart","messageId":"kt-1","anonymousId":"dev-1","originalTimestamp":"2026-11-29T07:00:03.000Z",` +
		`"context":{"app":{"name":"shop-android","version":"4.2"}}},{"type":"track","event":"Checkout","messageId":"kt-2","userId":"u-8",` +
		`"properties":{"variation_id":"v2"},"context":{"campaign":{"name":"c-summer","source":"newsletter"}}}],` +
		`"context":{"device":{"model":"Pixel 8"},"locale":"de-DE","app":{"name":"ignored-by-item"}},"sentAt":"2026-11-29T07:00:04.000Z"}`
	// The same without Content-Encoding (the body's magic bytes say gzip), and chunked.
	mobileBare := strings.ReplaceAll(strings.ReplaceAll(mobile, "kt-1", "sw-1"), "kt-2", "sw-2")
	// A server import (analytics-go style: /v1/batch, JSON, Basic auth) and /v1/import.
	server := `{"batch":[{"type":"alias","messageId":"go-1","userId":"u-9","previousId":"anon-9","timestamp":"2026-11-29T07:00:05Z"},` +
		`{"type":"group","messageId":"go-2","userId":"u-9","groupId":"acme","traits":{"name":"Acme"}}]}`
	imported := `{"batch":[{"type":"track","event":"Old Order","messageId":"imp-1","userId":"u-10","timestamp":"2025-01-02T03:04:05+01:00"}]}`

	for _, c := range []struct {
		name, path string
		body       io.Reader
		header     map[string]string
		chunked    bool
	}{
		{"browser single", "/v1/t", strings.NewReader(browser), map[string]string{"Content-Type": "text/plain"}, false},
		{"browser batch", "/v1/b", strings.NewReader(browserBatch), map[string]string{"Content-Type": "text/plain"}, false},
		{"mobile gzip", "/b", bytes.NewReader(gzipped(t, mobile)), merge(basic(keyA), map[string]string{"Content-Encoding": "gzip"}), false},
		{"mobile gzip, no header, chunked", "/v1/b", bytes.NewReader(gzipped(t, mobileBare)), basic(keyA), true},
		{"server batch", "/v1/batch", strings.NewReader(server), basic(keyA), false},
		{"import", "/v1/import", strings.NewReader(imported), basic(keyA), false},
	} {
		body := c.body
		if c.chunked {
			body = io.MultiReader(body) // no length: the client sends it chunked
		}
		if code, _, answer := e.post(t, c.path, body, c.header); code != http.StatusOK || answer != success {
			t.Fatalf("%s: %d %s", c.name, code, answer)
		}
	}
	got := e.stored(t)
	ev := func(id string) *ingestv1.Event {
		t.Helper()
		a := got[id]
		if a == nil {
			t.Fatalf("event %s not stored; stored %d events", id, len(got))
		}
		return a.GetEvent()
	}
	prop := func(e *ingestv1.Event, k string) string { return e.GetProperties().GetFields()[k].GetStringValue() }

	// campaign_id and variant become the event's campaign and variant, not repeated as properties.
	if b := ev("ajs-next-1"); b.GetName() != "Plan Chosen" || b.GetCampaignId() != "c-spring" || b.GetVariant() != "b" ||
		len(b.GetProperties().GetFields()) != 1 || prop(b, "plan") != "pro" ||
		b.GetAnonymousId() != "anon-1" || b.GetUserId() != "" || b.GetContext().GetUserAgent() != "Mozilla/5.0" ||
		b.GetTimestamp().AsTime() != time.Date(2026, 11, 29, 7, 0, 0, 123e6, time.UTC) || b.GetSentAt() == nil {
		t.Errorf("browser event: %v", b)
	}
	if p := ev("ajs-next-2"); p.GetType() != ingestv1.EventType_EVENT_TYPE_PAGE || p.GetName() != "Home" ||
		p.GetSentAt().AsTime() != time.Date(2026, 11, 29, 7, 0, 2, 0, time.UTC) {
		t.Errorf("page of a batch (batch sentAt): %v", p)
	}
	if i := ev("ajs-next-3"); i.GetType() != ingestv1.EventType_EVENT_TYPE_IDENTIFY || prop(i, "traits.email") != "u7@shop.example" || prop(i, "traits.plan") != "pro" {
		t.Errorf("identify keeps traits: %v", i)
	}
	for _, id := range []string{"kt-1", "sw-1"} {
		s := ev(id)
		if s.GetType() != ingestv1.EventType_EVENT_TYPE_PAGE || prop(s, "segment_type") != "screen" || s.GetName() != "Cart" ||
			s.GetContext().GetApp() != "shop-android/4.2" || s.GetContext().GetDevice() != "Pixel 8" || s.GetContext().GetLocale() != "de-DE" ||
			s.GetTimestamp().AsTime() != time.Date(2026, 11, 29, 7, 0, 3, 0, time.UTC) {
			t.Errorf("screen %s (batch context merged, item's app wins, originalTimestamp): %v", id, s)
		}
	}
	for _, id := range []string{"kt-2", "sw-2"} {
		k := ev(id)
		if k.GetCampaignId() != "c-summer" || k.GetVariant() != "v2" || k.GetContext().GetDevice() != "Pixel 8" || k.GetProperties().GetFields()["variation_id"] != nil {
			t.Errorf("track %s (UTM campaign, variation_id, batch context): %v", id, k)
		}
	}
	if a := ev("go-1"); prop(a, "segment_type") != "alias" || prop(a, "previous_id") != "anon-9" {
		t.Errorf("alias: %v", a)
	}
	if g := ev("go-2"); prop(g, "segment_type") != "group" || prop(g, "group_id") != "acme" || prop(g, "traits.name") != "Acme" {
		t.Errorf("group: %v", g)
	}
	if i := ev("imp-1"); i.GetTimestamp().AsTime() != time.Date(2025, 1, 2, 2, 4, 5, 0, time.UTC) {
		t.Errorf("import: %v", i)
	}
}

func merge(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// Integers above 2^53 arrive exactly as sent; a missing messageId gets a generated id; a
// timestamp that is not a time is replaced by the time received, with a warning counted,
// and the event is still stored.
func TestSegmentValuesAndIDs(t *testing.T) {
	e := newSegmentEnv(t, nil)
	body := `{"batch":[{"type":"track","event":"Order","messageId":"big-1","userId":9007199254740993,"timestamp":"yesterday-ish",` +
		`"properties":{"order_id":9007199254740993,"neg":-9223372036854775809,"small":42,"ratio":0.5,"nested":{"id":18446744073709551615}}},` +
		`{"type":"track","event":"No Id","userId":"u-2"}]}`
	if code, _, answer := e.post(t, "/v1/batch", strings.NewReader(body), basic(keyA)); code != http.StatusOK || answer != success {
		t.Fatalf("%d %s", code, answer)
	}
	got := e.stored(t)
	big := got["big-1"].GetEvent()
	f := big.GetProperties().GetFields()
	if big.GetUserId() != "9007199254740993" || f["order_id"].GetStringValue() != "9007199254740993" ||
		f["neg"].GetStringValue() != "-9223372036854775809" || f["small"].GetNumberValue() != 42 || f["ratio"].GetNumberValue() != 0.5 ||
		f["nested"].GetStructValue().GetFields()["id"].GetStringValue() != "18446744073709551615" {
		t.Errorf("big integers: user %q, properties %v", big.GetUserId(), f)
	}
	if big.GetTimestamp() != nil || got["big-1"].GetReceivedAt() == nil {
		t.Errorf("unparseable timestamp: %v, want none (the time received)", big.GetTimestamp())
	}
	if n := (counter(t, e.reg, "gateway_segment_warnings_total", "timestamp")); n != 1 {
		t.Errorf("timestamp warnings = %v, want 1", n)
	}
	if len(got) != 2 {
		t.Fatalf("stored %d events, want 2", len(got))
	}
	for id, a := range got {
		if id != "big-1" && (a.GetEvent().GetName() != "No Id" || len(id) != 36) {
			t.Errorf("generated id %q for %v", id, a.GetEvent())
		}
	}
}

// counter is the value of the counter name with the one label value (0 when absent).
func counter(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == label {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// routeCount is the number of REST requests of route counted by the edge metrics.
func routeCount(t *testing.T, reg *prometheus.Registry, route string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "gateway_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "route" && l.GetValue() == route {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// The status table: what SDKs retry (5xx, 429) and what they drop (other 4xx) is decided by
// what the batch's fate really is.
func TestSegmentStatusTable(t *testing.T) {
	e := newSegmentEnv(t, nil)
	ok := `{"batch":[{"type":"track","event":"A","messageId":"st-1","userId":"u"}]}`
	// Per-event rejections inside a readable body: 200, the good events stored, the bad counted.
	mixed := `{"batch":[{"type":"track","event":"A","messageId":"st-2","userId":"u"},{"type":"track","messageId":"st-3","userId":"u"},` +
		`{"type":"track","event":"A","messageId":"st-4"},{"type":"launch","messageId":"st-5","userId":"u"},"not an object"]}`
	if code, _, answer := e.post(t, "/v1/batch", strings.NewReader(mixed), basic(keyA)); code != http.StatusOK || answer != success {
		t.Fatalf("per-event rejections: %d %s", code, answer)
	}
	got := e.stored(t)
	if got["st-2"] == nil || got["st-3"] != nil || got["st-4"] != nil || got["st-5"] != nil {
		t.Fatalf("stored %v", got)
	}
	// Every bad item reached ingest, which rejected it with a reason and kept it in the dead
	// letters: an item of an unknown type with its type, one that is not an object whole.
	for field, want := range map[string]float64{"name": 1, "user_id": 1, "type": 2} {
		if n := (counter(t, e.reg, "gateway_segment_rejected_total", field)); n != want {
			t.Errorf("rejected %s = %v, want %v", field, n, want)
		}
	}
	dead := e.deadLetters(t)
	if len(dead) != 4 || dead["st-3"] == nil || dead["st-4"] == nil || dead["st-5"] == nil ||
		dead["st-5"].GetEvent().GetProperties().GetFields()["segment_type"].GetStringValue() != "launch" {
		t.Fatalf("dead letters %v, want st-3, st-4, st-5 (segment_type launch) and the item that is not an object", dead)
	}
	for id, ev := range dead {
		if ev.GetTenantId() != "tenant-a" {
			t.Errorf("dead letter %s of tenant %q", id, ev.GetTenantId())
		}
		if !strings.HasPrefix(id, "st-") && ev.GetEvent().GetProperties().GetFields()["segment_item"].GetStringValue() != "not an object" {
			t.Errorf("dead letter %s: %v, want the item as segment_item", id, ev.GetEvent())
		}
	}

	var bomb bytes.Buffer
	zw := gzip.NewWriter(&bomb)
	_, _ = zw.Write([]byte(`{"batch":[`))
	_, _ = zw.Write(bytes.Repeat([]byte(" "), gateway.SegmentMaxBodyBytes))
	_ = zw.Close()
	badGzip := gzipped(t, ok)[:20]
	manyItems := `{"batch":[` + strings.TrimSuffix(strings.Repeat(`{"type":"track","event":"A","userId":"u"},`, gateway.SegmentMaxBatchEvents+1), ",") + `]}`
	for _, c := range []struct {
		name, path string
		body       []byte
		header     map[string]string
		want       int
	}{
		{"bad json", "/v1/batch", []byte(`{"batch":[`), basic(keyA), http.StatusBadRequest},
		{"not an object", "/v1/track", []byte(`[1,2]`), basic(keyA), http.StatusBadRequest},
		{"trailing data", "/v1/track", []byte(`{} {}`), basic(keyA), http.StatusBadRequest},
		{"batch not an array", "/v1/batch", []byte(`{"batch":{}}`), basic(keyA), http.StatusBadRequest},
		// No events: nothing to store, and no 200 for a key nobody checked.
		{"empty batch", "/v1/batch", []byte(`{"batch":[]}`), basic("cmk_ffffffffffffffffffffffffffffffff_nope"), http.StatusBadRequest},
		{"too many events", "/v1/batch", []byte(manyItems), basic(keyA), http.StatusBadRequest},
		{"bad gzip", "/v1/batch", badGzip, merge(basic(keyA), map[string]string{"Content-Encoding": "gzip"}), http.StatusBadRequest},
		{"over the decompressed cap", "/v1/batch", bomb.Bytes(), basic(keyA), http.StatusBadRequest},
		{"no key", "/v1/batch", []byte(ok), map[string]string{}, http.StatusUnauthorized},
		{"not an api key", "/v1/batch", []byte(ok), map[string]string{"Authorization": "Bearer eyJhbGciOi.x.y"}, http.StatusUnauthorized},
		{"unknown key", "/v1/batch", []byte(ok), basic("cmk_ffffffffffffffffffffffffffffffff_nope"), http.StatusUnauthorized},
		{"key without events.write", "/v1/batch", []byte(ok), basic(keyReadOnly), http.StatusForbidden},
		// A write key ships inside browsers and apps: one that could also read is refused.
		{"key with more than events.write", "/v1/batch", []byte(ok), basic(keyWide), http.StatusForbidden},
		{"get on an ingest path", "/v1/batch", nil, nil, http.StatusMethodNotAllowed},
	} {
		method := http.MethodPost
		if c.body == nil {
			method = http.MethodGet
		}
		req, _ := http.NewRequest(method, e.url+c.path, bytes.NewReader(c.body))
		for k, v := range c.header {
			req.Header.Set(k, v)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var answer struct {
			Message string `json:"message"`
		}
		if resp.StatusCode != c.want || json.Unmarshal(raw, &answer) != nil || answer.Message == "" {
			t.Errorf("%s: %d %s, want %d with a JSON message", c.name, resp.StatusCode, raw, c.want)
		}
	}

	if n := routeCount(t, e.reg, "POST /v1/batch"); n < 10 {
		t.Errorf("edge metrics count %v requests of route POST /v1/batch", n)
	}

	// Revoked: 401 from then on.
	if code, _, _ := e.post(t, "/v1/batch", strings.NewReader(ok), basic(keyB)); code != http.StatusOK {
		t.Fatalf("key B before revocation: %d", code)
	}
	e.keys.revoke(keyB)
	if code, _, answer := e.post(t, "/v1/batch", strings.NewReader(ok), basic(keyB)); code != http.StatusUnauthorized {
		t.Fatalf("revoked key: %d %s", code, answer)
	}

	// NATS down: 503 with Retry-After, never 200.
	e.ns.Shutdown()
	e.ns.WaitForShutdown()
	code, h, answer := e.post(t, "/v1/batch", strings.NewReader(`{"batch":[{"type":"track","event":"A","messageId":"late","userId":"u"}]}`), basic(keyA))
	if retry, _ := strconv.Atoi(h.Get("Retry-After")); code != http.StatusServiceUnavailable || retry < 1 {
		t.Fatalf("NATS down: %d %s Retry-After %q", code, answer, h.Get("Retry-After"))
	}
}

// Over the ingest rate limit: 429 with Retry-After; 503 when part of the batch was stored
// already, so the SDK resends all of it rather than dropping the rest.
func TestSegmentOverQuotaIs429(t *testing.T) {
	e := newSegmentEnv(t, &ingest.RateLimits{PerTenant: 1000, PerSource: 1})
	var code int
	var h http.Header
	for i := 0; i < 5 && code != http.StatusTooManyRequests; i++ {
		body := fmt.Sprintf(`{"batch":[{"type":"track","event":"A","messageId":"q-%d","userId":"u"}]}`, i)
		code, h, _ = e.post(t, "/v1/batch", strings.NewReader(body), basic(keyA))
	}
	if retry, _ := strconv.Atoi(h.Get("Retry-After")); code != http.StatusTooManyRequests || retry < 1 {
		t.Fatalf("over quota: %d Retry-After %q", code, h.Get("Retry-After"))
	}

	// A burst of 1,200 events: the first 1,000-event call of a 2,000-event batch is stored, the
	// second is over quota.
	e = newSegmentEnv(t, &ingest.RateLimits{PerTenant: 100000, PerSource: 600})
	items := make([]string, 2000)
	for i := range items {
		items[i] = fmt.Sprintf(`{"type":"track","event":"A","messageId":"p-%d","userId":"u"}`, i)
	}
	code, h, answer := e.post(t, "/v1/batch", strings.NewReader(`{"batch":[`+strings.Join(items, ",")+`]}`), basic(keyA))
	if retry, _ := strconv.Atoi(h.Get("Retry-After")); code != http.StatusServiceUnavailable || retry < 1 {
		t.Fatalf("partly stored batch: %d %s Retry-After %q", code, answer, h.Get("Retry-After"))
	}
	if n := len(e.stored(t)); n != 1000 {
		t.Fatalf("stored %d events, want the first call's 1,000", n)
	}
}

// A decompression bomb (1 GiB of zeros, about 1 MB gzipped) is refused with 400 after reading
// no more than the cap: the request does not allocate anything near its expanded size.
func TestSegmentDecompressionBombIsRefusedWithoutExpanding(t *testing.T) {
	e := newSegmentEnv(t, nil)
	// A gzip stream may hold several members one after another (readers take them as one
	// body): 1,024 copies of 1 MiB of zeros compressed once is a 1 GiB body, built quickly.
	var member bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&member, gzip.BestCompression)
	_, _ = zw.Write(make([]byte, 1<<20))
	_ = zw.Close()
	bomb := bytes.NewBuffer(nil)
	for range 1 << 10 {
		bomb.Write(member.Bytes())
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	code, _, answer := e.post(t, "/v1/batch", bytes.NewReader(bomb.Bytes()), merge(basic(keyA), map[string]string{"Content-Encoding": "gzip"}))
	runtime.ReadMemStats(&after)
	if code != http.StatusBadRequest || !strings.Contains(answer, "larger than") {
		t.Fatalf("bomb of %d bytes: %d %s", bomb.Len(), code, answer)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
		t.Fatalf("the request allocated %d MiB for a bomb of 1 GiB", alloc>>20)
	}
}

// The settings an SDK loads point it here; preflight follows the gateway's CORS list.
func TestSegmentSettingsAndPreflight(t *testing.T) {
	e := newSegmentEnv(t, nil)
	for _, path := range []string{"/v1/projects/" + keyA + "/settings", "/projects/" + keyA + "/settings", "/v1/projects/" + keyA + "/settings/"} {
		resp, err := noRedirect.Get(e.url + path)
		if err != nil {
			t.Fatal(err)
		}
		var s struct {
			Integrations map[string]struct {
				APIKey  string `json:"apiKey"`
				APIHost string `json:"apiHost"`
			} `json:"integrations"`
		}
		err = json.NewDecoder(resp.Body).Decode(&s)
		resp.Body.Close()
		host := strings.TrimPrefix(e.url, "http://")
		if err != nil || resp.StatusCode != http.StatusOK || s.Integrations["Segment.io"].APIHost != host+"/v1" || s.Integrations["Segment.io"].APIKey != keyA {
			t.Fatalf("%s: %d %+v %v", path, resp.StatusCode, s, err)
		}
	}
	req, _ := http.NewRequest(http.MethodOptions, e.url+"/v1/b", nil)
	req.Header.Set("Origin", "https://shop.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "content-type")
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "https://shop.example" {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
}

// A key writes only to its own tenant, whatever the body says.
func TestSegmentKeysWriteToTheirOwnTenant(t *testing.T) {
	e := newSegmentEnv(t, nil)
	for key, id := range map[string]string{keyA: "x-a", keyB: "x-b"} {
		body := fmt.Sprintf(`{"batch":[{"type":"track","event":"A","messageId":%q,"userId":"u","context":{"tenant_id":"tenant-b"}}],"tenant_id":"tenant-b"}`, id)
		if code, _, answer := e.post(t, "/v1/batch", strings.NewReader(body), basic(key)); code != http.StatusOK {
			t.Fatalf("%s: %d %s", id, code, answer)
		}
	}
	got := e.stored(t)
	if got["x-a"].GetTenantId() != "tenant-a" || got["x-b"].GetTenantId() != "tenant-b" {
		t.Fatalf("tenants: %v / %v", got["x-a"], got["x-b"])
	}
}

// A batch of 2,500 events (more than one ingest call takes) is stored whole before the 200.
func TestSegmentLargeBatchIsSplitIntoIngestCalls(t *testing.T) {
	e := newSegmentEnv(t, nil)
	items := make([]string, gateway.SegmentMaxBatchEvents)
	for i := range items {
		items[i] = fmt.Sprintf(`{"type":"track","event":"A","messageId":"l-%d","userId":"u"}`, i)
	}
	body := `{"batch":[` + strings.Join(items, ",") + `]}`
	if code, _, answer := e.post(t, "/v1/batch", bytes.NewReader(gzipped(t, body)), basic(keyA)); code != http.StatusOK || answer != success {
		t.Fatalf("%d %s", code, answer)
	}
	if got := e.stored(t); len(got) != gateway.SegmentMaxBatchEvents {
		t.Fatalf("stored %d events, want %d", len(got), gateway.SegmentMaxBatchEvents)
	}
}

// The Segment batch route against the REST route in front of a real ingest on JetStream (file
// storage, fsync always, as bench-ingest's pipeline): 100-event batches from concurrent
// callers, bodies built beforehand so the figures are the server side's. Events/s of the REST
// route with bench-ingest's events (no properties) is what the Segment route is held to
// (≥ 0.9×); REST-properties sends the Segment events' properties too.
// go test -run x -bench ThroughIngest ./gateway
func BenchmarkSegmentThroughIngest(b *testing.B) {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	segment := func(run string, call int) []byte {
		var buf bytes.Buffer
		buf.WriteString(`{"batch":[`)
		for j := range 100 {
			if j > 0 {
				buf.WriteByte(',')
			}
			fmt.Fprintf(&buf, `{"event":"impression","messageId":"%s-%d-%d","properties":{"campaign_id":"bench","variant":"a"},"timestamp":%q,"type":"track","userId":"user-%d"}`,
				run, call, j, now, j)
		}
		fmt.Fprintf(&buf, `],"sentAt":%q}`, now)
		return buf.Bytes()
	}
	restWith := func(properties string) func(run string, call int) []byte {
		return func(run string, call int) []byte {
			var buf bytes.Buffer
			buf.WriteString(`{"events":[`)
			for j := range 100 {
				if j > 0 {
					buf.WriteByte(',')
				}
				fmt.Fprintf(&buf, `{"eventId":"%s-%d-%d","type":"EVENT_TYPE_IMPRESSION","userId":"user-%d","campaignId":"bench","variant":"a","timestamp":%q%s}`,
					run, call, j, j, now, properties)
			}
			buf.WriteString(`]}`)
			return buf.Bytes()
		}
	}
	zw, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	zip := func(body []byte) []byte {
		var buf bytes.Buffer
		zw.Reset(&buf)
		_, _ = zw.Write(body)
		_ = zw.Close()
		return buf.Bytes()
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	for _, c := range []struct {
		name, path string
		body       func(run string, call int) []byte
		header     map[string]string
	}{
		{"REST", "/v1/events:batch", restWith(""), map[string]string{"Authorization": "Bearer " + keyA, "Content-Type": "application/json"}},
		// The same events as the Segment ones, properties included: what the Segment shape
		// costs ingest (a Struct an event to read, check and store) on either route.
		{"REST-properties", "/v1/events:batch", restWith(`,"properties":{"campaign_id":"bench","variant":"a"}`),
			map[string]string{"Authorization": "Bearer " + keyA, "Content-Type": "application/json"}},
		{"segment", "/v1/batch", segment, basic(keyA)},
		{"segment-gzip", "/v1/batch", func(run string, call int) []byte { return zip(segment(run, call)) }, merge(basic(keyA), map[string]string{"Content-Encoding": "gzip"})},
	} {
		b.Run(c.name, func(b *testing.B) {
			// Each its own ingest and stream: a stream that holds more costs more to append to.
			e := newSegmentEnv(b, &ingest.RateLimits{PerTenant: 1 << 30, PerSource: 1 << 30})
			// A few bodies sent over and over (ingest does not deduplicate; the writer would):
			// b.N bodies kept in memory would make the collector run less often than in a
			// server, and the more so the larger the bodies.
			run := c.name + strconv.FormatInt(time.Now().UnixNano(), 36)
			bodies := make([][]byte, 16)
			for i := range bodies {
				bodies[i] = c.body(run, i)
			}
			var next atomic.Int64
			b.SetParallelism(4) // 8 callers on 2 cores, as bench-ingest
			runtime.GC()        // not the setup's garbage in the figures
			cpu := processCPU()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest(http.MethodPost, e.url+c.path, bytes.NewReader(bodies[next.Add(1)%int64(len(bodies))]))
					for k, v := range c.header {
						req.Header.Set(k, v)
					}
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Errorf("%s: %d", c.path, resp.StatusCode)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
			// CPU time of the whole process (gateway, ingest, NATS) a batch: what the routes
			// cost, less disturbed than the time by other work on the machine.
			b.ReportMetric(float64((processCPU()-cpu).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

// processCPU is the CPU time the process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
