package natsjs

import (
	"context"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/services/ingest"
)

// Dead-letter headers of a request's rejected events (the analytics writer's dead letters
// carry ReasonHeader too, and SubjectHeader).
const (
	// ReasonHeader says why the message is a dead letter: RejectedReason for these.
	ReasonHeader = "Cm-Reason"
	// RejectedHeader is repeated, once per event in the batch's order: "<field>: <reason>".
	RejectedHeader = "Cm-Rejected"
	// SubjectHeader names the tenant's event subject (events.<tenant>), as the writer's dead
	// letters do, so an erasure finds the tenant's dead letters by it too.
	SubjectHeader = "Cm-Subject"
	// RejectedReason is the ReasonHeader of rejected events.
	RejectedReason = "rejected at ingest"
)

// DeadLetters keeps requests' rejected events in the dead-letter stream (natsjs.DeadLetterName,
// 30 days): one message a request, the events encoded like an accepted batch (so the tools and
// the erasure of a data subject that read the stream read them too) with one RejectedHeader
// per event. It implements the domain's ingest.DeadLetters.
type DeadLetters struct {
	js      jetstream.JetStream
	timeout time.Duration
}

var _ ingest.DeadLetters = (*DeadLetters)(nil)

// NewDeadLetters returns the dead letters kept through js, each publish bounded by timeout.
func NewDeadLetters(js jetstream.JetStream, timeout time.Duration) *DeadLetters {
	return &DeadLetters{js: js, timeout: timeout}
}

// Keep stores events (the rejected events of one request of tenant) with their reasons and
// returns once the stream has them.
func (d *DeadLetters) Keep(ctx context.Context, tenant string, events []*ingestv1.AcceptedEvent, reasons []string) error {
	data, err := natsjs.EncodeBatch(events)
	if err != nil {
		return err
	}
	hdr := nats.Header{}
	hdr.Set(ReasonHeader, RejectedReason)
	hdr.Set(SubjectHeader, natsjs.SubjectPrefix+tenant)
	for _, r := range reasons {
		hdr.Add(RejectedHeader, r)
	}
	otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(http.Header(hdr)))
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	if _, err := natsjs.PublishDeadLetter(ctx, d.js, data, hdr); err != nil {
		return classify(err)
	}
	return nil
}
