package console

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
)

func TestToLive(t *testing.T) {
	at := time.Date(2026, 3, 10, 15, 0, 0, 5, time.UTC)
	props, _ := structpb.NewStruct(map[string]any{"plan": "<b>pro</b>"})
	for _, tc := range []struct {
		name string
		in   *ingestv1.TailEventsResponse
		want liveOutcome
	}{
		{"accepted", &ingestv1.TailEventsResponse{Outcome: ingestv1.EventOutcome_EVENT_OUTCOME_ACCEPTED, Time: timestamppb.New(at),
			Source: "key-1", EventId: "e1", Event: &ingestv1.Event{EventId: "e1", Type: ingestv1.EventType_EVENT_TYPE_TRACK, Name: "signup",
				AnonymousId: "anon-1", CampaignId: "c1", Variant: "a", Properties: props}},
			liveOutcome{Outcome: "accepted", Time: "2026-03-10T15:00:00.000Z", Source: "key-1", EventID: "e1", Type: "track",
				Name: "signup", User: "anon-1", Campaign: "c1", Variant: "a", Properties: `{"plan":"<b>pro</b>"}`}},
		{"rejected", &ingestv1.TailEventsResponse{Outcome: ingestv1.EventOutcome_EVENT_OUTCOME_REJECTED,
			Rejection: &ingestv1.Rejection{EventId: "e2", Field: "events[0].type", Reason: "is required"}},
			liveOutcome{Outcome: "rejected", EventID: "e2", Field: "events[0].type", Reason: "is required"}},
		{"suppressed", &ingestv1.TailEventsResponse{Outcome: ingestv1.EventOutcome_EVENT_OUTCOME_SUPPRESSED, EventId: "e3"},
			liveOutcome{Outcome: "suppressed", EventID: "e3"}},
		{"dropped", &ingestv1.TailEventsResponse{Outcome: ingestv1.EventOutcome_EVENT_OUTCOME_DROPPED, Dropped: 7},
			liveOutcome{Outcome: "dropped", Dropped: 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := toLive(tc.in)
			// protojson may space its output differently between runs: compare its meaning.
			if tc.want.Properties != "" {
				var a, b any
				if json.Unmarshal([]byte(got.Properties), &a) != nil || json.Unmarshal([]byte(tc.want.Properties), &b) != nil ||
					!jsonEqual(a, b) {
					t.Fatalf("properties %s, want %s", got.Properties, tc.want.Properties)
				}
				got.Properties = tc.want.Properties
			}
			if got != tc.want {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
	// What the page gets is JSON whose markup characters are escaped.
	b, _ := json.Marshal(liveOutcome{Outcome: "rejected", Reason: "<img src=x onerror=alert(1)>"})
	if strings.Contains(string(b), "<img") {
		t.Errorf("live outcome JSON %s carries raw markup", b)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func TestTruncateText(t *testing.T) {
	if got := truncateText("short", 10); got != "short" {
		t.Errorf("got %q", got)
	}
	s := strings.Repeat("é", 10) // 20 bytes
	got := truncateText(s, 5)
	if !utf8.ValidString(got) || got != "éé…" {
		t.Errorf("got %q", got)
	}
}
