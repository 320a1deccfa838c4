package gateway

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
)

// How a Segment payload becomes ingest events. The SDKs send loosely typed JSON: text/plain
// bodies, numbers where strings are expected, integer ids above 2^53, fields we have never
// heard of, timestamps in several spellings. Decoding is lenient where a Segment server is
// lenient (unknown fields ignored, ids of any scalar type, unparseable times replaced by the
// time received) and strict only about what makes the body unreadable as a whole.

// Segment payload limits. A Segment batch is capped at 500 KB and single events at 32 KB;
// SegmentMaxBodyBytes applies to the decompressed body, so a small gzip body cannot expand
// past it (see readSegmentBody).
const (
	SegmentMaxBodyBytes   = 500 << 10
	SegmentMaxBatchEvents = 2500
)

// errBodyTooLarge says a (decompressed) body went past SegmentMaxBodyBytes.
var errBodyTooLarge = errors.New("body too large")

// readSegmentBody reads a request body of at most rawLimit bytes on the wire, gunzipping it
// when it starts with the gzip magic bytes (whatever Content-Encoding says: some mobile SDKs
// compress without saying so), and returns at most SegmentMaxBodyBytes of decompressed JSON.
// The expanded size is never allocated: the reader stops one byte past the cap.
func readSegmentBody(body io.Reader, rawLimit int64) ([]byte, error) {
	limited := &countingLimit{r: body, left: rawLimit}
	br := bufio.NewReader(limited)
	var src io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("read gzip header: %w", err)
		}
		defer zr.Close()
		src = zr
	}
	out, err := io.ReadAll(io.LimitReader(src, SegmentMaxBodyBytes+1))
	switch {
	case limited.over:
		return nil, errBodyTooLarge
	case err != nil:
		return nil, fmt.Errorf("read body: %w", err)
	case len(out) > SegmentMaxBodyBytes:
		return nil, errBodyTooLarge
	}
	return out, nil
}

// countingLimit reads at most left bytes and notes whether the body had more.
type countingLimit struct {
	r    io.Reader
	left int64
	over bool
}

func (c *countingLimit) Read(p []byte) (int, error) {
	if c.left <= 0 {
		var one [1]byte
		if n, _ := c.r.Read(one[:]); n > 0 {
			c.over = true
		}
		return 0, io.EOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

// decodeSegment parses a JSON object, keeping numbers as json.Number.
func decodeSegment(body []byte) (map[string]any, error) {
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

// segmentTypes maps a Segment call type to the ingest event type. Screen is a page view of an
// app; group and alias are statements about a user, so they are identify events that keep
// their Segment type in the "segment_type" property.
var segmentTypes = map[string]ingestv1.EventType{
	"track":    ingestv1.EventType_EVENT_TYPE_TRACK,
	"identify": ingestv1.EventType_EVENT_TYPE_IDENTIFY,
	"page":     ingestv1.EventType_EVENT_TYPE_PAGE,
	"screen":   ingestv1.EventType_EVENT_TYPE_PAGE,
	"group":    ingestv1.EventType_EVENT_TYPE_IDENTIFY,
	"alias":    ingestv1.EventType_EVENT_TYPE_IDENTIFY,
}

// mapped is one Segment item turned into an event, with the corrections made on the way.
type mapped struct {
	event *ingestv1.Event
	// warnings name what was corrected ("timestamp"), for the metrics.
	warnings []string
}

// mapSegmentEvent turns one Segment item into an ingest event. typ is the call type (from the
// path for single-event routes, else the item's "type"); batch holds the batch-level context
// and sentAt, which the item's own values override. An error is a per-item rejection reason.
func mapSegmentEvent(item map[string]any, typ string, batch map[string]any) (mapped, error) {
	var m mapped
	et, ok := segmentTypes[typ]
	if !ok {
		return m, errors.New("type")
	}
	ctx := mergeObjects(object(batch["context"]), object(item["context"]))
	props := object(item["properties"])
	e := &ingestv1.Event{
		EventId:     scalarString(item["messageId"]),
		Type:        et,
		UserId:      scalarString(item["userId"]),
		AnonymousId: scalarString(item["anonymousId"]),
	}
	if e.EventId == "" {
		e.EventId = newEventID()
	}
	switch typ {
	case "track":
		e.Name = scalarString(item["event"])
	case "page", "screen":
		e.Name = scalarString(item["name"])
	}

	fields := map[string]*structpb.Value{}
	for k, v := range props {
		fields[k] = segmentValue(v)
	}
	// Traits are kept as properties named "traits.<trait>" (one level; a nested trait stays a
	// nested value): identify and group carry them at the top level, other calls in context.
	traits := object(item["traits"])
	if traits == nil {
		traits = object(ctx["traits"])
	}
	for k, v := range traits {
		fields["traits."+k] = segmentValue(v)
	}
	if typ == "screen" || typ == "group" || typ == "alias" {
		fields["segment_type"] = structpb.NewStringValue(typ)
	}
	for key, prop := range map[string]string{"groupId": "group_id", "previousId": "previous_id", "category": "category"} {
		if s := scalarString(item[key]); s != "" {
			fields[prop] = structpb.NewStringValue(s)
		}
	}
	if len(fields) > 0 {
		e.Properties = &structpb.Struct{Fields: fields}
	}

	e.CampaignId = scalarString(props["campaign_id"])
	if e.CampaignId == "" {
		e.CampaignId = scalarString(object(ctx["campaign"])["name"])
	}
	e.Variant = scalarString(props["variant"])
	if e.Variant == "" {
		e.Variant = scalarString(props["variation_id"])
	}
	e.Context = segmentContext(ctx)

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
	return m, nil
}

// segmentContext keeps what ingest stores of a Segment context.
func segmentContext(ctx map[string]any) *ingestv1.EventContext {
	c := &ingestv1.EventContext{
		Ip:        scalarString(ctx["ip"]),
		UserAgent: scalarString(ctx["userAgent"]),
		Locale:    scalarString(ctx["locale"]),
	}
	if app := object(ctx["app"]); app != nil {
		c.App = scalarString(app["name"])
		if v := scalarString(app["version"]); v != "" && c.App != "" {
			c.App += "/" + v
		}
	}
	if dev := object(ctx["device"]); dev != nil {
		c.Device = scalarString(dev["model"])
		if c.Device == "" {
			c.Device = scalarString(dev["type"])
		}
	}
	if c.Ip == "" && c.UserAgent == "" && c.Locale == "" && c.App == "" && c.Device == "" {
		return nil
	}
	return c
}

// mergeObjects is base with over's keys laid on top (a shallow merge: an item's context.app
// replaces the batch's context.app).
func mergeObjects(base, over map[string]any) map[string]any {
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

func object(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// scalarString is a string, number or boolean as text (SDKs send numeric user ids), else "".
func scalarString(v any) string {
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

// maxExactInteger is 2^53: every integer up to it in magnitude is exactly a float64.
const maxExactInteger = 1 << 53

// segmentValue converts decoded JSON to a property value. A number that a float64 cannot hold
// exactly (an integer id above 2^53, or one out of float64's range) is kept as its decimal
// text: property values are stored as strings anyway, so the id arrives as the client sent it.
func segmentValue(v any) *structpb.Value {
	switch x := v.(type) {
	case nil:
		return structpb.NewNullValue()
	case bool:
		return structpb.NewBoolValue(x)
	case string:
		return structpb.NewStringValue(x)
	case json.Number:
		return numberValue(x)
	case []any:
		list := make([]*structpb.Value, len(x))
		for i, el := range x {
			list[i] = segmentValue(el)
		}
		return structpb.NewListValue(&structpb.ListValue{Values: list})
	case map[string]any:
		fields := make(map[string]*structpb.Value, len(x))
		for k, el := range x {
			fields[k] = segmentValue(el)
		}
		return structpb.NewStructValue(&structpb.Struct{Fields: fields})
	}
	return structpb.NewNullValue()
}

func numberValue(n json.Number) *structpb.Value {
	text := n.String()
	if !strings.ContainsAny(text, ".eE") {
		i, err := strconv.ParseInt(text, 10, 64)
		if err != nil || i > maxExactInteger || i < -maxExactInteger {
			return structpb.NewStringValue(text)
		}
		return structpb.NewNumberValue(float64(i))
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil || math.IsInf(f, 0) {
		return structpb.NewStringValue(text)
	}
	return structpb.NewNumberValue(f)
}

// segmentTimeLayouts are the spellings of a time SDKs are seen to send, tried in order.
var segmentTimeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999Z0700",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02",
}

// segmentTime parses a time leniently. Absent is nil; a value that is not a time is nil too
// (ingest then uses the time received) and bad is set so the caller can warn.
func segmentTime(v any) (ts *timestamppb.Timestamp, bad bool) {
	if v == nil {
		return nil, false
	}
	s, ok := v.(string)
	if !ok {
		return nil, true
	}
	for _, layout := range segmentTimeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			pb := timestamppb.New(t)
			if !pb.IsValid() {
				return nil, true
			}
			return pb, false
		}
	}
	return nil, true
}

// newEventID is a random UUID (version 4) for an event sent without a messageId. A retry of
// such an event gets a new id, so it counts again: SDKs always send a messageId.
func newEventID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
