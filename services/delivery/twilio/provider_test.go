package twilio_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/standin"
	twstandin "github.com/campaignmesh/campaignmesh/internal/standin/twilio"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/twilio"
)

// The port maps the client's outcomes onto the sender's classes, marks every body with the
// ledger reference, and Lookup finds a message created although its answer was lost.
func TestProviderClassesAndLookup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sa, base := startStandIn(t, twstandin.Config{})
	p, err := twilio.NewProvider(newClient(t, base, 300*time.Millisecond), twilio.ProviderConfig{From: "+15550001111", StatusCallback: "https://hooks.example/twilio?x=1"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		fault standin.Fault
		ref   string
		class delivery.FailureClass
		sent  bool
	}{
		{standin.FaultRateLimit, "11", delivery.NotProcessedRetryable, false},
		{standin.FaultServerError, "12", delivery.MaybeProcessed, false},
		{standin.FaultServerErrorAfterSend, "13", delivery.MaybeProcessed, true},
		{standin.FaultHang, "14", delivery.MaybeProcessed, true},
	}
	since := time.Now()
	for _, tc := range cases {
		sa.Faults().Inject(tc.fault, 1)
		to := "+1555000" + tc.ref + "00"
		_, err := p.Send(ctx, delivery.Message{Ref: tc.ref, To: to, Text: "Sale today"})
		if class, _ := delivery.Classify(err); class != tc.class {
			t.Errorf("%s: class %v (%v), want %v", tc.fault, class, err, tc.class)
		}
		found, sid, err := p.Lookup(ctx, delivery.LookupRef{Ref: tc.ref, To: to, Since: since})
		if err != nil || found != tc.sent || (found && !strings.HasPrefix(sid, "SM")) {
			t.Errorf("%s: lookup found=%v sid=%q err=%v, want found=%v", tc.fault, found, sid, err, tc.sent)
		}
	}
	_, err = p.Send(ctx, delivery.Message{Ref: "15", To: twstandin.InvalidNumber, Text: "x"})
	class, se := delivery.Classify(err)
	if class != delivery.NotProcessedPermanent || strings.Contains(se.Reason, twstandin.InvalidNumber) {
		t.Errorf("invalid number: %v %q (the reason must not quote the number)", class, se.Reason)
	}
	// Another message to the same number, and a reference that is a suffix of another's,
	// are not mistaken for the row's message.
	to := "+15550009900"
	sid, err := p.Send(ctx, delivery.Message{Ref: "112", To: to, Text: "Sale today"})
	if err != nil {
		t.Fatal(err)
	}
	if found, _, _ := p.Lookup(ctx, delivery.LookupRef{Ref: "12", To: to, Since: since}); found {
		t.Fatal("ref 12 matched the message of ref 112")
	}
	if found, got, _ := p.Lookup(ctx, delivery.LookupRef{Ref: "112", To: to, Since: since}); !found || got != sid {
		t.Fatalf("lookup of a plain send: %v %q, want %q", found, got, sid)
	}
	m := sa.Messages()[len(sa.Messages())-1]
	if m.Body != "Sale today #112" {
		t.Fatalf("body %q", m.Body)
	}
	cb, _ := url.Parse(m.StatusCallback)
	if cb.Query().Get(twilio.RefParam) != "112" || cb.Query().Get("x") != "1" {
		t.Fatalf("status callback %q", m.StatusCallback)
	}
}
