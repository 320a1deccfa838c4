package gateway

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

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
// The e-commerce spec's promotion and order events are what campaign metrics count: an
// impression, a click, a conversion worth its revenue (else total) in its currency; a value
// that cannot be one is left out, never costing the event.
func TestSegmentSpecEventsAreCampaignMetrics(t *testing.T) {
	for _, c := range []struct {
		body     string
		typ      ingestv1.EventType
		micros   int64
		currency string
	}{
		{`{"event":"Promotion Viewed","properties":{"campaign_id":"c"}}`, ingestv1.EventType_EVENT_TYPE_IMPRESSION, 0, ""},
		{`{"event":"Promotion Clicked"}`, ingestv1.EventType_EVENT_TYPE_CLICK, 0, ""},
		{`{"event":"Order Completed","properties":{"revenue":49.9,"total":55,"currency":"eur"}}`, ingestv1.EventType_EVENT_TYPE_CONVERSION, 49_900_000, "EUR"},
		{`{"event":"Order Completed","properties":{"total":"12.5","currency":"USD"}}`, ingestv1.EventType_EVENT_TYPE_CONVERSION, 12_500_000, "USD"},
		{`{"event":"Order Completed","properties":{"revenue":10}}`, ingestv1.EventType_EVENT_TYPE_CONVERSION, 0, ""},
		{`{"event":"Order Completed","properties":{"revenue":1e300,"currency":"USD"}}`, ingestv1.EventType_EVENT_TYPE_CONVERSION, 0, ""},
		{`{"event":"Order Completed","properties":{"revenue":10,"currency":"dollars"}}`, ingestv1.EventType_EVENT_TYPE_CONVERSION, 0, ""},
		{`{"event":"order completed"}`, ingestv1.EventType_EVENT_TYPE_TRACK, 0, ""},
	} {
		var d jsonDoc
		item, ok := d.parse([]byte(c.body))
		if !ok {
			t.Fatalf("%s: not parsed", c.body)
		}
		e := mapSegmentEvent(&d, item, "track", jsonVal{}).event
		if e.GetType() != c.typ || e.GetValue().GetAmountMicros() != c.micros || e.GetValue().GetCurrency() != c.currency {
			t.Errorf("%s: %v, want %v %d %q", c.body, e, c.typ, c.micros, c.currency)
		}
	}
}

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
		scratch := getSegmentScratch()
		defer putSegmentScratch(scratch)
		body, err := scratch.readSegmentBody(bytes.NewReader(raw), 1<<20)
		if err != nil {
			return
		}
		if len(body) > SegmentMaxBodyBytes {
			t.Fatalf("read %d bytes past the cap", len(body))
		}
		d := &scratch.doc
		obj, ok := d.parse(body)
		if !ok {
			return
		}
		var items []jsonVal
		if list := d.get(obj, "batch"); list.kind == jsonArray {
			items = d.vals[list.lo:list.hi]
		}
		items = append(items, obj)
		var events []*ingestv1.Event
		for _, item := range items {
			if item.kind != jsonObject {
				continue
			}
			for typ := range segmentTypes {
				m := mapSegmentEvent(d, item, typ, obj)
				if m.event.GetEventId() == "" || m.event.GetType() == ingestv1.EventType_EVENT_TYPE_UNSPECIFIED {
					t.Fatalf("mapped %v", m.event)
				}
				_ = proto.Size(m.event)
				events = append(events, m.event)
			}
		}
		checkMarshalChunks(t, events)
	})
}

// checkMarshalChunks says whether every chunk of events, marshalled as send marshals it,
// reads back as the IngestEventsRequest of its events.
func checkMarshalChunks(t *testing.T, events []*ingestv1.Event) {
	t.Helper()
	for _, chunk := range chunkEvents(events) {
		raw, err := marshalChunk(chunk)
		if err != nil {
			t.Fatal(err)
		}
		var got ingestv1.IngestEventsRequest
		if err := proto.Unmarshal(raw, &got); err != nil {
			t.Fatal(err)
		}
		if want := (&ingestv1.IngestEventsRequest{Events: chunk}); !proto.Equal(&got, want) {
			t.Fatalf("marshalled %v, want %v", &got, want)
		}
	}
}

// A chunk marshalled once with the sizes chunkEvents measured is the request proto.Marshal
// would make of it, for events with every kind of field and nested properties.
func TestMarshalChunkIsTheRequest(t *testing.T) {
	nested, _ := structpb.NewStruct(map[string]any{"s": "é😀", "n": 1.5, "b": true, "z": nil, "l": []any{"x", 2.0, map[string]any{"k": "v"}}})
	events := []*ingestv1.Event{
		{EventId: "a", Type: ingestv1.EventType_EVENT_TYPE_TRACK, Name: "Order", UserId: "u", AnonymousId: "an", CampaignId: "c", Variant: "v",
			Properties: nested, Context: &ingestv1.EventContext{Ip: "192.0.2.1", UserAgent: "ua", Locale: "de", App: "app/1", Device: "d"},
			Timestamp: timestamppb.Now(), SentAt: timestamppb.Now()},
		{EventId: "b"},
		{},
	}
	for i := range 3000 {
		events = append(events, &ingestv1.Event{EventId: fmt.Sprint(i), Name: strings.Repeat("x", i%700)})
	}
	checkMarshalChunks(t, events)
}

// The single-pass parser and mapping do exactly what encoding/json and the map-based mapping
// they replaced did: the same bodies accepted (with the same reason for a refusal), the same
// values read, and every item mapped to the same event with the same warnings. The reference
// is the replaced code, kept below.
func FuzzSegmentDecodeMatchesEncodingJSON(f *testing.F) {
	for _, seed := range []string{
		`{"batch":[{"type":"track","event":"A","userId":1e400,"properties":{"n":123456789012345678901234567890}}]}`,
		`{"type":"identify","traits":{"a":{"b":[1,null,true]}},"context":{"app":"x","device":[]},"timestamp":7}`,
		`{"batch":[null,1,"x",{"type":"alias","messageId":{}}],"context":null,"sentAt":"2026-01-01"}`,
		`{"batch":[{"type":"screen","name":"Cart","messageId":"kt-1","originalTimestamp":"2026-11-29T07:00:03.000Z","context":{"app":{"name":"a","version":"4.2"}}}],` +
			`"context":{"device":{"model":"Pixel 8"},"locale":"de-DE","app":{"name":"b"},"campaign":{"name":"c"}},"sentAt":"2026-11-29T07:00:04.000Z"}`,
		`{"type":"group","groupId":7,"previousId":true,"category":"x","userId":-0.5e-3,"traits":{},"context":{"traits":{"t":1}}}`,
		`{"k":"\u00e9\ud83d\ude00\ud800\u0041\udc00x\"\\\/\b\f\n\r\t","k":1,"properties":{"a":1,"a":{"b":2}}}` + " \u00a0\v",
		`{"a":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
		`{} {}`, `[1]`, `{"a":01}`, `{"a":1.}`, `{"a":-}`, `{"a":tru}`, "{\"a\":\"\x01\"}", "{\"a\":\"\xff\"}", `{"a" 1}`, `{,}`, `{"a":1,}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var d jsonDoc
		root, ok := d.parse(body)
		reason := checkJSON(body, false)
		ref, refErr := decodeSegmentRef(body)
		refOK := reason == "" && refErr == nil
		if ok != refOK {
			t.Fatalf("parsed %v, encoding/json and checkJSON %v (%q, %v)", ok, refOK, reason, refErr)
		}
		if !ok {
			return
		}
		if got := d.toAny(root); !reflect.DeepEqual(got, any(ref)) {
			t.Fatalf("read %#v, encoding/json %#v", got, ref)
		}
		// Items as the batch route takes them, and the body as each single route does.
		type call struct {
			item    jsonVal
			refItem any
			batch   bool
		}
		var calls []call
		if list := d.get(root, "batch"); list.kind == jsonArray {
			refList := ref["batch"].([]any)
			for i, item := range d.vals[list.lo:list.hi] {
				calls = append(calls, call{item, refList[i], true})
			}
		}
		calls = append(calls, call{root, ref, false})
		for _, c := range calls {
			refItem, isObject := c.refItem.(map[string]any)
			if isObject != (c.item.kind == jsonObject) {
				t.Fatalf("object %v, encoding/json %v", c.item.kind == jsonObject, isObject)
			}
			if !isObject {
				continue
			}
			types := []string{"track", "identify", "page", "screen", "group", "alias"}
			if c.batch {
				refType, _ := refItem["type"].(string)
				if typ := d.stringValue(d.get(c.item, "type")); typ != refType {
					t.Fatalf("type %q, encoding/json %q", typ, refType)
				}
				types = []string{refType}
			}
			for _, typ := range types {
				batch, refBatch := jsonVal{}, map[string]any(nil)
				if c.batch {
					batch, refBatch = root, ref
				}
				m := mapSegmentEvent(&d, c.item, typ, batch)
				want := mapSegmentEventRef(refItem, typ, refBatch)
				if !slices.Equal(m.warnings, want.warnings) {
					t.Fatalf("%s: warnings %v, reference %v", typ, m.warnings, want.warnings)
				}
				if _, given := refItem["messageId"]; !given || scalarStringRef(refItem["messageId"]) == "" {
					if len(m.event.EventId) != 36 {
						t.Fatalf("generated id %q", m.event.EventId)
					}
					m.event.EventId, want.event.EventId = "", ""
				}
				if !proto.Equal(m.event, want.event) {
					t.Fatalf("%s: mapped %v, reference %v", typ, m.event, want.event)
				}
			}
		}
	})
}

// toAny is v as encoding/json decodes it into an any with UseNumber.
func (d *jsonDoc) toAny(v jsonVal) any {
	switch v.kind {
	case jsonNull:
		return nil
	case jsonTrue:
		return true
	case jsonFalse:
		return false
	case jsonNumber:
		return json.Number(d.src[v.lo:v.hi])
	case jsonString:
		return d.text(v)
	case jsonArray:
		out := make([]any, 0, v.hi-v.lo)
		for _, el := range d.vals[v.lo:v.hi] {
			out = append(out, d.toAny(el))
		}
		return out
	case jsonObject:
		out := map[string]any{}
		for i := v.lo; i < v.hi; i += 2 {
			out[d.text(d.vals[i])] = d.toAny(d.vals[i+1])
		}
		return out
	}
	panic("absent value")
}

// The reference: the map-based decoding and mapping the single-pass parser replaced.

func decodeSegmentRef(body []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decode json: %w", err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("body is not a JSON object")
	}
	return obj, nil
}

func mapSegmentEventRef(item map[string]any, typ string, batch map[string]any) mapped {
	var m mapped
	et, known := segmentTypes[typ]
	ctx := mergeObjectsRef(objectRef(batch["context"]), objectRef(item["context"]))
	props := objectRef(item["properties"])
	e := &ingestv1.Event{
		EventId:     scalarStringRef(item["messageId"]),
		Type:        et,
		UserId:      scalarStringRef(item["userId"]),
		AnonymousId: scalarStringRef(item["anonymousId"]),
	}
	if e.EventId == "" {
		e.EventId = newEventID()
	}
	switch typ {
	case "track":
		e.Name = scalarStringRef(item["event"])
		if t, ok := segmentSpecEvents[e.Name]; ok {
			e.Type = t
			if t == ingestv1.EventType_EVENT_TYPE_CONVERSION {
				e.Value = orderValue(scalarStringRef(props["revenue"]), scalarStringRef(props["total"]), scalarStringRef(props["currency"]))
			}
		}
	case "page", "screen":
		e.Name = scalarStringRef(item["name"])
	}
	fields := map[string]*structpb.Value{}
	for k, v := range props {
		if k != "campaign_id" && k != "variant" && k != "variation_id" {
			fields[k] = segmentValueRef(v)
		}
	}
	traits := objectRef(item["traits"])
	if traits == nil {
		traits = objectRef(ctx["traits"])
	}
	for k, v := range traits {
		fields["traits."+k] = segmentValueRef(v)
	}
	if typ == "screen" || typ == "group" || typ == "alias" || !known {
		fields["segment_type"] = structpb.NewStringValue(typ)
	}
	for key, prop := range map[string]string{"groupId": "group_id", "previousId": "previous_id", "category": "category"} {
		if s := scalarStringRef(item[key]); s != "" {
			fields[prop] = structpb.NewStringValue(s)
		}
	}
	if len(fields) > 0 {
		e.Properties = &structpb.Struct{Fields: fields}
	}
	e.CampaignId = scalarStringRef(props["campaign_id"])
	if e.CampaignId == "" {
		e.CampaignId = scalarStringRef(objectRef(ctx["campaign"])["name"])
	}
	e.Variant = scalarStringRef(props["variant"])
	if e.Variant == "" {
		e.Variant = scalarStringRef(props["variation_id"])
	}
	e.Context = segmentContextRef(ctx)
	ts := item["timestamp"]
	if ts == nil {
		ts = item["originalTimestamp"]
	}
	sent := item["sentAt"]
	if sent == nil {
		sent = batch["sentAt"]
	}
	var bad bool
	if e.Timestamp, bad = segmentTime(ts); bad {
		m.warnings = append(m.warnings, "timestamp")
	}
	if e.SentAt, bad = segmentTime(sent); bad {
		m.warnings = append(m.warnings, "sent_at")
	}
	m.event = e
	return m
}

func segmentContextRef(ctx map[string]any) *ingestv1.EventContext {
	c := &ingestv1.EventContext{
		Ip:        scalarStringRef(ctx["ip"]),
		UserAgent: scalarStringRef(ctx["userAgent"]),
		Locale:    scalarStringRef(ctx["locale"]),
	}
	if app := objectRef(ctx["app"]); app != nil {
		c.App = scalarStringRef(app["name"])
		if v := scalarStringRef(app["version"]); v != "" && c.App != "" {
			c.App += "/" + v
		}
	}
	if dev := objectRef(ctx["device"]); dev != nil {
		c.Device = scalarStringRef(dev["model"])
		if c.Device == "" {
			c.Device = scalarStringRef(dev["type"])
		}
	}
	if c.Ip == "" && c.UserAgent == "" && c.Locale == "" && c.App == "" && c.Device == "" {
		return nil
	}
	return c
}

func mergeObjectsRef(base, over map[string]any) map[string]any {
	if base == nil {
		return over
	}
	out := make(map[string]any, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		out[k] = v
	}
	return out
}

func objectRef(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func scalarStringRef(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	}
	return ""
}

func segmentValueRef(v any) *structpb.Value {
	switch x := v.(type) {
	case nil:
		return structpb.NewNullValue()
	case bool:
		return structpb.NewBoolValue(x)
	case string:
		return structpb.NewStringValue(x)
	case json.Number:
		return numberValue(x.String())
	case []any:
		list := make([]*structpb.Value, len(x))
		for i, el := range x {
			list[i] = segmentValueRef(el)
		}
		return structpb.NewListValue(&structpb.ListValue{Values: list})
	case map[string]any:
		fields := make(map[string]*structpb.Value, len(x))
		for k, el := range x {
			fields[k] = segmentValueRef(el)
		}
		return structpb.NewStructValue(&structpb.Struct{Fields: fields})
	}
	return structpb.NewNullValue()
}

// One scratch reads body after body, whatever the one before it was: gzip or not, broken,
// or over the cap; and what was mapped from a body does not change when the scratch reads the
// next one.
func TestSegmentScratchIsReusable(t *testing.T) {
	gz := func(s string) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write([]byte(s))
		_ = zw.Close()
		return buf.Bytes()
	}
	body := func(id string) string {
		return `{"batch":[{"type":"track","event":"A","messageId":"` + id + `","userId":"u","timestamp":"2026-11-29T07:00:00Z"}]}`
	}
	over := gz(`{"batch":"` + strings.Repeat("x", SegmentMaxBodyBytes) + `"}`)
	s := getSegmentScratch()
	defer putSegmentScratch(s)
	var kept []*ingestv1.Event
	for i, c := range []struct {
		raw  []byte
		want string // the event's id, or "" for a refused body
	}{
		{gz(body("a")), "a"}, {[]byte(body("b")), "b"}, {gz(body("c"))[:15], ""}, {gz(body("d")), "d"},
		{over, ""}, {[]byte(body("e")), "e"}, {[]byte(`{"batch":[`), ""}, {gz(body("f")), "f"},
	} {
		raw, err := s.readSegmentBody(bytes.NewReader(c.raw), 1<<20)
		if err != nil {
			if c.want != "" {
				t.Fatalf("body %d: %v", i, err)
			}
			continue
		}
		root, ok := s.doc.parse(raw)
		if ok != (c.want != "") {
			t.Fatalf("body %d: parsed %v", i, ok)
		}
		if !ok {
			continue
		}
		list := s.doc.get(root, "batch")
		m := mapSegmentEvent(&s.doc, s.doc.vals[list.lo], "track", root)
		if m.event.GetEventId() != c.want || m.event.GetTimestamp().AsTime() != time.Date(2026, 11, 29, 7, 0, 0, 0, time.UTC) {
			t.Fatalf("body %d: %v", i, m.event)
		}
		kept = append(kept, m.event)
	}
	for i, e := range kept {
		if want := string(rune('a' + []int{0, 1, 3, 4, 5}[i])); e.GetEventId() != want || e.GetName() != "A" || e.GetUserId() != "u" {
			t.Fatalf("event %d changed to %v", i, e)
		}
	}
}
