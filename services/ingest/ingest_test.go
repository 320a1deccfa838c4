package ingest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
)

func ev(id string) *ingestv1.Event {
	return &ingestv1.Event{EventId: id, Type: ingestv1.EventType_EVENT_TYPE_TRACK, Name: "signup", UserId: "u1"}
}

func TestValidation(t *testing.T) {
	props := map[string]any{}
	for i := 0; i < 101; i++ {
		props[strings.Repeat("k", 1+i%5)+string(rune('a'+i%26))+string(rune('a'+i/26))] = i
	}
	tooMany, _ := structpb.NewStruct(props)
	big, _ := structpb.NewStruct(map[string]any{"blob": strings.Repeat("x", 33<<10)})
	tests := []struct {
		name  string
		edit  func(*ingestv1.Event)
		field string
	}{
		{"valid", func(*ingestv1.Event) {}, ""},
		{"no event id", func(e *ingestv1.Event) { e.EventId = "" }, ".event_id"},
		{"event id with spaces", func(e *ingestv1.Event) { e.EventId = "a b" }, ".event_id"},
		{"no type", func(e *ingestv1.Event) { e.Type = 0 }, ".type"},
		{"unknown type", func(e *ingestv1.Event) { e.Type = 99 }, ".type"},
		{"no subject", func(e *ingestv1.Event) { e.UserId = "" }, ".user_id"},
		{"anonymous is enough", func(e *ingestv1.Event) { e.UserId, e.AnonymousId = "", "anon" }, ""},
		{"track without name", func(e *ingestv1.Event) { e.Name = "" }, ".name"},
		{"page without name", func(e *ingestv1.Event) { e.Name, e.Type = "", ingestv1.EventType_EVENT_TYPE_PAGE }, ""},
		{"long name", func(e *ingestv1.Event) { e.Name = strings.Repeat("n", 201) }, ".name"},
		{"bad currency", func(e *ingestv1.Event) { e.Value = &ingestv1.Money{AmountMicros: 1, Currency: "usd"} }, ".value.currency"},
		{"good currency", func(e *ingestv1.Event) { e.Value = &ingestv1.Money{AmountMicros: 1, Currency: "USD"} }, ""},
		{"too many properties", func(e *ingestv1.Event) { e.Properties = tooMany }, ".properties"},
		{"too large", func(e *ingestv1.Event) { e.Properties = big }, ""},
		{"invalid timestamp", func(e *ingestv1.Event) { e.Timestamp = &timestamppb.Timestamp{Nanos: -1} }, ".timestamp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := ev("e1")
			tt.edit(e)
			r, err := DefaultLimits.Prepare([]*ingestv1.Event{ev("e0"), e}, "t", "k", time.Now(), 100)
			if err != nil {
				t.Fatal(err)
			}
			valid := tt.field == "" && tt.name != "too large"
			if valid {
				if len(r.Rejected) != 0 || len(r.Accepted) != 2 {
					t.Fatalf("rejected %v", r.Rejected)
				}
				return
			}
			if len(r.Accepted) != 1 || len(r.Rejected) != 1 || r.Rejected[0].GetIndex() != 1 || r.Rejected[0].GetField() != "events[1]"+tt.field {
				t.Fatalf("accepted %d, rejected %v; want events[1]%s rejected and the other accepted", len(r.Accepted), r.Rejected, tt.field)
			}
		})
	}
}

func TestBatchLimitsRefuseTheWholeRequest(t *testing.T) {
	many := make([]*ingestv1.Event, 1001)
	for i := range many {
		many[i] = ev("e")
	}
	if _, err := DefaultLimits.Prepare(many, "t", "k", time.Now(), 100); err == nil {
		t.Fatal("1,001 events accepted")
	}
	if _, err := DefaultLimits.Prepare([]*ingestv1.Event{ev("e")}, "t", "k", time.Now(), 501<<10); err == nil {
		t.Fatal("501 KB accepted")
	}
	if _, err := DefaultLimits.Prepare(nil, "t", "k", time.Now(), 0); err == nil {
		t.Fatal("empty batch accepted")
	}
	r, err := DefaultLimits.Prepare([]*ingestv1.Event{ev("dup"), ev("dup")}, "t", "k", time.Now(), 100)
	if err != nil || len(r.Accepted) != 1 || len(r.Rejected) != 1 {
		t.Fatalf("repeated id in one batch: %v %v", r, err)
	}
}

func TestCorrectTime(t *testing.T) {
	received := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	ts := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(received.Add(d)) }
	tests := []struct {
		name            string
		timestamp, sent *timestamppb.Timestamp
		want            time.Time
		warned          bool
	}{
		{"no timestamp: received time", nil, nil, received, false},
		{"no sent_at: as sent", ts(-time.Hour), nil, received.Add(-time.Hour), false},
		{"correct clock, 20 s transit: unchanged", ts(-50 * time.Second), ts(-20 * time.Second), received.Add(-50 * time.Second), false},
		{"clock 2 h behind: corrected", ts(-2*time.Hour - 10*time.Second), ts(-2 * time.Hour), received.Add(-10 * time.Second), true},
		{"clock 3 h ahead: corrected", ts(3*time.Hour - 5*time.Second), ts(3 * time.Hour), received.Add(-5 * time.Second), true},
		{"future beyond the bound: clamped", ts(2 * time.Hour), nil, received, true},
		{"slightly future: kept", ts(30 * time.Second), nil, received.Add(30 * time.Second), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, warning := DefaultLimits.CorrectTime(tt.timestamp, tt.sent, received)
			if !got.Equal(tt.want) || (warning != "") != tt.warned {
				t.Fatalf("got %v %q, want %v (warned %v)", got, warning, tt.want, tt.warned)
			}
		})
	}
}

func FuzzPrepare(f *testing.F) {
	f.Add("e1", int32(1), "signup", "u1", "", "USD", int64(5))
	f.Add("", int32(0), "", "", "", "", int64(0))
	f.Fuzz(func(t *testing.T, id string, typ int32, name, user, anon, currency string, ts int64) {
		e := &ingestv1.Event{EventId: id, Type: ingestv1.EventType(typ), Name: name, UserId: user, AnonymousId: anon,
			Value: &ingestv1.Money{Currency: currency}, Timestamp: &timestamppb.Timestamp{Seconds: ts}}
		r, err := DefaultLimits.Prepare([]*ingestv1.Event{e}, "t", "k", time.Now(), 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Accepted)+len(r.Rejected) != 1 {
			t.Fatalf("event neither accepted nor rejected: %v", r)
		}
		if len(r.Accepted) == 1 && !r.Accepted[0].GetCorrectedTime().IsValid() {
			t.Fatal("accepted event with an invalid corrected time")
		}
	})
}

// BenchmarkPrepare is the domain's cost for one 100-event batch.
func BenchmarkPrepare(b *testing.B) {
	evs := make([]*ingestv1.Event, 100)
	for i := range evs {
		evs[i] = &ingestv1.Event{EventId: fmt.Sprintf("evt-%d-abcdef", i), Type: ingestv1.EventType_EVENT_TYPE_IMPRESSION, UserId: "user-1", CampaignId: "c", Timestamp: timestamppb.Now()}
	}
	now := time.Now()
	for b.Loop() {
		if _, err := DefaultLimits.Prepare(evs, "t", "k", now, 10000); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzDecodeAndPrepare feeds arbitrary bytes to both decoders a request goes through (protobuf
// from gRPC, JSON from REST) and then to validation: nothing may panic, and a batch within the
// limits accounts for every event exactly once.
func FuzzDecodeAndPrepare(f *testing.F) {
	f.Add([]byte(`{"events":[{"eventId":"e1","type":"EVENT_TYPE_CLICK","userId":"u"}]}`))
	f.Add([]byte(`{"events":[{"eventId":"","type":7,"properties":{"a":{"b":[1,null]}},"timestamp":"9999-12-31T23:59:59Z"}]}`))
	seed, _ := proto.Marshal(&ingestv1.IngestEventsRequest{Events: []*ingestv1.Event{ev("p1"), ev("p2")}})
	f.Add(seed)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, decode := range []func([]byte, proto.Message) error{protojson.Unmarshal, proto.Unmarshal} {
			var req ingestv1.IngestEventsRequest
			if decode(data, &req) != nil {
				continue
			}
			r, err := DefaultLimits.Prepare(req.GetEvents(), "t", "k", time.Now(), proto.Size(&req))
			if err != nil {
				continue
			}
			if len(r.Accepted)+len(r.Rejected) != len(req.GetEvents()) {
				t.Fatalf("%d events, %d accepted, %d rejected", len(req.GetEvents()), len(r.Accepted), len(r.Rejected))
			}
		}
	})
}
