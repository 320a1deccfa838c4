package gateway

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

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

// segmentScratch is what reading and decoding one request needs, kept in segmentScratchPool
// between requests: the body buffer, the bufio and gzip readers (a gzip reader holds 40 KB of
// decompressor state) and the parsed document's value lists. Nothing taken from a request
// keeps a reference into it: every string is copied out of the body.
type segmentScratch struct {
	buf   []byte
	limit countingLimit
	br    *bufio.Reader
	zr    *gzip.Reader
	doc   jsonDoc
}

var segmentScratchPool = sync.Pool{New: func() any { return new(segmentScratch) }}

// Scratch larger than this goes back to the collector instead of the pool (a 2,500-event
// batch parses to about 40,000 values).
const maxPooledValues = 1 << 16

func getSegmentScratch() *segmentScratch { return segmentScratchPool.Get().(*segmentScratch) }

func putSegmentScratch(s *segmentScratch) {
	s.limit = countingLimit{}
	if s.br != nil {
		s.br.Reset(nil) // drop the request body
	}
	s.doc.src = nil
	clear(s.doc.shared)
	if cap(s.doc.vals) > maxPooledValues || cap(s.doc.stack) > maxPooledValues {
		s.doc = jsonDoc{}
	}
	segmentScratchPool.Put(s)
}

// readSegmentBody reads a request body of at most rawLimit bytes on the wire, gunzipping it
// when it starts with the gzip magic bytes (whatever Content-Encoding says: some mobile SDKs
// compress without saying so), and returns at most SegmentMaxBodyBytes of decompressed JSON,
// in s's buffer (valid until s goes back to the pool). The expanded size is never allocated:
// the reader stops one byte past the cap.
func (s *segmentScratch) readSegmentBody(body io.Reader, rawLimit int64) ([]byte, error) {
	s.limit = countingLimit{r: body, left: rawLimit}
	if s.br == nil {
		s.br = bufio.NewReader(&s.limit)
	} else {
		s.br.Reset(&s.limit)
	}
	var src io.Reader = s.br
	if magic, _ := s.br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		if s.zr == nil {
			zr, err := gzip.NewReader(s.br)
			if err != nil {
				return nil, fmt.Errorf("read gzip header: %w", err)
			}
			s.zr = zr
		} else if err := s.zr.Reset(s.br); err != nil {
			return nil, fmt.Errorf("read gzip header: %w", err)
		}
		src = s.zr
	}
	// io.ReadAll of an io.LimitReader of SegmentMaxBodyBytes+1, into the pooled buffer.
	const limit = SegmentMaxBodyBytes + 1
	out := s.buf[:0]
	var err error
	for len(out) < limit {
		if len(out) == cap(out) {
			out = slices.Grow(out, min(max(cap(out), 4096), limit-len(out)))
		}
		n, rerr := src.Read(out[len(out):min(cap(out), limit)])
		out = out[:len(out)+n]
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			err = rerr
			break
		}
	}
	s.buf = out
	switch {
	case s.limit.over:
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

// A Segment body is parsed in one pass into a jsonDoc: a flat list of values pointing into the
// body, from which the mapping copies only what an event keeps. Decoding into map[string]any
// (as encoding/json does) cost a map, an interface and a string for every value of every item,
// and a second pass over the bytes for the depth and trailing-data check; this parser makes
// that check as it goes. It accepts exactly what checkJSON and encoding/json (with UseNumber,
// into a map[string]any) accept for an object, and reads strings and numbers as they do: a
// duplicated member's last value wins, invalid surrogate escapes read as U+FFFD, numbers keep
// their text (FuzzSegmentDecodeMatchesEncodingJSON holds it to that).

// jsonKind is the kind of a parsed JSON value.
type jsonKind uint8

const (
	// jsonAbsent is a member that is not there, or a member looked up in a non-object.
	jsonAbsent jsonKind = iota
	jsonNull
	jsonFalse
	jsonTrue
	jsonNumber
	jsonString
	jsonArray
	jsonObject
)

// jsonVal is one parsed value. A string is src[lo:hi] between its quotes (esc: with escapes
// to undo), a number its text src[lo:hi]; an array's elements are vals[lo:hi] and an
// object's members the key, value pairs of vals[lo:hi].
type jsonVal struct {
	kind   jsonKind
	esc    bool
	lo, hi int32
}

// jsonDoc is a parsed JSON document.
type jsonDoc struct {
	src []byte
	// vals holds the members and elements of every object and array, each container's
	// contiguous; stack collects those of the containers still open.
	vals, stack []jsonVal
	// shared holds the strings already copied out of this document, by text: the items of a
	// batch repeat their property names and many values (type, event name, campaign, a
	// batch's context), and one copy serves them all. Bounded, as the document is the
	// client's.
	shared map[string]string
	// lastTime is the time text parsed last and what it parsed to: the items of a batch share
	// its sentAt, and often their timestamps.
	lastTime struct {
		text []byte
		t    time.Time
		ok   bool
	}
}

// parse parses src as one JSON object with nothing after it but white space, nested at most
// MaxJSONDepth deep, and valid UTF-8. On false the caller asks checkJSON why, so the answer
// names the same reason as before this parser existed.
func (d *jsonDoc) parse(src []byte) (jsonVal, bool) {
	d.src, d.vals, d.stack = src, d.vals[:0], d.stack[:0]
	d.lastTime.text = nil
	clear(d.shared)
	if len(src) > math.MaxInt32 {
		return jsonVal{}, false
	}
	i := skipSpace(src, 0)
	if i >= len(src) || src[i] != '{' {
		return jsonVal{}, false
	}
	root, i, ok := d.value(i, 0)
	if !ok {
		return jsonVal{}, false
	}
	// checkJSON trims Unicode white space after the value; encoding/json never reads it.
	if rest := src[i:]; !utf8.Valid(rest) || len(bytes.TrimSpace(rest)) > 0 {
		return jsonVal{}, false
	}
	return root, true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// value parses the value at src[i] inside containers nested depth deep, and returns it with
// the offset after it.
func (d *jsonDoc) value(i, depth int) (jsonVal, int, bool) {
	src := d.src
	if i >= len(src) {
		return jsonVal{}, i, false
	}
	switch c := src[i]; {
	case c == '{':
		return d.object(i, depth+1)
	case c == '[':
		return d.array(i, depth+1)
	case c == '"':
		return d.str(i)
	case c == 't':
		return literal(src, i, "true", jsonTrue)
	case c == 'f':
		return literal(src, i, "false", jsonFalse)
	case c == 'n':
		return literal(src, i, "null", jsonNull)
	case c == '-' || ('0' <= c && c <= '9'):
		return number(src, i)
	}
	return jsonVal{}, i, false
}

func literal(src []byte, i int, word string, kind jsonKind) (jsonVal, int, bool) {
	if len(src)-i < len(word) || string(src[i:i+len(word)]) != word {
		return jsonVal{}, i, false
	}
	return jsonVal{kind: kind}, i + len(word), true
}

// number parses -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?; what follows is the caller's
// to judge (a digit after a leading 0 then fails there, as in encoding/json).
func number(src []byte, i int) (jsonVal, int, bool) {
	start := i
	digits := func(j int) int {
		for j < len(src) && '0' <= src[j] && src[j] <= '9' {
			j++
		}
		return j
	}
	if src[i] == '-' {
		i++
	}
	switch {
	case i < len(src) && src[i] == '0':
		i++
	case i < len(src) && '1' <= src[i] && src[i] <= '9':
		i = digits(i + 1)
	default:
		return jsonVal{}, i, false
	}
	if i < len(src) && src[i] == '.' {
		j := digits(i + 1)
		if j == i+1 {
			return jsonVal{}, i, false
		}
		i = j
	}
	if i < len(src) && (src[i] == 'e' || src[i] == 'E') {
		i++
		if i < len(src) && (src[i] == '+' || src[i] == '-') {
			i++
		}
		j := digits(i)
		if j == i {
			return jsonVal{}, i, false
		}
		i = j
	}
	return jsonVal{kind: jsonNumber, lo: int32(start), hi: int32(i)}, i, true
}

// str parses the string whose opening quote is at src[i]: no control characters, only JSON's
// escapes, valid UTF-8.
func (d *jsonDoc) str(i int) (jsonVal, int, bool) {
	src := d.src
	esc := false
	for j := i + 1; j < len(src); {
		switch c := src[j]; {
		case c == '"':
			return jsonVal{kind: jsonString, esc: esc, lo: int32(i + 1), hi: int32(j)}, j + 1, true
		case c == '\\':
			esc = true
			if j+1 >= len(src) {
				return jsonVal{}, j, false
			}
			switch src[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if len(src)-j < 6 || hex4(src[j+2:j+6]) < 0 {
					return jsonVal{}, j, false
				}
				j += 6
			default:
				return jsonVal{}, j, false
			}
		case c < 0x20:
			return jsonVal{}, j, false
		case c < utf8.RuneSelf:
			j++
		default:
			r, size := utf8.DecodeRune(src[j:])
			if r == utf8.RuneError && size == 1 {
				return jsonVal{}, j, false
			}
			j += size
		}
	}
	return jsonVal{}, len(src), false
}

// hex4 is the value of four hex digits, or -1.
func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

func (d *jsonDoc) object(i, depth int) (jsonVal, int, bool) {
	if depth > MaxJSONDepth {
		return jsonVal{}, i, false
	}
	src, mark := d.src, len(d.stack)
	i = skipSpace(src, i+1)
	if i < len(src) && src[i] == '}' {
		return d.close(jsonObject, mark), i + 1, true
	}
	for {
		if i >= len(src) || src[i] != '"' {
			return jsonVal{}, i, false
		}
		k, j, ok := d.str(i)
		if !ok {
			return jsonVal{}, j, false
		}
		if j = skipSpace(src, j); j >= len(src) || src[j] != ':' {
			return jsonVal{}, j, false
		}
		v, j, ok := d.value(skipSpace(src, j+1), depth)
		if !ok {
			return jsonVal{}, j, false
		}
		d.stack = append(d.stack, k, v)
		if j = skipSpace(src, j); j >= len(src) {
			return jsonVal{}, j, false
		}
		switch src[j] {
		case ',':
			i = skipSpace(src, j+1)
		case '}':
			return d.close(jsonObject, mark), j + 1, true
		default:
			return jsonVal{}, j, false
		}
	}
}

func (d *jsonDoc) array(i, depth int) (jsonVal, int, bool) {
	if depth > MaxJSONDepth {
		return jsonVal{}, i, false
	}
	src, mark := d.src, len(d.stack)
	i = skipSpace(src, i+1)
	if i < len(src) && src[i] == ']' {
		return d.close(jsonArray, mark), i + 1, true
	}
	for {
		v, j, ok := d.value(i, depth)
		if !ok {
			return jsonVal{}, j, false
		}
		d.stack = append(d.stack, v)
		if j = skipSpace(src, j); j >= len(src) {
			return jsonVal{}, j, false
		}
		switch src[j] {
		case ',':
			i = skipSpace(src, j+1)
		case ']':
			return d.close(jsonArray, mark), j + 1, true
		default:
			return jsonVal{}, j, false
		}
	}
}

// close moves the members or elements of the container opened at stack[mark] to vals.
func (d *jsonDoc) close(kind jsonKind, mark int) jsonVal {
	lo := len(d.vals)
	d.vals = append(d.vals, d.stack[mark:]...)
	d.stack = d.stack[:mark]
	return jsonVal{kind: kind, lo: int32(lo), hi: int32(len(d.vals))}
}

// Strings shared within a document: at most maxShared of at most maxSharedLen bytes.
const (
	maxShared    = 512
	maxSharedLen = 64
)

// text is a string value's text (a copy: it outlives the body), shared with the same text
// copied before from the document when it is short.
func (d *jsonDoc) text(v jsonVal) string {
	b := d.src[v.lo:v.hi]
	if v.esc {
		return unescapeJSON(b)
	}
	if len(b) > maxSharedLen {
		return string(b)
	}
	if s, ok := d.shared[string(b)]; ok {
		return s
	}
	s := string(b)
	if d.shared == nil {
		d.shared = make(map[string]string)
	}
	if len(d.shared) < maxShared {
		d.shared[s] = s
	}
	return s
}

// unique is a string value's text copied without sharing, for what is never repeated (an
// event's id).
func (d *jsonDoc) unique(v jsonVal) string {
	if v.kind == jsonString && !v.esc {
		return string(d.src[v.lo:v.hi])
	}
	return d.scalar(v)
}

// unescapeJSON undoes the escapes of a valid JSON string as encoding/json does: a surrogate
// escape that is not half of a valid pair reads as U+FFFD.
func unescapeJSON(b []byte) string {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); {
		c := b[i]
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		switch b[i+1] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := hex4(b[i+2 : i+6])
			i += 6
			if utf16.IsSurrogate(r) {
				if len(b)-i >= 6 && b[i] == '\\' && b[i+1] == 'u' {
					if dec := utf16.DecodeRune(r, hex4(b[i+2:i+6])); dec != unicode.ReplacementChar {
						out = utf8.AppendRune(out, dec)
						i += 6
						continue
					}
				}
				r = unicode.ReplacementChar
			}
			out = utf8.AppendRune(out, r)
			continue
		default: // '"', '\\', '/'
			out = append(out, b[i+1])
		}
		i += 2
	}
	return string(out)
}

// is says whether the string value k is name, without copying it.
func (d *jsonDoc) is(k jsonVal, name string) bool {
	if !k.esc {
		return string(d.src[k.lo:k.hi]) == name
	}
	return d.text(k) == name
}

// get is obj's member name (its last value when the key repeats, as a map keeps it), or
// jsonAbsent when obj has no such member or is not an object.
func (d *jsonDoc) get(obj jsonVal, name string) jsonVal {
	if obj.kind != jsonObject {
		return jsonVal{}
	}
	for i := obj.hi - 2; i >= obj.lo; i -= 2 {
		if d.is(d.vals[i], name) {
			return d.vals[i+1]
		}
	}
	return jsonVal{}
}

// scalar is a string, number or boolean as text (SDKs send numeric user ids), else "".
func (d *jsonDoc) scalar(v jsonVal) string {
	switch v.kind {
	case jsonString:
		return d.text(v)
	case jsonNumber:
		return string(d.src[v.lo:v.hi])
	case jsonTrue:
		return "true"
	case jsonFalse:
		return "false"
	}
	return ""
}

// stringValue is a string value's text, or "" for any other kind.
func (d *jsonDoc) stringValue(v jsonVal) string {
	if v.kind != jsonString {
		return ""
	}
	return d.text(v)
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

// segmentSpecEvents are the track events of Segment's e-commerce spec that are what the
// campaign metrics count: a promotion seen is an impression, clicked a click, an order
// completed a conversion (its revenue, else total, in its currency, the conversion's value).
// The event keeps its name.
var segmentSpecEvents = map[string]ingestv1.EventType{
	"Promotion Viewed":  ingestv1.EventType_EVENT_TYPE_IMPRESSION,
	"Promotion Clicked": ingestv1.EventType_EVENT_TYPE_CLICK,
	"Order Completed":   ingestv1.EventType_EVENT_TYPE_CONVERSION,
}

// maxOrderAmount bounds an order's amount so its micros fit an int64 exactly enough.
const maxOrderAmount = 1e12

// orderValue is an order's value from the texts of its revenue, total and currency: nil when
// there is no number or no 3-letter currency (the conversion then counts without a value;
// a value ingest would refuse must not cost the event).
func orderValue(revenue, total, currency string) *ingestv1.Money {
	amount := revenue
	if amount == "" {
		amount = total
	}
	f, err := strconv.ParseFloat(amount, 64)
	currency = strings.ToUpper(currency)
	if err != nil || math.IsNaN(f) || math.Abs(f) > maxOrderAmount || len(currency) != 3 || strings.Trim(currency, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
		return nil
	}
	return &ingestv1.Money{AmountMicros: int64(math.Round(f * 1e6)), Currency: currency}
}

// mapped is one Segment item turned into an event, with the corrections made on the way.
type mapped struct {
	event *ingestv1.Event
	// warnings name what was corrected ("timestamp"), for the metrics.
	warnings []string
}

// mapSegmentEvent turns one Segment item of d into an ingest event. typ is the call type (from
// the path for single-event routes, else the item's "type"); batch is the batch object, whose
// context and sentAt the item's own values override (jsonAbsent for a single event). A type
// we do not know leaves the event's type unspecified, with the type sent in the property
// "segment_type": ingest rejects it, and keeps it with the reason.
func mapSegmentEvent(d *jsonDoc, item jsonVal, typ string, batch jsonVal) mapped {
	var m mapped
	et, known := segmentTypes[typ]
	ctx := segmentCtx{d: d, item: d.get(item, "context"), batch: d.get(batch, "context")}
	props := d.get(item, "properties")
	e := &ingestv1.Event{
		EventId:     d.unique(d.get(item, "messageId")),
		Type:        et,
		UserId:      d.scalar(d.get(item, "userId")),
		AnonymousId: d.scalar(d.get(item, "anonymousId")),
	}
	if e.EventId == "" {
		e.EventId = newEventID()
	}
	switch typ {
	case "track":
		e.Name = d.scalar(d.get(item, "event"))
		if t, ok := segmentSpecEvents[e.Name]; ok {
			e.Type = t
			if t == ingestv1.EventType_EVENT_TYPE_CONVERSION {
				e.Value = orderValue(d.scalar(d.get(props, "revenue")), d.scalar(d.get(props, "total")), d.scalar(d.get(props, "currency")))
			}
		}
	case "page", "screen":
		e.Name = d.scalar(d.get(item, "name"))
	}

	// Traits are kept as properties named "traits.<trait>" (one level; a nested trait stays a
	// nested value): identify and group carry them at the top level, other calls in context.
	traits := d.get(item, "traits")
	if traits.kind != jsonObject {
		traits = ctx.get("traits")
	}
	var fields map[string]*structpb.Value
	if n := members(props) + members(traits); n > 0 {
		fields = make(map[string]*structpb.Value, n)
	}
	if props.kind == jsonObject {
		for i := props.lo; i < props.hi; i += 2 {
			if k := d.vals[i]; !d.is(k, "campaign_id") && !d.is(k, "variant") && !d.is(k, "variation_id") {
				fields[d.text(k)] = d.protoValue(d.vals[i+1])
			}
		}
	}
	if traits.kind == jsonObject {
		for i := traits.lo; i < traits.hi; i += 2 {
			fields["traits."+d.text(d.vals[i])] = d.protoValue(d.vals[i+1])
		}
	}
	put := func(k string, v *structpb.Value) {
		if fields == nil {
			fields = map[string]*structpb.Value{}
		}
		fields[k] = v
	}
	if typ == "screen" || typ == "group" || typ == "alias" || !known {
		put("segment_type", structpb.NewStringValue(typ))
	}
	for _, f := range segmentIDProperties {
		if s := d.scalar(d.get(item, f.key)); s != "" {
			put(f.prop, structpb.NewStringValue(s))
		}
	}
	if len(fields) > 0 {
		e.Properties = &structpb.Struct{Fields: fields}
	}

	// properties.campaign_id (else the UTM campaign) and properties.variant (else
	// variation_id) are the event's campaign and variant, not repeated as properties.
	e.CampaignId = d.scalar(d.get(props, "campaign_id"))
	if e.CampaignId == "" {
		e.CampaignId = d.scalar(d.get(ctx.get("campaign"), "name"))
	}
	e.Variant = d.scalar(d.get(props, "variant"))
	if e.Variant == "" {
		e.Variant = d.scalar(d.get(props, "variation_id"))
	}
	e.Context = ctx.event()

	// An explicit null is no time, as an absent one.
	ts := d.get(item, "timestamp")
	if ts.kind <= jsonNull {
		ts = d.get(item, "originalTimestamp")
	}
	sent := d.get(item, "sentAt")
	if sent.kind <= jsonNull {
		sent = d.get(batch, "sentAt")
	}
	var bad bool
	if e.Timestamp, bad = d.time(ts); bad {
		m.warnings = append(m.warnings, "timestamp")
	}
	if e.SentAt, bad = d.time(sent); bad {
		m.warnings = append(m.warnings, "sent_at")
	}
	m.event = e
	return m
}

// unmappableItem is a batch item that is not an object, as an event ingest rejects (it has no
// type) and keeps: the item is its property "segment_item".
func unmappableItem(d *jsonDoc, item jsonVal) *ingestv1.Event {
	return &ingestv1.Event{EventId: newEventID(),
		Properties: &structpb.Struct{Fields: map[string]*structpb.Value{"segment_item": d.protoValue(item)}}}
}

// segmentIDProperties are the item's ids kept as properties.
var segmentIDProperties = []struct{ key, prop string }{
	{"groupId", "group_id"}, {"previousId", "previous_id"}, {"category", "category"},
}

// members is the number of members of an object, 0 for anything else.
func members(v jsonVal) int {
	if v.kind != jsonObject {
		return 0
	}
	return int(v.hi-v.lo) / 2
}

// segmentCtx is an item's context laid over its batch's (a shallow merge: an item's
// context.app replaces the batch's context.app), read without building the merged object.
type segmentCtx struct {
	d           *jsonDoc
	item, batch jsonVal
}

func (c segmentCtx) get(name string) jsonVal {
	if v := c.d.get(c.item, name); v.kind != jsonAbsent {
		return v
	}
	return c.d.get(c.batch, name)
}

// event keeps what ingest stores of a Segment context (nil when that is nothing).
func (c segmentCtx) event() *ingestv1.EventContext {
	d := c.d
	var e ingestv1.EventContext
	e.Ip = d.scalar(c.get("ip"))
	e.UserAgent = d.scalar(c.get("userAgent"))
	e.Locale = d.scalar(c.get("locale"))
	if app := c.get("app"); app.kind == jsonObject {
		e.App = d.scalar(d.get(app, "name"))
		if v := d.scalar(d.get(app, "version")); v != "" && e.App != "" {
			e.App += "/" + v
		}
	}
	if dev := c.get("device"); dev.kind == jsonObject {
		e.Device = d.scalar(d.get(dev, "model"))
		if e.Device == "" {
			e.Device = d.scalar(d.get(dev, "type"))
		}
	}
	if e.Ip == "" && e.UserAgent == "" && e.Locale == "" && e.App == "" && e.Device == "" {
		return nil
	}
	return &ingestv1.EventContext{Ip: e.Ip, UserAgent: e.UserAgent, Locale: e.Locale, App: e.App, Device: e.Device}
}

// protoValue converts a parsed value to a property value; a number as numberValue says.
func (d *jsonDoc) protoValue(v jsonVal) *structpb.Value {
	switch v.kind {
	case jsonTrue:
		return structpb.NewBoolValue(true)
	case jsonFalse:
		return structpb.NewBoolValue(false)
	case jsonString:
		return structpb.NewStringValue(d.text(v))
	case jsonNumber:
		return numberValue(string(d.src[v.lo:v.hi]))
	case jsonArray:
		list := make([]*structpb.Value, v.hi-v.lo)
		for i := range list {
			list[i] = d.protoValue(d.vals[int(v.lo)+i])
		}
		return structpb.NewListValue(&structpb.ListValue{Values: list})
	case jsonObject:
		fields := make(map[string]*structpb.Value, members(v))
		for i := v.lo; i < v.hi; i += 2 {
			fields[d.text(d.vals[i])] = d.protoValue(d.vals[i+1])
		}
		return structpb.NewStructValue(&structpb.Struct{Fields: fields})
	}
	return structpb.NewNullValue()
}

// time parses a time value leniently (see segmentTime): absent or null is no time, a value
// that is not a string is bad.
func (d *jsonDoc) time(v jsonVal) (*timestamppb.Timestamp, bool) {
	switch v.kind {
	case jsonAbsent, jsonNull:
		return nil, false
	case jsonString:
		text := d.src[v.lo:v.hi]
		if last := &d.lastTime; last.text == nil || !bytes.Equal(text, last.text) {
			last.text = text
			last.t, last.ok = parseSegmentTime(d.text(v))
		}
		return segmentTimestamp(d.lastTime.t, d.lastTime.ok)
	}
	return nil, true
}

// maxExactInteger is 2^53: every integer up to it in magnitude is exactly a float64.
const maxExactInteger = 1 << 53

// numberValue is the property value of a JSON number's text. A number that a float64 cannot
// hold exactly (an integer id above 2^53, or one out of float64's range) is kept as its
// decimal text: property values are stored as strings anyway, so the id arrives as the client
// sent it.
func numberValue(text string) *structpb.Value {
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
	return segmentTimeText(s)
}

// segmentTimeText parses a time sent as a string, as segmentTime.
func segmentTimeText(s string) (ts *timestamppb.Timestamp, bad bool) {
	return segmentTimestamp(parseSegmentTime(s))
}

// parseSegmentTime is the time s spells in any of segmentTimeLayouts.
func parseSegmentTime(s string) (time.Time, bool) {
	for _, layout := range segmentTimeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// segmentTimestamp is t as an event's time; bad when t was not parsed or is out of the
// range a timestamp holds.
func segmentTimestamp(t time.Time, parsed bool) (ts *timestamppb.Timestamp, bad bool) {
	if !parsed {
		return nil, true
	}
	pb := timestamppb.New(t)
	if !pb.IsValid() {
		return nil, true
	}
	return pb, false
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
