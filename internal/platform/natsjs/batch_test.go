package natsjs_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/s2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/services/ingest"
)

// benchTenant and benchSource are the bench's (cmd/bench-ingest signs its token for tenant
// "bench", subject "bench"); uuidTenant and uuidKey are the shape of real ids.
const (
	benchTenant, benchSource = "bench", "bench"
	uuidTenant, uuidKey      = "3f1c2b9e-8a7d-4c1e-9b2a-5d6e7f8a9b0c", "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d"
)

// accepted is what ingest publishes for one request shaped like cmd/bench-ingest's request():
// 100 impressions stamped by the client a moment before ingest received them. Its times depend
// on call only, so sizes measured are the same from run to run.
func accepted(tb testing.TB, tenant, source string, call int) []*ingestv1.AcceptedEvent {
	tb.Helper()
	received := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC).Add(time.Duration(call) * 10_517_317 * time.Nanosecond)
	sent := timestamppb.New(received.Add(-3 * time.Millisecond))
	events := make([]*ingestv1.Event, 100)
	for j := range events {
		events[j] = &ingestv1.Event{EventId: fmt.Sprintf("s-%d-%d-%d", call%16, call, j), Type: ingestv1.EventType_EVENT_TYPE_IMPRESSION,
			UserId: fmt.Sprintf("user-%d", j), CampaignId: "bench", Variant: "a", Timestamp: sent}
	}
	res, err := ingest.DefaultLimits.Prepare(events, tenant, source, received, 0)
	if err != nil || len(res.Accepted) != len(events) {
		tb.Fatalf("prepare: %v (%d accepted)", err, len(res.Accepted))
	}
	return res.Accepted
}

// fullForm is a batch as ingest wrote it before the compact form: every event complete.
func fullForm(tb testing.TB, events []*ingestv1.AcceptedEvent) []byte {
	tb.Helper()
	data, err := proto.Marshal(&ingestv1.AcceptedBatch{Events: events})
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

func ts(sec int64, nanos int32) *timestamppb.Timestamp {
	return &timestamppb.Timestamp{Seconds: sec, Nanos: nanos}
}

// Whatever the batch holds, DecodeBatch gives back exactly the events EncodeBatch was given,
// and EncodeBatch leaves them untouched; batches in the form written before decode as they are.
func TestBatchEncodingRoundTrips(t *testing.T) {
	ev := func(id string, t *timestamppb.Timestamp) *ingestv1.Event {
		return &ingestv1.Event{EventId: id, Type: ingestv1.EventType_EVENT_TYPE_CLICK, UserId: "u", Timestamp: t}
	}
	recv := ts(1_700_000_000, 5)
	for _, tc := range []struct {
		name   string
		events []*ingestv1.AcceptedEvent
	}{
		{"as ingest publishes the bench's requests", accepted(t, benchTenant, benchSource, 1)},
		{"real ids", accepted(t, uuidTenant, uuidKey, 2)},
		{"corrected times of every kind", []*ingestv1.AcceptedEvent{
			// no client timestamp: corrected is the time received
			{Event: ev("a", nil), TenantId: "t", Source: "k", ReceivedAt: recv, CorrectedTime: recv},
			// client clock trusted: corrected is the timestamp
			{Event: ev("b", ts(1_699_999_990, 7)), TenantId: "t", Source: "k", ReceivedAt: recv, CorrectedTime: ts(1_699_999_990, 7)},
			// skew corrected
			{Event: ev("c", ts(1_699_990_000, 0)), TenantId: "t", Source: "k", ReceivedAt: recv, CorrectedTime: ts(1_699_999_000, 1)},
			// future clamped to the time received although the event has a timestamp
			{Event: ev("d", ts(1_800_000_000, 0)), TenantId: "t", Source: "k", ReceivedAt: recv, CorrectedTime: recv},
			// the zero time (what a missing one reads as)
			{Event: ev("e", ts(1_699_999_990, 7)), TenantId: "t", Source: "k", ReceivedAt: recv, CorrectedTime: &timestamppb.Timestamp{}},
		}},
		{"fields that differ between events stay with each event", []*ingestv1.AcceptedEvent{
			{Event: ev("a", nil), TenantId: "t1", Source: "k1", ReceivedAt: recv, CorrectedTime: recv},
			{Event: ev("b", nil), TenantId: "t2", Source: "", ReceivedAt: ts(1_700_000_001, 0), CorrectedTime: ts(1_700_000_001, 0)},
			{Event: ev("c", nil), TenantId: "", Source: "k1"},
		}},
		{"no source, no time received", []*ingestv1.AcceptedEvent{
			{Event: ev("a", nil), TenantId: "t"}, {Event: ev("b", ts(5, 0)), TenantId: "t", CorrectedTime: ts(5, 0)},
		}},
		{"one event", []*ingestv1.AcceptedEvent{{Event: ev("a", nil), TenantId: "t", Source: "k", ReceivedAt: recv, CorrectedTime: recv}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := &ingestv1.AcceptedBatch{Events: tc.events}
			before := proto.Clone(want)
			data, err := natsjs.EncodeBatch(tc.events)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(before, want, protocmp.Transform()); d != "" {
				t.Fatalf("EncodeBatch changed its events (-before +after):\n%s", d)
			}
			got, err := natsjs.DecodeBatch(data)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
				t.Fatalf("compact batch decoded (-want +got):\n%s", d)
			}
			old, err := natsjs.DecodeBatch(fullForm(t, tc.events))
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(want, old, protocmp.Transform()); d != "" {
				t.Fatalf("batch in the old form decoded (-want +got):\n%s", d)
			}
			// Compact but not compressed: as ingest wrote batches before S2.
			if len(data) == 0 || data[0] != 0 {
				t.Fatalf("encoded batch begins with %x, want the compressed form's zero byte", data[:min(len(data), 1)])
			}
			plain, err := s2.Decode(nil, data[1:])
			if err != nil {
				t.Fatal(err)
			}
			uncompressed, err := natsjs.DecodeBatch(plain)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(want, uncompressed, protocmp.Transform()); d != "" {
				t.Fatalf("uncompressed compact batch decoded (-want +got):\n%s", d)
			}
		})
	}
	// An event without a corrected time (ingest always sets one) still reads as the zero time,
	// not as its timestamp.
	data, err := natsjs.EncodeBatch([]*ingestv1.AcceptedEvent{{Event: ev("a", ts(1_699_999_990, 7)), TenantId: "t", ReceivedAt: recv}})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := natsjs.DecodeBatch(data); err != nil || got.GetEvents()[0].GetCorrectedTime().AsTime().Unix() != 0 {
		t.Fatalf("missing corrected time decoded as %v (%v), want the zero time", got.GetEvents()[0].GetCorrectedTime(), err)
	}
	for _, garbage := range [][]byte{[]byte("not a batch"), {0, 0xff, 0xff, 0xff, 0xff, 0x7f}, {0, 10, 1, 2}} {
		if _, err := natsjs.DecodeBatch(garbage); err == nil {
			t.Fatalf("DecodeBatch of garbage %q: no error", garbage)
		}
	}
}

// The compact form carries what the events of a request share once: a batch shaped like the
// bench's takes at most 60% of the bytes of the old form (this is what the stream's MaxBytes
// counts), and with real ids the per-event cost no longer grows with their length.
func TestCompactBatchIsSmaller(t *testing.T) {
	for _, tc := range []struct{ tenant, source string }{{benchTenant, benchSource}, {uuidTenant, uuidKey}} {
		events := accepted(t, tc.tenant, tc.source, 12345)
		full := len(fullForm(t, events))
		compact, err := natsjs.EncodeBatch(events)
		if err != nil {
			t.Fatal(err)
		}
		if len(compact)*10 > full*6 {
			t.Errorf("tenant %q: compact batch %d bytes, old form %d: want at most 60%%", tc.tenant, len(compact), full)
		}
	}
	bench, _ := natsjs.EncodeBatch(accepted(t, benchTenant, benchSource, 1))
	uuid, _ := natsjs.EncodeBatch(accepted(t, uuidTenant, uuidKey, 1))
	if d := len(uuid) - len(bench); d > 2*(len(uuidTenant)+len(uuidKey)) {
		t.Errorf("36-character ids add %d bytes to a 100-event batch, want them once a batch", d)
	}
}
