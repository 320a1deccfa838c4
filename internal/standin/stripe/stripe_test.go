package stripe_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	stripestandin "github.com/campaignmesh/campaignmesh/internal/standin/stripe"
)

const key = "sk_test_standin"

func newServer(t *testing.T, cfg stripestandin.Config) (*stripestandin.Server, string) {
	t.Helper()
	if cfg.APIKey == "" {
		cfg.APIKey = key
	}
	if cfg.WebhookSecret == "" {
		cfg.WebhookSecret = "whsec_test"
	}
	s, err := stripestandin.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(func() { s.Close(); srv.Close() })
	return s, srv.URL
}

func call(t *testing.T, method, u string, form url.Values, out any) int {
	t.Helper()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(form.Encode())
	} else if form != nil {
		u += "?" + form.Encode()
	}
	req, _ := http.NewRequest(method, u, body)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

func meterEvent(id string, value int, ts time.Time) url.Values {
	return url.Values{
		"event_name": {"cm_events_accepted"}, "identifier": {id}, "timestamp": {strconv.FormatInt(ts.Unix(), 10)},
		"payload[stripe_customer_id]": {"cus_1"}, "payload[value]": {strconv.Itoa(value)},
	}
}

func TestMeterEventsDeduplicateOnIdentifier(t *testing.T) {
	s, base := newServer(t, stripestandin.Config{})
	now := time.Now()
	if st := call(t, http.MethodPost, base+"/v1/billing/meter_events", meterEvent("id1", 5, now), nil); st != 200 {
		t.Fatalf("first: %d", st)
	}
	var e struct {
		Error struct{ Type, Message string }
	}
	if st := call(t, http.MethodPost, base+"/v1/billing/meter_events", meterEvent("id1", 5, now), &e); st != 400 ||
		e.Error.Type != "invalid_request_error" || e.Error.Message != "An event already exists with identifier id1." {
		t.Fatalf("repeat: %d %+v", st, e)
	}
	var out struct {
		Total    int            `json:"total"`
		Received map[string]int `json:"received"`
		Meters   map[string]string
	}
	if st := call(t, http.MethodGet, base+"/outbox", nil, &out); st != 200 || out.Total != 1 || out.Received["id1"] != 2 || out.Meters["cm_events_accepted"] == "" {
		t.Fatalf("outbox %d %+v", st, out)
	}
	if s.Total("cm_events_accepted", "cus_1") != 5 {
		t.Fatalf("total %d", s.Total("cm_events_accepted", "cus_1"))
	}
}

func TestMeterEventValidation(t *testing.T) {
	_, base := newServer(t, stripestandin.Config{})
	now := time.Now()
	for name, f := range map[string]url.Values{
		"old":       meterEvent("a", 1, now.Add(-36*24*time.Hour)),
		"future":    meterEvent("b", 1, now.Add(10*time.Minute)),
		"unknown":   func() url.Values { v := meterEvent("c", 1, now); v.Set("bogus", "1"); return v }(),
		"no value":  func() url.Values { v := meterEvent("d", 1, now); v.Del("payload[value]"); return v }(),
		"no name":   func() url.Values { v := meterEvent("e", 1, now); v.Del("event_name"); return v }(),
		"long id":   meterEvent(strings.Repeat("i", 101), 1, now),
		"not a num": func() url.Values { v := meterEvent("f", 1, now); v.Set("payload[value]", "x"); return v }(),
	} {
		if st := call(t, http.MethodPost, base+"/v1/billing/meter_events", f, nil); st != 400 {
			t.Errorf("%s: %d, want 400", name, st)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/billing/meter_events", strings.NewReader(meterEvent("g", 1, now).Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer wrong")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("bad key: %d", resp.StatusCode)
	}
}

func TestFaultsOverHTTP(t *testing.T) {
	s, base := newServer(t, stripestandin.Config{})
	resp, err := http.Post(base+"/faults", "application/json", strings.NewReader(`{"fault":"500-after-send","count":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if st := call(t, http.MethodPost, base+"/v1/billing/meter_events", meterEvent("x", 3, time.Now()), nil); st != 500 {
		t.Fatalf("after-send fault: %d", st)
	}
	if s.Accepted("x") != 1 {
		t.Fatal("the event answered 500 after accepting is in the outbox")
	}
}

func TestSummariesAndMeters(t *testing.T) {
	_, base := newServer(t, stripestandin.Config{Meters: map[string]string{"cm_events_accepted": "mtr_ea"}})
	day := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -2)
	call(t, http.MethodPost, base+"/v1/billing/meter_events", meterEvent("a", 2, day.Add(time.Hour)), nil)
	call(t, http.MethodPost, base+"/v1/billing/meter_events", meterEvent("b", 3, day.Add(26*time.Hour)), nil)
	var list struct {
		Data []struct {
			ID string `json:"id"`
		}
	}
	if st := call(t, http.MethodGet, base+"/v1/billing/meters", nil, &list); st != 200 || len(list.Data) != 1 || list.Data[0].ID != "mtr_ea" {
		t.Fatalf("meters %d %+v", st, list)
	}
	var sums struct {
		Data []struct {
			AggregatedValue float64 `json:"aggregated_value"`
			StartTime       int64   `json:"start_time"`
		}
		HasMore bool `json:"has_more"`
	}
	q := url.Values{"customer": {"cus_1"}, "start_time": {strconv.FormatInt(day.Unix(), 10)}, "end_time": {strconv.FormatInt(day.AddDate(0, 0, 2).Unix(), 10)}, "value_grouping_window": {"day"}}
	if st := call(t, http.MethodGet, base+"/v1/billing/meters/mtr_ea/event_summaries", q, &sums); st != 200 || len(sums.Data) != 2 || sums.Data[0].AggregatedValue != 2 || sums.Data[1].AggregatedValue != 3 {
		t.Fatalf("summaries %d %+v", st, sums)
	}
	q.Set("start_time", strconv.FormatInt(day.Unix()+30, 10))
	if st := call(t, http.MethodGet, base+"/v1/billing/meters/mtr_ea/event_summaries", q, nil); st != 400 {
		t.Fatalf("unaligned start: %d", st)
	}
}

// verify checks a Stripe-Signature header as Stripe documents it, independently of the
// stand-in's signer.
func verify(header, secret string, body []byte) bool {
	var ts, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "." + string(body)))
	want := hex.EncodeToString(mac.Sum(nil))
	sec, err := strconv.ParseInt(ts, 10, 64)
	return err == nil && hmac.Equal([]byte(sig), []byte(want)) && time.Since(time.Unix(sec, 0)) < 5*time.Minute
}

func TestWebhooksAreSigned(t *testing.T) {
	got := make(chan map[string]any, 2)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !verify(r.Header.Get("Stripe-Signature"), "whsec_abc", body) {
			http.Error(w, "bad signature", http.StatusBadRequest)
			return
		}
		var ev map[string]any
		_ = json.Unmarshal(body, &ev)
		got <- ev
	}))
	defer receiver.Close()
	s, base := newServer(t, stripestandin.Config{WebhookSecret: "whsec_abc", WebhookURL: receiver.URL})
	var res stripestandin.WebhookResult
	resp, err := http.Post(base+"/webhooks/send", "application/json", strings.NewReader(`{"type":"invoice.payment_failed","customer":"cus_9","id":"evt_fixed"}`))
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&res)
	resp.Body.Close()
	if res.Status != 200 || res.ID != "evt_fixed" {
		t.Fatalf("send: %+v", res)
	}
	ev := <-got
	obj := ev["data"].(map[string]any)["object"].(map[string]any)
	if ev["type"] != "invoice.payment_failed" || ev["id"] != "evt_fixed" || obj["customer"] != "cus_9" || obj["object"] != "invoice" {
		t.Fatalf("event %+v", ev)
	}
	// A receiver with another secret refuses it: the signature covers the secret.
	s.SetWebhookURL(receiver.URL)
	other, err := stripestandin.New(stripestandin.Config{APIKey: key, WebhookSecret: "whsec_other", WebhookURL: receiver.URL})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := other.SendWebhook(context.Background(), stripestandin.WebhookRequest{Type: "invoice.paid", Customer: "cus_9"})
	if err != nil || r2.Status != 400 {
		t.Fatalf("wrong secret: %+v %v, want 400", r2, err)
	}
}
