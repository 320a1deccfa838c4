package gateway

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
)

// Chunks stay within what one IngestEvents call takes, by count and by bytes, and keep every
// event once, in order.
func TestChunkEventsBoundsCountAndBytes(t *testing.T) {
	for _, c := range []struct {
		n, nameLen int
	}{{2500, 1}, {400, 2000}, {1, 1}, {0, 1}} {
		events := make([]*ingestv1.Event, c.n)
		for i := range events {
			events[i] = &ingestv1.Event{EventId: fmt.Sprint(i), Name: strings.Repeat("x", c.nameLen)}
		}
		next := 0
		for _, chunk := range chunkEvents(events) {
			size := proto.Size(&ingestv1.IngestEventsRequest{Events: chunk})
			if len(chunk) == 0 || len(chunk) > segmentChunkEvents || size > segmentChunkBytes {
				t.Fatalf("%d events of %d bytes: a chunk of %d events, %d bytes", c.n, c.nameLen, len(chunk), size)
			}
			for _, e := range chunk {
				if e.GetEventId() != fmt.Sprint(next) {
					t.Fatalf("event %s where %d was due", e.GetEventId(), next)
				}
				next++
			}
		}
		if next != c.n {
			t.Fatalf("%d of %d events in the chunks", next, c.n)
		}
	}
}

// Lenient times: the spellings SDKs send parse; anything else is no time, flagged.
func TestSegmentTimeIsLenient(t *testing.T) {
	for _, s := range []string{"2026-11-29T07:00:00.123Z", "2026-11-29T07:00:00+0100", "2026-11-29T07:00:00.5", "2026-11-29 07:00:00Z", "2026-11-29"} {
		if ts, bad := segmentTime(s); ts == nil || bad {
			t.Errorf("%q: %v %v", s, ts, bad)
		}
	}
	for _, v := range []any{"yesterday", "", 1732863600, "99999-01-01T00:00:00Z"} {
		if ts, bad := segmentTime(v); ts != nil || !bad {
			t.Errorf("%v: %v %v, want none and flagged", v, ts, bad)
		}
	}
	if ts, bad := segmentTime(nil); ts != nil || bad {
		t.Errorf("absent: %v %v", ts, bad)
	}
}

// Whatever the body, reading and mapping never panics, never returns more than the cap, and
// every mapped event has an id and a type ingest knows.
func FuzzSegmentPayload(f *testing.F) {
	for _, seed := range []string{
		`{"batch":[{"type":"track","event":"A","userId":1e400,"properties":{"n":123456789012345678901234567890}}]}`,
		`{"type":"identify","traits":{"a":{"b":[1,null,true]}},"context":{"app":"x","device":[]},"timestamp":7}`,
		`{"batch":[null,1,"x",{"type":"alias","messageId":{}}],"context":null,"sentAt":"2026-01-01"}`,
		"\x1f\x8b\x08\x00",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		body, err := readSegmentBody(bytes.NewReader(raw), 1<<20)
		if err != nil {
			return
		}
		if len(body) > SegmentMaxBodyBytes {
			t.Fatalf("read %d bytes past the cap", len(body))
		}
		obj, err := decodeSegment(body)
		if err != nil {
			return
		}
		items, _ := obj["batch"].([]any)
		items = append(items, obj)
		for _, it := range items {
			item, ok := it.(map[string]any)
			if !ok {
				continue
			}
			for typ := range segmentTypes {
				m, err := mapSegmentEvent(item, typ, obj)
				if err != nil {
					t.Fatalf("known type %s refused: %v", typ, err)
				}
				if m.event.GetEventId() == "" || m.event.GetType() == ingestv1.EventType_EVENT_TYPE_UNSPECIFIED {
					t.Fatalf("mapped %v", m.event)
				}
				_ = proto.Size(m.event)
			}
		}
	})
}
