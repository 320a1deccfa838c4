package natsjs

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
)

// EncodeBatch is the message data of one accepted batch, in the compact form of
// ingestv1.AcceptedBatch: the tenant, source and received_at that every event shares are
// carried once, and a corrected_time equal to its default (the event's timestamp, or
// received_at without one) is left out. The stream's MaxBytes counts these bytes, not the
// compressed ones on disk, so every byte left out here is backlog the stream can hold.
// Events differing in one of those fields keep that field each. events is not modified.
func EncodeBatch(events []*ingestv1.AcceptedEvent) ([]byte, error) {
	b := &ingestv1.AcceptedBatch{Compact: true, Events: make([]*ingestv1.AcceptedEvent, len(events))}
	if len(events) > 0 {
		first := events[0]
		sameTenant, sameSource, sameReceived := true, true, true
		for _, e := range events[1:] {
			sameTenant = sameTenant && e.GetTenantId() == first.GetTenantId()
			sameSource = sameSource && e.GetSource() == first.GetSource()
			sameReceived = sameReceived && sameTime(e.GetReceivedAt(), first.GetReceivedAt())
		}
		if sameTenant {
			b.TenantId = first.GetTenantId()
		}
		if sameSource {
			b.Source = first.GetSource()
		}
		if sameReceived {
			b.ReceivedAt = first.GetReceivedAt()
		}
	}
	// One allocation for the copies: the caller's events are not touched.
	compact := make([]ingestv1.AcceptedEvent, len(events))
	for i, e := range events {
		c := &compact[i]
		c.Event = e.GetEvent()
		if b.TenantId == "" {
			c.TenantId = e.GetTenantId()
		}
		if b.Source == "" {
			c.Source = e.GetSource()
		}
		if b.ReceivedAt == nil {
			c.ReceivedAt = e.GetReceivedAt()
		}
		if corrected := e.GetCorrectedTime(); !sameTime(corrected, defaultCorrected(c.Event, e.GetReceivedAt())) {
			c.CorrectedTime = corrected
			if corrected == nil { // left out would mean the default; the zero time reads as nil does
				c.CorrectedTime = &timestamppb.Timestamp{}
			}
		}
		b.Events[i] = c
	}
	data, err := proto.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("encode batch: %w", err)
	}
	return data, nil
}

// DecodeBatch reads the message data of one accepted batch, compact (EncodeBatch) or in the
// form written before it (every event complete), and returns it with every event complete:
// the fields a compact batch carries once are put back into each event, and the batch-level
// fields are cleared. So a writer upgraded with a backlog in the stream reads both forms.
func DecodeBatch(data []byte) (*ingestv1.AcceptedBatch, error) {
	var b ingestv1.AcceptedBatch
	if err := proto.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("decode batch: %w", err)
	}
	if !b.GetCompact() {
		return &b, nil
	}
	for _, e := range b.GetEvents() {
		if e.GetTenantId() == "" {
			e.TenantId = b.GetTenantId()
		}
		if e.GetSource() == "" {
			e.Source = b.GetSource()
		}
		if e.GetReceivedAt() == nil {
			e.ReceivedAt = b.GetReceivedAt()
		}
		if e.GetCorrectedTime() == nil {
			e.CorrectedTime = defaultCorrected(e.GetEvent(), e.GetReceivedAt())
		}
	}
	b.Compact, b.TenantId, b.Source, b.ReceivedAt = false, "", "", nil
	return &b, nil
}

// defaultCorrected is the corrected time a compact batch leaves out: the client's timestamp
// when it was trusted as sent (the common case), the time received when the event had none.
func defaultCorrected(e *ingestv1.Event, receivedAt *timestamppb.Timestamp) *timestamppb.Timestamp {
	if ts := e.GetTimestamp(); ts != nil {
		return ts
	}
	return receivedAt
}

func sameTime(a, b *timestamppb.Timestamp) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.GetSeconds() == b.GetSeconds() && a.GetNanos() == b.GetNanos()
}
