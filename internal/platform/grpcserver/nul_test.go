package grpcserver

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

func TestFindNULNamesTheField(t *testing.T) {
	props := func(v map[string]any) *structpb.Struct {
		s, err := structpb.NewStruct(v)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tc := range []struct {
		name string
		req  *ingestv1.IngestEventsRequest
		want string
	}{
		{"clean", &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{{Name: "x", Properties: props(map[string]any{"a": "b"})}}}, ""},
		{"top-level string in a list", &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{{}, {Name: "x\x00"}}}, "events[1].name"},
		{"nested message", &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{{Context: &ingestv1.EventContext{Ip: "\x00"}}}}, "events[0].context.ip"},
		{"struct value", &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{{Properties: props(map[string]any{"plan": map[string]any{"tier": "p\x00"}})}}}, "events[0].properties.plan.tier"},
		{"struct list", &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{{Properties: props(map[string]any{"tags": []any{"a", "\x00"}})}}}, "events[0].properties.tags[1]"},
		{"struct key", &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{{Properties: props(map[string]any{"k\x00": "v"})}}}, "events[0].properties"},
		{"timestamp out of range", &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{{}, {SentAt: &timestamppb.Timestamp{Seconds: 1 << 62}}}}, "events[1].sent_at"},
		{"timestamp nanos out of range", &ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{{Timestamp: &timestamppb.Timestamp{Nanos: -1}}}}, "events[0].timestamp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := findNUL(tc.req.ProtoReflect(), ""); got != tc.want {
				t.Fatalf("findNUL = %q, want %q", got, tc.want)
			}
		})
	}
}

// BenchmarkRefuseNUL measures the NUL check on a full ingest batch (1,000 events with
// properties and context), the largest request any RPC takes.
func BenchmarkRefuseNUL(b *testing.B) {
	req := benchBatch()
	b.ReportAllocs()
	for b.Loop() {
		if err := refuseNUL(req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeBatch is the reference for BenchmarkRefuseNUL: what decoding the same batch
// costs anyway.
func BenchmarkDecodeBatch(b *testing.B) {
	data, err := proto.Marshal(benchBatch())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := proto.Unmarshal(data, &ingestv1.IngestEventsRequest{}); err != nil {
			b.Fatal(err)
		}
	}
}

func benchBatch() *ingestv1.IngestEventsRequest {
	req := &ingestv1.IngestEventsRequest{}
	for i := 0; i < 1000; i++ {
		p, _ := structpb.NewStruct(map[string]any{"plan": "pro", "seats": 12, "page": "/pricing", "tags": []any{"a", "b"}, "nested": map[string]any{"k": "v"}})
		req.Events = append(req.Events, &ingestv1.Event{
			EventId: fmt.Sprintf("evt-%d", i), Type: ingestv1.EventType_EVENT_TYPE_TRACK, Name: "signup", UserId: "user-123",
			CampaignId: "cmp-1", Variant: "A", Properties: p, Timestamp: timestamppb.Now(), SentAt: timestamppb.Now(),
			Context: &ingestv1.EventContext{Ip: "203.0.113.9", UserAgent: "Mozilla/5.0", Locale: "en-US", App: "web"},
		})
	}
	return req
}

// A transport status from a call the handler made (e.g. to another service) reaches the
// caller as a generic INTERNAL: its text names gRPC internals.
func TestTransportInternalStatusIsGeneric(t *testing.T) {
	m := errorMapper(slog.New(slog.DiscardHandler))
	for _, err := range []error{
		status.Error(codes.Internal, "grpc: error while marshaling: string field contains invalid UTF-8"),
		status.Error(codes.Unknown, "pq: invalid byte sequence for encoding \"UTF8\": 0x00"),
	} {
		st := status.Convert(m.mapErr(context.Background(), "/x.v1.S/M", err))
		if st.Code() != codes.Internal || st.Message() != "internal error (ref "+apperr.Ref(st)+")" || apperr.Ref(st) == "" {
			t.Errorf("%v answered %v %q; want a generic INTERNAL", err, st.Code(), st.Message())
		}
	}
	if st := status.Convert(m.mapErr(context.Background(), "/x.v1.S/M", status.Error(codes.NotFound, "campaign c1 not found"))); st.Message() != "campaign c1 not found" {
		t.Errorf("a non-internal status was changed: %v", st)
	}
}
