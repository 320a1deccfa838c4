package sendgrid_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/standin"
	sgstandin "github.com/campaignmesh/campaignmesh/internal/standin/sendgrid"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/sendgrid"
)

// The Email Activity filter by a custom argument finds exactly the message that carried it,
// under the id Send returned.
func TestFilterMessagesByCustomArg(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, c := start(t, sgstandin.Config{}, 5*time.Second)
	ids := map[string]string{}
	for _, ref := range []string{"101", "102", "103"} {
		m := mailTo("ref" + ref + "@example.com")
		m.CustomArgs = map[string]string{sendgrid.RefArg: ref}
		sent, err := c.Send(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		ids[ref] = sent.MessageID
	}
	q, err := sendgrid.CustomArgQuery(sendgrid.RefArg, "102")
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.FilterMessages(ctx, q, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].SendID() != ids["102"] || got[0].ToEmail != "ref102@example.com" || got[0].Status != "delivered" || got[0].LastEventTime.IsZero() {
		t.Fatalf("filter by ref 102: %+v (sent as %s)", got, ids["102"])
	}
	q, _ = sendgrid.CustomArgQuery(sendgrid.RefArg, "999")
	if got, err := c.FilterMessages(ctx, q, 10); err != nil || len(got) != 0 {
		t.Fatalf("unknown ref: %+v %v", got, err)
	}
	all, err := c.FilterMessages(ctx, "", 2)
	if err != nil || len(all) != 2 || all[0].SendID() != ids["103"] {
		t.Fatalf("newest two: %+v %v", all, err)
	}
	for _, bad := range [][2]string{{"cm_ref", `1" OR "1"="1`}, {"a'b", "1"}, {"", "1"}, {"cm_ref", `x\`}} {
		if _, err := sendgrid.CustomArgQuery(bad[0], bad[1]); err == nil {
			t.Errorf("query %q=%q accepted", bad[0], bad[1])
		}
	}
	if _, err := c.FilterMessages(ctx, `categories="x" OR 1`, 10); err == nil {
		t.Error("a query the stand-in does not serve was answered")
	} else {
		var e *sendgrid.Error
		if !errors.As(err, &e) || e.Status != 400 || len(e.Messages) == 0 {
			t.Errorf("bad query: %v", err)
		}
	}
}

// The port maps the client's outcomes onto the sender's classes, and Lookup finds a message
// that was accepted although its answer was a 500.
func TestProviderClassesAndLookup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sa, c := start(t, sgstandin.Config{}, 300*time.Millisecond)
	p := sendgrid.NewProvider(c, sendgrid.ProviderConfig{From: sendgrid.Address{Email: "news@shop.example"}})
	msg := func(ref, to string) delivery.Message {
		return delivery.Message{Ref: ref, To: to, Subject: "s", Text: "t"}
	}
	cases := []struct {
		fault standin.Fault
		ref   string
		class delivery.FailureClass
		sent  bool
	}{
		{standin.FaultRateLimit, "1", delivery.NotProcessedRetryable, false},
		{standin.FaultServerError, "2", delivery.MaybeProcessed, false},
		{standin.FaultServerErrorAfterSend, "3", delivery.MaybeProcessed, true},
		{standin.FaultHang, "4", delivery.MaybeProcessed, true},
	}
	for _, tc := range cases {
		sa.Faults().Inject(tc.fault, 1)
		to := "p" + tc.ref + "@example.com"
		_, err := p.Send(ctx, msg(tc.ref, to))
		class, se := delivery.Classify(err)
		if class != tc.class {
			t.Errorf("%s: class %v (%v), want %v", tc.fault, class, err, tc.class)
		}
		if tc.fault == standin.FaultRateLimit && se.RetryAfter <= 0 {
			t.Errorf("429 without a retry-after: %v", err)
		}
		found, id, err := p.Lookup(ctx, delivery.LookupRef{Ref: tc.ref, To: to, Since: time.Now().Add(-time.Minute)})
		if err != nil || found != tc.sent || (found && id == "") {
			t.Errorf("%s: lookup found=%v id=%q err=%v, want found=%v", tc.fault, found, id, err, tc.sent)
		}
	}
	if _, err := p.Send(ctx, msg("5", "not an address")); err == nil {
		t.Fatal("invalid address accepted")
	} else if class, _ := delivery.Classify(err); class != delivery.NotProcessedPermanent {
		t.Errorf("invalid address: %v", class)
	}
	id, err := p.Send(ctx, msg("6", "ok@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if found, got, _ := p.Lookup(ctx, delivery.LookupRef{Ref: "6", To: "ok@example.com"}); !found || got != id {
		t.Fatalf("lookup of a plain send: %v %q, want %q", found, got, id)
	}
}
