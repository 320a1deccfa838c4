package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
)

// The Segment HTTP API at the edge: SDKs instrumented for Segment send here by changing only
// their host and write key. These are plain HTTP handlers, not grpc-gateway routes, because the
// SDKs send what protojson would refuse or corrupt (text/plain bodies, unknown fields, integers
// above 2^53); every request still ends in IngestEvents with the caller's credential, so the
// validation, limits, skew rule, suppression and privacy rules and the ack after fsync are
// ingest's, exactly as for REST and gRPC.
//
// A write key is a CampaignMesh API key (cmk_…), sent as the Basic auth user name (password
// empty) or as "writeKey" in the body. The gateway refuses anything else (an access token, a
// missing key) with 401; ingest verifies the key and its events.write permission.
//
// Answers, chosen for how SDKs retry (they retry 5xx and 429, drop a batch on any other 4xx,
// and some count a 3xx as success): 200 {"success":true} only after ingest answered, i.e. the
// accepted events are stored; events ingest rejects inside a readable body still answer 200
// and are counted by field in gateway_segment_rejected_total; a body that cannot be read or is
// over the cap answers 400; a refused key 401 (403 for a key without events.write); over quota
// 429 with Retry-After; ingest or NATS unavailable 503 with Retry-After. No path answers 3xx.

// ingestPackage is the proto package of the backend that takes the events.
const ingestPackage = "campaignmesh.ingest.v1"

// Chunks of one Segment batch sent to ingest in separate calls: ingest takes at most 1,000
// events and 500 KB a call (its defaults).
const (
	segmentChunkEvents = 1000
	segmentChunkBytes  = 500 << 10
)

// segmentRoute is what a Segment path asks for.
type segmentRoute struct {
	// label is the route in the edge metrics.
	label string
	// typ is the call type of a single-event route; "" for a batch.
	typ string
	// settings marks the settings route; key is then the write key in the path.
	settings bool
	key      string
}

var (
	segmentSingle = map[string]string{
		"track": "track", "identify": "identify", "page": "page", "screen": "screen", "group": "group", "alias": "alias",
		"t": "track", "i": "identify", "p": "page", "s": "screen", "g": "group", "a": "alias",
	}
	segmentSettingsPath = regexp.MustCompile(`^(/v1)?/projects/([^/]+)/settings$`)
)

// matchSegment returns the Segment route of path, ignoring trailing and doubled slashes: an SDK
// configured with a host ending in "/" sends "/v1//b", which must be served, not redirected.
func matchSegment(path string) (segmentRoute, bool) {
	p := path
	for strings.Contains(p, "//") {
		p = strings.ReplaceAll(p, "//", "/")
	}
	p = strings.TrimRight(p, "/")
	switch p {
	case "/v1/batch", "/v1/import", "/v1/b", "/b":
		return segmentRoute{label: "POST " + p}, true
	}
	if name, ok := strings.CutPrefix(p, "/v1/"); ok {
		if typ, ok := segmentSingle[name]; ok {
			return segmentRoute{label: "POST " + p, typ: typ}, true
		}
	}
	if m := segmentSettingsPath.FindStringSubmatch(p); m != nil {
		return segmentRoute{label: "GET " + m[1] + "/projects/{writeKey}/settings", settings: true, key: m[2]}, true
	}
	return segmentRoute{}, false
}

// segmentMetrics count what happened to the events of Segment requests.
type segmentMetrics struct {
	events   *prometheus.CounterVec
	rejected *prometheus.CounterVec
	warnings *prometheus.CounterVec
}

func newSegmentMetrics(reg prometheus.Registerer) (*segmentMetrics, error) {
	m := &segmentMetrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_segment_events_total", Help: "Events of Segment API requests answered by ingest, by outcome (accepted, rejected, suppressed).",
		}, []string{"outcome"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_segment_rejected_total", Help: "Events of Segment API requests not stored, by the field at fault (\"event\" for the event as a whole).",
		}, []string{"field"}),
		warnings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_segment_warnings_total", Help: "Corrections made to Segment events at the edge, by field (an unparseable timestamp is replaced by the time received).",
		}, []string{"field"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.events, m.rejected, m.warnings} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register segment metrics: %w", err)
		}
	}
	return m, nil
}

// segmentAPI serves the Segment routes.
type segmentAPI struct {
	// ingest is the connection to ingest; calls carry requests marshalled by marshalChunk,
	// through codec.
	ingest   *grpc.ClientConn
	codec    passthroughCodec
	rawLimit int64
	metrics  *segmentMetrics
	logger   *slog.Logger
	// refusals records bodies refused as too large, as the REST routes' limit does.
	refusals *refusals
}

func newSegmentAPI(cfg Config, backends []Backend, refused *refusals) (*segmentAPI, error) {
	var conn *grpc.ClientConn
	for _, b := range backends {
		if b.Package == ingestPackage {
			conn = b.Conn
		}
	}
	if conn == nil {
		return nil, nil // no ingest behind this gateway: the paths are not served
	}
	m, err := newSegmentMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	return &segmentAPI{ingest: conn, codec: newPassthroughCodec(), rawLimit: int64(cfg.MaxBodyBytes), metrics: m, logger: cfg.Logger, refusals: refused}, nil
}

// serve answers a request on a Segment path.
func (s *segmentAPI) serve(w http.ResponseWriter, r *http.Request, route segmentRoute) {
	if slot, ok := r.Context().Value(routeKey{}).(*routeSlot); ok {
		slot.route = route.label
	}
	if r.Method == http.MethodOptions { // a preflight from an origin the CORS list does not allow
		w.Header().Set("Allow", "GET, POST, OPTIONS")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if route.settings {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeJSONError(w, http.StatusMethodNotAllowed, codes.Unimplemented, "method not allowed")
			return
		}
		s.settings(w, r, route.key)
		return
	}
	if r.Method != http.MethodPost {
		writeJSONError(w, http.StatusMethodNotAllowed, codes.Unimplemented, "method not allowed")
		return
	}
	s.events(w, r, route)
}

// settings answers what an SDK loads before sending: the Segment.io integration pointing at
// this host, and no destinations (events are delivered nowhere else).
func (s *segmentAPI) settings(w http.ResponseWriter, r *http.Request, key string) {
	if !strings.HasPrefix(key, authn.APIKeyPrefix) {
		writeJSONError(w, http.StatusNotFound, codes.NotFound, "unknown write key: a write key is a CampaignMesh API key (cmk_…)")
		return
	}
	protocol := "https"
	if r.TLS == nil {
		protocol = "http"
	}
	body, _ := json.Marshal(map[string]any{
		"integrations": map[string]any{
			"Segment.io": map[string]any{"apiKey": key, "apiHost": r.Host + "/v1", "protocol": protocol},
		},
		"plan":                 map[string]any{"track": map[string]any{"__default": map[string]any{"enabled": true}}},
		"edgeFunction":         map[string]any{},
		"analyticsNextEnabled": true,
		"middlewareSettings":   map[string]any{},
		"enabledMiddleware":    map[string]any{},
		"metrics":              map[string]any{"sampleRate": 0},
		"remotePlugins":        []any{},
	})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(append(body, '\n'))
}

// writeKey is the caller's write key: the Basic auth user name, a bearer API key, or the
// body's writeKey.
func writeKey(r *http.Request, d *jsonDoc, body jsonVal) string {
	if user, _, ok := r.BasicAuth(); ok && user != "" {
		return user
	}
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && tok != "" {
		return tok
	}
	return d.stringValue(d.get(body, "writeKey"))
}

func (s *segmentAPI) events(w http.ResponseWriter, r *http.Request, route segmentRoute) {
	scratch := getSegmentScratch()
	defer putSegmentScratch(scratch)
	raw, err := scratch.readSegmentBody(r.Body, s.rawLimit)
	switch {
	case errors.Is(err, errBodyTooLarge):
		s.refusals.note(r.Context(), MethodRequestTooLarge, clientIPFromContext(r.Context()))
		writeJSONError(w, http.StatusBadRequest, codes.InvalidArgument, fmt.Sprintf("body: larger than %d bytes (after decompression)", SegmentMaxBodyBytes))
		return
	case err != nil:
		writeJSONError(w, http.StatusBadRequest, codes.InvalidArgument, "body: could not be read (bad gzip or transfer encoding)")
		return
	}
	d := &scratch.doc
	body, ok := d.parse(raw)
	if !ok {
		// Why, in the words of the REST routes' input check as before the single-pass parser
		// made it: a body that passes the check and is still refused is not a JSON object.
		reason := checkJSON(raw, false)
		if reason == "" {
			reason = "is not a JSON object"
		}
		writeJSONError(w, http.StatusBadRequest, codes.InvalidArgument, "body: "+reason)
		return
	}
	key := writeKey(r, d, body)
	switch {
	case key == "":
		writeJSONError(w, http.StatusUnauthorized, codes.Unauthenticated, "write key required: send it as the Basic auth user name or as writeKey")
		return
	case !strings.HasPrefix(key, authn.APIKeyPrefix):
		writeJSONError(w, http.StatusUnauthorized, codes.Unauthenticated, "a write key is a CampaignMesh API key (cmk_…); create one with only the events.write scope")
		return
	}

	var items []jsonVal
	var batchLevel jsonVal
	if route.typ != "" {
		items = []jsonVal{body}
	} else {
		list := d.get(body, "batch")
		if list.kind != jsonArray {
			writeJSONError(w, http.StatusBadRequest, codes.InvalidArgument, "batch: must be an array of events")
			return
		}
		if list.hi-list.lo > SegmentMaxBatchEvents {
			writeJSONError(w, http.StatusBadRequest, codes.InvalidArgument, fmt.Sprintf("batch: at most %d events", SegmentMaxBatchEvents))
			return
		}
		items, batchLevel = d.vals[list.lo:list.hi], body
	}

	if len(items) == 0 {
		writeJSONError(w, http.StatusBadRequest, codes.InvalidArgument, "batch: has no events")
		return
	}
	// Every item goes to ingest, even one that cannot be an event here (not an object, or of a
	// type we do not know): ingest rejects it like any invalid event, so it is counted by
	// reason, kept in the dead letters and shown in the live debugger, never lost silently.
	events := make([]*ingestv1.Event, 0, len(items))
	for _, item := range items {
		if item.kind != jsonObject {
			events = append(events, unmappableItem(d, item))
			continue
		}
		typ := route.typ
		if typ == "" {
			typ = d.stringValue(d.get(item, "type"))
		}
		m := mapSegmentEvent(d, item, typ, batchLevel)
		for _, f := range m.warnings {
			s.metrics.warnings.WithLabelValues(f).Inc()
		}
		events = append(events, m.event)
	}

	ctx := metadata.NewOutgoingContext(r.Context(), metadata.Pairs(
		"authorization", "Bearer "+key, "x-request-id", telemetry.RequestID(r.Context()),
		authn.WriteKeyMetadata, "1"))
	if ip := clientIPFromContext(r.Context()); ip != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "x-forwarded-for", ip)
	}
	for i, chunk := range chunkEvents(events) {
		if err := s.send(ctx, chunk); err != nil {
			s.answerError(w, r, err, i > 0)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"success":true}` + "\n"))
}

// chunkEvents splits events into calls ingest takes: at most segmentChunkEvents events and
// segmentChunkBytes bytes of request each. Measuring the events leaves their sizes cached in
// them for marshalChunk.
func chunkEvents(events []*ingestv1.Event) [][]*ingestv1.Event {
	var out [][]*ingestv1.Event
	start, size := 0, 0
	for i, e := range events {
		n := proto.Size(e)
		n += protowire.SizeTag(requestEventsField) + protowire.SizeVarint(uint64(n))
		if i > start && (i-start >= segmentChunkEvents || size+n > segmentChunkBytes) {
			out = append(out, events[start:i])
			start, size = i, 0
		}
		size += n
	}
	if start < len(events) {
		out = append(out, events[start:])
	}
	return out
}

// requestEventsField is the field number of IngestEventsRequest.events.
var requestEventsField = (&ingestv1.IngestEventsRequest{}).ProtoReflect().Descriptor().Fields().ByName("events").Number()

// marshalChunk is the IngestEventsRequest of events, marshalled once with the sizes chunkEvents
// measured: the gRPC codec would measure every event again before marshalling (a third pass over
// the properties' maps, the costliest part of an event).
func marshalChunk(events []*ingestv1.Event) ([]byte, error) {
	opts := proto.MarshalOptions{UseCachedSize: true}
	n := 0
	for _, e := range events {
		n += protowire.SizeTag(requestEventsField) + protowire.SizeBytes(opts.Size(e))
	}
	buf := make([]byte, 0, n)
	for _, e := range events {
		buf = protowire.AppendTag(buf, requestEventsField, protowire.BytesType)
		buf = protowire.AppendVarint(buf, uint64(opts.Size(e)))
		var err error
		if buf, err = opts.MarshalAppend(buf, e); err != nil {
			return nil, fmt.Errorf("marshal events: %w", err)
		}
	}
	if len(buf) != n {
		return nil, fmt.Errorf("marshal events: %d bytes, measured %d", len(buf), n)
	}
	return buf, nil
}

// send stores one chunk (measured by chunkEvents) and counts what ingest did with its events.
func (s *segmentAPI) send(ctx context.Context, events []*ingestv1.Event) error {
	req, err := marshalChunk(events)
	if err != nil {
		return &ingestError{err: status.Error(codes.Internal, err.Error())}
	}
	var header metadata.MD
	resp := &ingestv1.IngestEventsResponse{}
	err = s.ingest.Invoke(ctx, ingestv1.IngestService_IngestEvents_FullMethodName, &frame{data: req}, resp,
		grpc.ForceCodecV2(s.codec), grpc.Header(&header))
	if err != nil {
		return &ingestError{err: err, header: header}
	}
	s.metrics.events.WithLabelValues("accepted").Add(float64(resp.GetAccepted()))
	s.metrics.events.WithLabelValues("suppressed").Add(float64(resp.GetSuppressed()))
	s.metrics.events.WithLabelValues("rejected").Add(float64(len(resp.GetRejected())))
	for _, rej := range resp.GetRejected() {
		s.metrics.rejected.WithLabelValues(rejectedField(rej.GetField())).Inc()
	}
	for range resp.GetWarnings() {
		s.metrics.warnings.WithLabelValues("ingest").Inc()
	}
	return nil
}

// rejectedField is the metric label of a rejection's field: "events[3].user_id" → "user_id",
// a rejection of the whole event → "event". Ingest names a fixed set of fields, so the label
// values are bounded.
func rejectedField(field string) string {
	if i := strings.Index(field, "]."); i >= 0 {
		f := field[i+2:]
		if j := strings.IndexAny(f, ".["); j >= 0 {
			f = f[:j]
		}
		return f
	}
	return "event"
}

// ingestError is a failed IngestEvents call with the header metadata it answered.
type ingestError struct {
	err    error
	header metadata.MD
}

func (e *ingestError) Error() string { return e.err.Error() }

// answerError answers a failed ingest call in the status table above. After part of a batch
// was stored (partial), any failure answers 503: the SDK then sends the whole batch again, and
// the events stored twice have the same event_id, which the analytics writer keeps once.
// Answering 4xx there would make the SDK drop the part that was not stored.
func (s *segmentAPI) answerError(w http.ResponseWriter, r *http.Request, err error, partial bool) {
	var header metadata.MD
	var ie *ingestError
	if errors.As(err, &ie) {
		err, header = ie.err, ie.header
	}
	st := cleanLogged(r.Context(), s.logger, r.Method+" "+r.URL.Path, err)
	retry := func() {
		if v := header.Get("retry-after"); len(v) > 0 {
			w.Header().Set("Retry-After", v[0])
			return
		}
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
				w.Header().Set("Retry-After", strconv.Itoa(retrySeconds(ri.GetRetryDelay().AsDuration())))
				return
			}
		}
		w.Header().Set("Retry-After", "1")
	}
	code := st.Code()
	if partial {
		code = codes.Unavailable
	}
	switch code {
	case codes.Unauthenticated:
		writeJSONError(w, http.StatusUnauthorized, codes.Unauthenticated, "write key not valid (unknown, revoked or expired)")
	case codes.PermissionDenied:
		writeJSONError(w, http.StatusForbidden, codes.PermissionDenied, "this key may not send events: create an API key with only the events.write scope")
	case codes.ResourceExhausted:
		retry()
		writeJSONError(w, http.StatusTooManyRequests, codes.ResourceExhausted, st.Message())
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		writeJSONError(w, http.StatusBadRequest, st.Code(), st.Message())
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted, codes.Canceled:
		retry()
		writeJSONError(w, http.StatusServiceUnavailable, codes.Unavailable, "service unavailable; retry later")
	default:
		writeJSONError(w, http.StatusInternalServerError, st.Code(), st.Message())
	}
}
