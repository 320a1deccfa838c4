package natsjs_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/services/ingest"
	ingestjs "github.com/campaignmesh/campaignmesh/services/ingest/natsjs"
)

// The real deploy/nats.conf: ingest, as its own user, keeps a request's rejected events in the
// dead-letter stream as one message: a batch (natsjs.DecodeBatch reads it, so the tools and a
// data subject's erasure do) with the reason, the tenant's subject and one line per event.
func TestDeadLettersKeepRejectedEventsWithTheirReasons(t *testing.T) {
	srv, users := natstest.StartSecured(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, js, errs := natstest.ConnectAs(t, srv.ClientURL(), users.Ingest)
	if err := natsjs.EnsureStreams(ctx, js, natsjs.DefaultStream); err != nil {
		t.Fatal(err)
	}
	now := timestamppb.Now()
	events := []*ingestv1.AcceptedEvent{
		{TenantId: "t1", Source: "key-1", ReceivedAt: now, CorrectedTime: now, Event: &ingestv1.Event{EventId: "x", Type: ingestv1.EventType_EVENT_TYPE_CLICK}},
		{TenantId: "t1", Source: "key-1", ReceivedAt: now, CorrectedTime: now, Event: &ingestv1.Event{EventId: "y", Type: ingestv1.EventType_EVENT_TYPE_TRACK, UserId: "u1"}},
	}
	reasons := []string{"events[0].user_id: user_id or anonymous_id is required", "events[3].name: is required for track and conversion events"}
	if err := ingestjs.NewDeadLetters(js, 5*time.Second).Keep(ctx, "t1", events, reasons); err != nil {
		t.Fatalf("ingest keeps dead letters: %v (%v)", err, errs())
	}

	_, admin, _ := natstest.ConnectAs(t, srv.ClientURL(), users.Admin)
	stream, err := admin.Stream(ctx, natsjs.DeadLetterName)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetLastMsgForSubject(ctx, natsjs.DeadLetterSubj)
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.Header.Get(ingestjs.ReasonHeader); got != ingestjs.RejectedReason {
		t.Errorf("reason %q", got)
	}
	if tenant, _, ok := natsjs.ParseSubject(msg.Header.Get(ingestjs.SubjectHeader)); !ok || tenant != "t1" {
		t.Errorf("subject header %q names tenant %q", msg.Header.Get(ingestjs.SubjectHeader), tenant)
	}
	if got := msg.Header.Values(ingestjs.RejectedHeader); len(got) != 2 || got[0] != reasons[0] || got[1] != reasons[1] {
		t.Errorf("rejections %q, want %q", got, reasons)
	}
	b, err := natsjs.DecodeBatch(msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.GetEvents()) != 2 || b.GetEvents()[1].GetEvent().GetUserId() != "u1" || b.GetEvents()[0].GetTenantId() != "t1" || b.GetEvents()[0].GetSource() != "key-1" {
		t.Fatalf("dead letter holds %v", b.GetEvents())
	}
	if e := errs(); len(e) > 0 {
		t.Fatalf("permission errors: %v", e)
	}
}

// Dead letters that cannot be stored fail as a publish does: unavailable while NATS is away.
func TestDeadLettersUnavailable(t *testing.T) {
	url := natstest.Start(t)
	js := streamOf(t, url, natsjs.DefaultStream)
	if err := js.DeleteStream(context.Background(), natsjs.DeadLetterName); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatal(err)
	}
	err := ingestjs.NewDeadLetters(js, time.Second).Keep(context.Background(), "t1", batch("t1", "x"), []string{"events[0]: is empty"})
	if !errors.Is(err, ingest.ErrStreamUnavailable) {
		t.Fatalf("Keep without a dead-letter stream = %v, want ErrStreamUnavailable", err)
	}
}
