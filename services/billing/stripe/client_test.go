package stripe_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/standin"
	stripestandin "github.com/campaignmesh/campaignmesh/internal/standin/stripe"
	"github.com/campaignmesh/campaignmesh/services/billing/stripe"
)

const testKey = "sk_test_client_key_0123456789"

// newFake serves the Stripe stand-in over real HTTP and returns it with a client of it.
func newFake(t *testing.T, timeout time.Duration, meters map[string]string) (*stripestandin.Server, *stripe.Client) {
	t.Helper()
	fake, err := stripestandin.New(stripestandin.Config{APIKey: testKey, WebhookSecret: "whsec_test", Meters: meters})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(fake)
	t.Cleanup(func() { fake.Close(); srv.Close() })
	c, err := stripe.New(stripe.Config{BaseURL: srv.URL, APIKey: testKey, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return fake, c
}

func event(id string, value int64) stripe.MeterEvent {
	return stripe.MeterEvent{EventName: "cm_events_accepted", CustomerID: "cus_A", Value: value, Identifier: id, Timestamp: time.Now().Add(-time.Hour)}
}

func TestReportMeterEventSendsOnce(t *testing.T) {
	fake, c := newFake(t, 5*time.Second, nil)
	e := event("cm_1", 42)
	ack, err := c.ReportMeterEvent(context.Background(), e)
	if err != nil || ack.Duplicate {
		t.Fatalf("first report: ack=%+v err=%v", ack, err)
	}
	// The same identifier again (a retry whose first answer was lost) is an ack, not an
	// error, and Stripe counts it once.
	ack, err = c.ReportMeterEvent(context.Background(), e)
	if err != nil || !ack.Duplicate {
		t.Fatalf("repeat: ack=%+v err=%v, want a duplicate ack", ack, err)
	}
	if got := fake.Total("cm_events_accepted", "cus_A"); got != 42 {
		t.Fatalf("total %d, want 42", got)
	}
	if fake.Received("cm_1") != 2 || fake.Accepted("cm_1") != 1 {
		t.Fatalf("received %d accepted %d, want 2 and 1", fake.Received("cm_1"), fake.Accepted("cm_1"))
	}
	evs := fake.Events()
	if len(evs) != 1 || evs[0].Customer != "cus_A" || evs[0].Value != 42 || evs[0].EventName != "cm_events_accepted" ||
		evs[0].Timestamp.Unix() != e.Timestamp.Unix() {
		t.Fatalf("events %+v", evs)
	}
}

func TestReportMeterEventClassifiesFailures(t *testing.T) {
	for _, tc := range []struct {
		fault     standin.Fault
		status    int
		accepted  int
		retryable bool
	}{
		{standin.FaultRateLimit, 429, 0, true},
		{standin.FaultServerError, 500, 0, true},
		{standin.FaultServerErrorAfterSend, 500, 1, true},
		{standin.FaultHang, 0, 1, true},
	} {
		t.Run(string(tc.fault), func(t *testing.T) {
			fake, c := newFake(t, 300*time.Millisecond, nil)
			fake.Faults().Inject(tc.fault, 1)
			_, err := c.ReportMeterEvent(context.Background(), event("cm_f", 5))
			var se *stripe.Error
			if !errors.As(err, &se) || se.Status != tc.status || stripe.Retryable(err) != tc.retryable {
				t.Fatalf("err %v, want status %d retryable %v", err, tc.status, tc.retryable)
			}
			if tc.fault == standin.FaultHang && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("hang: %v, want a timeout", err)
			}
			if fake.Accepted("cm_f") != tc.accepted {
				t.Fatalf("accepted %d, want %d", fake.Accepted("cm_f"), tc.accepted)
			}
			// The retry with the same identifier lands once in every case.
			if _, err := c.ReportMeterEvent(context.Background(), event("cm_f", 5)); err != nil {
				t.Fatalf("retry: %v", err)
			}
			if fake.Accepted("cm_f") != 1 || fake.Total("cm_events_accepted", "cus_A") != 5 {
				t.Fatalf("after retry: accepted %d total %d", fake.Accepted("cm_f"), fake.Total("cm_events_accepted", "cus_A"))
			}
		})
	}
}

func TestReportMeterEventPermanentFailures(t *testing.T) {
	fake, c := newFake(t, 5*time.Second, nil)
	bad, err := stripe.New(stripe.Config{BaseURL: strings.TrimSuffix(clientURL(t, c), "/"), APIKey: "sk_test_wrong_secret_value"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.ReportMeterEvent(context.Background(), event("cm_k", 1))
	if !stripe.Permanent(err) || strings.Contains(err.Error(), "sk_test_wrong_secret_value") || !strings.Contains(err.Error(), "401") {
		t.Fatalf("bad key: %v, want a permanent 401 without the key", err)
	}
	now := time.Now()
	for name, e := range map[string]stripe.MeterEvent{
		"too old":       {EventName: "cm_x", CustomerID: "cus_A", Value: 1, Identifier: "cm_old", Timestamp: now.Add(-stripe.MaxEventAge - time.Minute)},
		"future":        {EventName: "cm_x", CustomerID: "cus_A", Value: 1, Identifier: "cm_future", Timestamp: now.Add(stripe.MaxEventFuture + time.Minute)},
		"no identifier": {EventName: "cm_x", CustomerID: "cus_A", Value: 1, Timestamp: now},
		"long id":       {EventName: "cm_x", CustomerID: "cus_A", Value: 1, Identifier: strings.Repeat("i", 101), Timestamp: now},
		"no customer":   {EventName: "cm_x", Value: 1, Identifier: "cm_nc", Timestamp: now},
		"negative":      {EventName: "cm_x", CustomerID: "cus_A", Value: -1, Identifier: "cm_neg", Timestamp: now},
	} {
		if _, err := c.ReportMeterEvent(context.Background(), e); !stripe.Permanent(err) {
			t.Errorf("%s: %v, want a permanent error", name, err)
		}
	}
	if n := len(fake.Events()); n != 0 {
		t.Fatalf("%d events reached the stand-in, want none (refused before sending)", n)
	}
	// The limits are inclusive: 100 characters pass.
	_, err = c.ReportMeterEvent(context.Background(), stripe.MeterEvent{EventName: strings.Repeat("n", 100), CustomerID: "cus_A", Value: 1, Identifier: strings.Repeat("i", 100), Timestamp: now})
	if err != nil {
		t.Fatalf("100-character names are allowed: %v", err)
	}
}

// clientURL recovers the base URL from the client's String (the test's server).
func clientURL(t *testing.T, c *stripe.Client) string {
	t.Helper()
	u, ok := strings.CutPrefix(c.String(), "stripe client for ")
	if !ok {
		t.Fatalf("client string %q", c.String())
	}
	return u
}

func TestConnectionFailureIsRetryable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, err := stripe.New(stripe.Config{BaseURL: "http://" + addr, APIKey: testKey, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ReportMeterEvent(context.Background(), event("cm_c", 1))
	if !stripe.Retryable(err) || strings.Contains(err.Error(), addr) {
		t.Fatalf("err %v, want retryable without the address", err)
	}
}

func TestDuplicateNeedsOurIdentifier(t *testing.T) {
	// A 400 saying some other identifier exists is not an ack of ours.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":{"type":"invalid_request_error","message":"An event already exists with identifier someone_else."}}`)
	}))
	defer srv.Close()
	c, err := stripe.New(stripe.Config{BaseURL: srv.URL, APIKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReportMeterEvent(context.Background(), event("cm_mine", 1)); !stripe.Permanent(err) {
		t.Fatalf("err %v, want permanent", err)
	}
}

func TestListMetersPaginates(t *testing.T) {
	meters := map[string]string{}
	for i := range 230 {
		meters[fmt.Sprintf("cm_m%03d", i)] = fmt.Sprintf("mtr_%03d", i)
	}
	_, c := newFake(t, 5*time.Second, meters)
	ids, err := c.MeterIDs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 230 || ids["cm_m007"] != "mtr_007" || ids["cm_m229"] != "mtr_229" {
		t.Fatalf("%d meters, cm_m007=%q", len(ids), ids["cm_m007"])
	}
}

func TestMeterEventSummariesPerDay(t *testing.T) {
	_, c := newFake(t, 5*time.Second, map[string]string{"cm_events_accepted": "mtr_ea"})
	day := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -3)
	for i, at := range []time.Time{day.Add(time.Hour), day.Add(23 * time.Hour), day.Add(25 * time.Hour)} {
		e := event(fmt.Sprintf("cm_s%d", i), int64(10*(i+1)))
		e.Timestamp = at
		if _, err := c.ReportMeterEvent(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	other := event("cm_other", 1000)
	other.CustomerID = "cus_B"
	if _, err := c.ReportMeterEvent(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	sums, err := c.MeterEventSummaries(context.Background(), "mtr_ea", "cus_A", day, day.AddDate(0, 0, 3))
	if err != nil {
		t.Fatal(err)
	}
	if len(sums) != 3 || sums[0].Value != 30 || sums[1].Value != 30 || sums[2].Value != 0 || !sums[1].Start.Equal(day.AddDate(0, 0, 1)) {
		t.Fatalf("summaries %+v", sums)
	}
	if _, err := c.MeterEventSummaries(context.Background(), "mtr_ea", "cus_A", day.Add(time.Hour), day.AddDate(0, 0, 1)); !stripe.Permanent(err) {
		t.Fatalf("unaligned range: %v, want permanent", err)
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	cfg := stripe.Config{APIKey: "sk_live_do_not_print"}
	for _, s := range []string{fmt.Sprintf("%v %+v %#v %s", cfg, cfg, cfg, cfg.APIKey)} {
		if strings.Contains(s, "do_not_print") {
			t.Fatalf("secret printed: %s", s)
		}
	}
}
