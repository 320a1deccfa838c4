package writer_test

import (
	"cmp"
	"slices"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
)

// acceptedEvents are events of tenant as ingest accepts them, one of each kind of corrected
// time: the client's clock trusted, no client timestamp, the clock corrected for skew.
func acceptedEvents(tenant, prefix string) []*ingestv1.AcceptedEvent {
	received := timestamppb.New(time.Now().Truncate(time.Microsecond))
	sent := timestamppb.New(received.AsTime().Add(-3 * time.Millisecond))
	skewed := timestamppb.New(received.AsTime().Add(-2 * time.Hour))
	ev := func(id string, ts *timestamppb.Timestamp) *ingestv1.Event {
		return &ingestv1.Event{EventId: prefix + id, Type: ingestv1.EventType_EVENT_TYPE_CLICK, UserId: "u", CampaignId: "c1", Timestamp: ts}
	}
	return []*ingestv1.AcceptedEvent{
		{Event: ev("trusted", sent), TenantId: tenant, Source: "key-1", ReceivedAt: received, CorrectedTime: sent},
		{Event: ev("untimed", nil), TenantId: tenant, Source: "key-1", ReceivedAt: received, CorrectedTime: received},
		{Event: ev("skewed", skewed), TenantId: tenant, Source: "key-1", ReceivedAt: received, CorrectedTime: timestamppb.New(received.AsTime().Add(-time.Second))},
	}
}

// A writer upgraded while the stream holds batches an older ingest wrote (every event
// complete) stores them and the compact ones alike, every field as ingest accepted it; a
// compact batch on another tenant's subject is dead-lettered like one in the old form.
func TestBatchesInBothFormsLandComplete(t *testing.T) {
	s := newStreams(t)
	older, compact := acceptedEvents("t1", "old-"), acceptedEvents("t1", "new-")
	data, err := proto.Marshal(&ingestv1.AcceptedBatch{Events: older})
	if err != nil {
		t.Fatal(err)
	}
	s.publishRaw(t, "t1", "older", data)
	if data, err = natsjs.EncodeBatch(compact); err != nil {
		t.Fatal(err)
	}
	s.publishRaw(t, "t1", "compact", data)
	if data, err = natsjs.EncodeBatch(acceptedEvents("tenant-a", "forged-")); err != nil {
		t.Fatal(err)
	}
	s.publishRaw(t, "tenant-b", "forged", data)

	m := newMemSink(s)
	want := slices.Concat(older, compact)
	cancel, result := s.run(t, m, quick)
	meshtest.Eventually(t, 20*time.Second, func() bool {
		return s.inStream(t) == 0 && len(m.counts()) >= len(want)
	}, "the writer did not store and acknowledge every batch")
	stopped(t, cancel, result)

	m.mu.Lock()
	var got []*ingestv1.AcceptedEvent
	for _, r := range m.stored {
		got = append(got, r.Event)
	}
	m.mu.Unlock()
	byID := func(a, b *ingestv1.AcceptedEvent) int {
		return cmp.Compare(a.GetEvent().GetEventId(), b.GetEvent().GetEventId())
	}
	slices.SortFunc(got, byID)
	slices.SortFunc(want, byID)
	if d := gocmp.Diff(want, got, protocmp.Transform()); d != "" {
		t.Fatalf("stored events (-published +stored):\n%s", d)
	}
	if dead := s.deadLetters(t); len(dead) != 1 || !strings.Contains(dead[0], `tenant mismatch: event 0 has tenant "tenant-a" on subject "events.tenant-b"`) {
		t.Fatalf("dead letters %q, want the forged compact batch's tenant mismatch", dead)
	}
}
