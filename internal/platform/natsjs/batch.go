package natsjs

import (
	"fmt"

	"github.com/klauspost/compress/s2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
)

// EncodeBatch is the message data of one accepted batch, S2-compressed, in the compact form of
// ingestv1.AcceptedBatch: the tenant, source and received_at that every event shares are
// carried once, and a corrected_time equal to its default (the event's timestamp, or
// received_at without one) is left out. The stream's MaxBytes counts these bytes, not those of
// the stream's own compressed blocks on disk, so every byte left out here is backlog the stream can hold.
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
	// S2 block, after a zero byte: no encoded AcceptedBatch begins with one (a field tag is
	// never 0), so DecodeBatch tells the forms apart from the data alone and a reader needs
	// no header. Events of a batch repeat their types, campaigns, variants and id prefixes:
	// the bench's compress to a fifth or less, and MaxBytes counts the compressed bytes.
	out := make([]byte, 1, 1+s2.MaxEncodedLen(len(data)))
	out = append(out, s2.Encode(out[1:cap(out)], data)...)
	return out, nil
}

// maxBatchBytes bounds a batch's decoded size: far above what ingest writes (a message is at
// most 2 MiB, a request 500 KiB), so a corrupt length cannot make the reader allocate more.
const maxBatchBytes = 64 << 20

// DecodeBatch reads the message data of one accepted batch, compact and compressed
// (EncodeBatch), or in a form written before: compact uncompressed, or every event complete.
// It returns the batch with every event complete:
// the fields a compact batch carries once are put back into each event, and the batch-level
// fields are cleared. So a writer upgraded with a backlog in the stream reads both forms.
func DecodeBatch(data []byte) (*ingestv1.AcceptedBatch, error) {
	if len(data) > 0 && data[0] == 0 {
		n, err := s2.DecodedLen(data[1:])
		if err != nil || n > maxBatchBytes {
			return nil, fmt.Errorf("decode batch: compressed data: length %d: %v", n, err)
		}
		if data, err = s2.Decode(make([]byte, n), data[1:]); err != nil {
			return nil, fmt.Errorf("decode batch: %w", err)
		}
	}
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
