package ingest

import (
	"context"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
)

// IdentifyPublisher stores a copy of a batch's identify events where delivery reads them to
// keep its contacts current (the identify stream): the domain's port, implemented on
// JetStream by services/ingest/natsjs. The event stream is the analytics writers' work queue
// and no other service reads it, hence the copy.
type IdentifyPublisher interface {
	// PublishIdentify stores events (identify events of one batch of tenant, as stored in the
	// event stream) under msgID and returns only once they are stored; the same msgID again is
	// a duplicate the stream drops. Errors wrap ErrStreamUnavailable when it is one.
	PublishIdentify(ctx context.Context, tenant, msgID string, events []*ingestv1.AcceptedEvent) error
}

// WithIdentify makes the intake copy each accepted batch's identify events through p, after
// the batch is stored in the event stream (Service.Ingest).
func (s *Service) WithIdentify(p IdentifyPublisher) *Service {
	s.identify = p
	return s
}

// copyIdentify copies the identify events of the batch just stored as batchID, if any: the
// events as published (suppressed subjects' already dropped, the tenant's policy applied), so
// delivery never sees more than analytics does.
//
// A failure fails the request (STREAM_UNAVAILABLE, nothing told to tails) rather than being
// retried here or dropped: the client resends the batch, the event stream drops its repeat by
// message id (<batch id>.<p>, or the writer by event id when it went out merged), and the copy
// goes again under the same message id (<batch id>.identify), dropped in turn if the first
// attempt had in fact been stored. So an event is neither lost for delivery nor stored twice
// in analytics. Retrying inside the request would only hold the caller longer against the
// same outage, and a copy retried in the background would be lost with the process.
func (s *Service) copyIdentify(ctx context.Context, tenant, batchID string, batch []*ingestv1.AcceptedEvent) error {
	if s.identify == nil {
		return nil
	}
	var events []*ingestv1.AcceptedEvent
	for _, e := range batch {
		if e.GetEvent().GetType() == ingestv1.EventType_EVENT_TYPE_IDENTIFY {
			events = append(events, e)
		}
	}
	if len(events) == 0 {
		return nil
	}
	return s.identify.PublishIdentify(ctx, tenant, batchID+".identify", events)
}
