// Package stripe is a stand-in for the part of Stripe's API the billing service uses: billing
// meter events with Stripe's identifier deduplication, billing meters, meter event summaries,
// and signed webhooks. It keeps every accepted meter event in an outbox that counts, per
// identifier, how many times it was received and how many times it was accepted (at most
// once), so a test can prove that retries never double-bill. Failures are injected through
// Faults or POST /faults (429, 500, 500 after accepting, hang after accepting).
//
// Routes (Stripe's shapes, form-encoded requests, {"error":{…}} answers, bearer key):
// POST /v1/billing/meter_events; GET /v1/billing/meters; GET /v1/billing/meters/{id}/
// event_summaries. The stand-in's own: GET and DELETE /outbox; POST and DELETE /faults;
// POST /webhooks/send {"type","customer",…} (posts a signed event to the webhook URL).
//
// A meter is created for an event_name on its first event (sum aggregation), unless
// Config.Meters presets them. An identifier already used answers what Stripe answers: 400
// invalid_request_error "An event already exists with identifier <id>." and the event is
// not counted again.
package stripe

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/standin"
)

// Config configures the stand-in.
type Config struct {
	// APIKey is the bearer key every API request must carry.
	APIKey string
	// WebhookSecret signs the webhooks (Stripe's whsec_… endpoint secret).
	WebhookSecret string
	// WebhookURL receives the webhooks; POST /webhooks/send answers 409 when empty.
	WebhookURL string
	// Meters presets meters: event_name → id. Others are created on first use.
	Meters map[string]string
	// Logger logs requests and webhook posts, never the keys.
	Logger *slog.Logger
	// HTTPClient posts the webhooks (a client with a 10 s timeout when nil).
	HTTPClient *http.Client
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Event is one accepted meter event, as the outbox shows it.
type Event struct {
	Identifier string    `json:"identifier"`
	EventName  string    `json:"event_name"`
	Customer   string    `json:"stripe_customer_id"`
	Value      int64     `json:"value"`
	Timestamp  time.Time `json:"timestamp"`
	AcceptedAt time.Time `json:"accepted_at"`
}

type meter struct {
	ID        string
	EventName string
	Created   int64
}

// Server is the stand-in. It is safe for concurrent use.
type Server struct {
	apiKey string
	secret string
	log    *slog.Logger
	client *http.Client
	now    func() time.Time
	faults standin.Faults
	mux    *http.ServeMux
	done   chan struct{}
	once   sync.Once

	mu         sync.Mutex
	webhookURL string
	events     []Event
	byID       map[string]int // identifier → index in events
	received   map[string]int // identifier → requests that carried it (valid ones)
	meters     []meter
}

// New returns a stand-in.
func New(cfg Config) (*Server, error) {
	if cfg.APIKey == "" {
		return nil, errors.New("stripe stand-in: api key is required")
	}
	if cfg.WebhookSecret == "" {
		return nil, errors.New("stripe stand-in: webhook secret is required")
	}
	s := &Server{
		apiKey: cfg.APIKey, secret: cfg.WebhookSecret, log: cfg.Logger, client: cfg.HTTPClient, now: cfg.Now,
		webhookURL: cfg.WebhookURL, byID: map[string]int{}, received: map[string]int{}, done: make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.client == nil {
		s.client = &http.Client{Timeout: 10 * time.Second}
	}
	if s.now == nil {
		s.now = time.Now
	}
	names := make([]string, 0, len(cfg.Meters))
	for name := range cfg.Meters {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		s.meters = append(s.meters, meter{ID: cfg.Meters[name], EventName: name, Created: s.now().Unix()})
	}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("POST /v1/billing/meter_events", s.meterEvent)
	s.mux.HandleFunc("GET /v1/billing/meters", s.listMeters)
	s.mux.HandleFunc("GET /v1/billing/meters/{id}/event_summaries", s.summaries)
	s.mux.HandleFunc("GET /outbox", s.outbox)
	s.mux.HandleFunc("DELETE /outbox", s.clearOutbox)
	s.mux.HandleFunc("/faults", s.faults.ServeFaults)
	s.mux.HandleFunc("POST /webhooks/send", s.sendWebhook)
	return s, nil
}

// ServeHTTP serves the stand-in's routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Close releases hung requests.
func (s *Server) Close() { s.once.Do(func() { close(s.done) }) }

// Faults returns the fault queue, to inject failures from Go.
func (s *Server) Faults() *standin.Faults { return &s.faults }

// SetWebhookURL changes where webhooks are posted.
func (s *Server) SetWebhookURL(u string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.webhookURL = u
}

// Events returns a copy of the accepted meter events in acceptance order.
func (s *Server) Events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}

// Received returns how many valid requests carried the identifier (accepted, duplicates and
// those answered with an injected fault after accepting).
func (s *Server) Received(identifier string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.received[identifier]
}

// Accepted returns how many times an event with the identifier was counted: 0 or 1.
func (s *Server) Accepted(identifier string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.byID[identifier]; ok {
		return 1
	}
	return 0
}

// Total returns the sum of the accepted values of the customer's events named eventName.
func (s *Server) Total(eventName, customer string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, e := range s.events {
		if e.EventName == eventName && e.Customer == customer {
			n += e.Value
		}
	}
	return n
}

// Reset empties the outbox (the meters stay).
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events, s.byID, s.received = nil, map[string]int{}, map[string]int{}
}

// writeError answers in Stripe's error shape.
func writeError(w http.ResponseWriter, status int, typ, code, param, msg string) {
	e := map[string]string{"type": typ, "message": msg}
	if code != "" {
		e["code"] = code
	}
	if param != "" {
		e["param"] = param
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", "req_"+newID(14))
	if status == http.StatusBadRequest || status == http.StatusUnauthorized || status == http.StatusNotFound {
		w.Header().Set("Stripe-Should-Retry", "false")
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": e})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", "req_"+newID(14))
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if ok && subtle.ConstantTimeCompare([]byte(got), []byte(s.apiKey)) == 1 {
		return true
	}
	writeError(w, http.StatusUnauthorized, "invalid_request_error", "", "", "Invalid API Key provided.")
	return false
}

// meterEvent serves POST /v1/billing/meter_events.
func (s *Server) meterEvent(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	fault := s.faults.Next()
	switch fault {
	case standin.FaultRateLimit:
		writeError(w, http.StatusTooManyRequests, "invalid_request_error", "rate_limit", "", "Request rate limit exceeded.")
		s.log.Info("stripe stand-in: injected fault", "fault", fault)
		return
	case standin.FaultServerError:
		writeError(w, http.StatusInternalServerError, "api_error", "", "", "An unknown error occurred.")
		s.log.Info("stripe stand-in: injected fault", "fault", fault)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "", "", "Invalid request body.")
		return
	}
	now := s.now()
	ev, param, msg := parseMeterEvent(r.PostForm, now)
	if msg != "" {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "parameter_invalid", param, msg)
		return
	}
	s.mu.Lock()
	s.received[ev.Identifier]++
	_, dup := s.byID[ev.Identifier]
	if !dup {
		ev.AcceptedAt = now
		s.byID[ev.Identifier] = len(s.events)
		s.events = append(s.events, ev)
		s.meterFor(ev.EventName, now)
	}
	s.mu.Unlock()
	if dup {
		// What Stripe answers to an identifier it already holds.
		writeError(w, http.StatusBadRequest, "invalid_request_error", "", "", "An event already exists with identifier "+ev.Identifier+".")
		s.log.Info("stripe stand-in: duplicate identifier", "identifier", ev.Identifier)
		return
	}
	s.log.Debug("stripe stand-in: meter event accepted", "identifier", ev.Identifier, "event_name", ev.EventName)
	switch fault {
	case standin.FaultServerErrorAfterSend:
		writeError(w, http.StatusInternalServerError, "api_error", "", "", "An unknown error occurred.")
		s.log.Info("stripe stand-in: injected fault after accepting", "fault", fault, "identifier", ev.Identifier)
		return
	case standin.FaultHang:
		s.log.Info("stripe stand-in: injected fault after accepting", "fault", fault, "identifier", ev.Identifier)
		select {
		case <-r.Context().Done():
		case <-s.done:
		}
		return
	}
	writeJSON(w, map[string]any{
		"object": "billing.meter_event", "created": now.Unix(), "event_name": ev.EventName,
		"identifier": ev.Identifier, "livemode": false, "timestamp": ev.Timestamp.Unix(),
		"payload": map[string]string{"stripe_customer_id": ev.Customer, "value": strconv.FormatInt(ev.Value, 10)},
	})
}

// parseMeterEvent validates a meter event as Stripe documents it; msg is empty when valid.
func parseMeterEvent(f map[string][]string, now time.Time) (ev Event, param, msg string) {
	get := func(k string) string {
		if v := f[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	for k := range f {
		switch {
		case k == "event_name", k == "identifier", k == "timestamp", strings.HasPrefix(k, "payload["):
		default:
			return ev, k, "Received unknown parameter: " + k
		}
	}
	ev.EventName, ev.Identifier, ev.Customer = get("event_name"), get("identifier"), get("payload[stripe_customer_id]")
	switch {
	case ev.EventName == "":
		return ev, "event_name", "Missing required param: event_name."
	case len(ev.EventName) > 100:
		return ev, "event_name", "event_name is longer than 100 characters."
	case ev.Customer == "":
		return ev, "payload[stripe_customer_id]", "Missing required param: payload[stripe_customer_id]."
	case get("payload[value]") == "":
		return ev, "payload[value]", "Missing required param: payload[value]."
	case len(ev.Identifier) > 100:
		return ev, "identifier", "identifier is longer than 100 characters."
	}
	v, err := strconv.ParseInt(get("payload[value]"), 10, 64)
	if err != nil || v < 0 {
		return ev, "payload[value]", "payload[value] must be a non-negative whole number."
	}
	ev.Value = v
	if ev.Identifier == "" {
		ev.Identifier = "stdin_" + newID(16)
	}
	ev.Timestamp = now
	if ts := get("timestamp"); ts != "" {
		sec, err := strconv.ParseInt(ts, 10, 64)
		if err != nil {
			return ev, "timestamp", "Invalid integer: " + ts
		}
		ev.Timestamp = time.Unix(sec, 0).UTC()
		if ev.Timestamp.Before(now.Add(-35*24*time.Hour)) || ev.Timestamp.After(now.Add(5*time.Minute)) {
			return ev, "timestamp", "Timestamp must be within the past 35 calendar days or up to 5 minutes in the future."
		}
	}
	return ev, "", ""
}

// meterFor returns the meter of eventName, creating it. s.mu is held.
func (s *Server) meterFor(eventName string, now time.Time) meter {
	for _, m := range s.meters {
		if m.EventName == eventName {
			return m
		}
	}
	m := meter{ID: "mtr_" + newID(12), EventName: eventName, Created: now.Unix()}
	s.meters = append(s.meters, m)
	return m
}

func (m meter) wire() map[string]any {
	return map[string]any{
		"id": m.ID, "object": "billing.meter", "created": m.Created, "updated": m.Created,
		"display_name": m.EventName, "event_name": m.EventName, "status": "active", "livemode": false,
		"customer_mapping":    map[string]string{"event_payload_key": "stripe_customer_id", "type": "by_id"},
		"default_aggregation": map[string]string{"formula": "sum"},
		"value_settings":      map[string]string{"event_payload_key": "value"},
	}
}

// page applies Stripe's list pagination (limit 1..100, default 10; starting_after an id).
func page[T any](w http.ResponseWriter, r *http.Request, items []T, id func(T) string) (out []T, more, ok bool) {
	limit := 10
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			writeError(w, http.StatusBadRequest, "invalid_request_error", "parameter_invalid_integer", "limit", "This value must be between 1 and 100.")
			return nil, false, false
		}
		limit = n
	}
	start := 0
	if after := r.URL.Query().Get("starting_after"); after != "" {
		i := slices.IndexFunc(items, func(t T) bool { return id(t) == after })
		if i < 0 {
			writeError(w, http.StatusBadRequest, "invalid_request_error", "resource_missing", "starting_after", "No such object: '"+after+"'")
			return nil, false, false
		}
		start = i + 1
	}
	end := min(len(items), start+limit)
	return items[start:end], end < len(items), true
}

// listMeters serves GET /v1/billing/meters.
func (s *Server) listMeters(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	s.mu.Lock()
	meters := slices.Clone(s.meters)
	s.mu.Unlock()
	got, more, ok := page(w, r, meters, func(m meter) string { return m.ID })
	if !ok {
		return
	}
	data := make([]map[string]any, 0, len(got))
	for _, m := range got {
		data = append(data, m.wire())
	}
	writeJSON(w, map[string]any{"object": "list", "url": "/v1/billing/meters", "has_more": more, "data": data})
}

// summaries serves GET /v1/billing/meters/{id}/event_summaries: the sum of the customer's
// accepted events of the meter whose timestamps fall in [start_time, end_time), in one
// summary or one per day or hour (value_grouping_window).
func (s *Server) summaries(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	q := r.URL.Query()
	id := r.PathValue("id")
	s.mu.Lock()
	i := slices.IndexFunc(s.meters, func(m meter) bool { return m.ID == id })
	var m meter
	if i >= 0 {
		m = s.meters[i]
	}
	events := slices.Clone(s.events)
	s.mu.Unlock()
	if i < 0 {
		writeError(w, http.StatusNotFound, "invalid_request_error", "resource_missing", "id", "No such billing meter: '"+id+"'")
		return
	}
	customer := q.Get("customer")
	if customer == "" {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "parameter_missing", "customer", "Missing required param: customer.")
		return
	}
	var bounds [2]int64
	for j, k := range []string{"start_time", "end_time"} {
		v, err := strconv.ParseInt(q.Get(k), 10, 64)
		if err != nil || v%60 != 0 {
			writeError(w, http.StatusBadRequest, "invalid_request_error", "parameter_invalid_integer", k, k+" must be a timestamp aligned with a minute boundary.")
			return
		}
		bounds[j] = v
	}
	start, end := bounds[0], bounds[1]
	if end <= start {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "", "end_time", "end_time must be after start_time.")
		return
	}
	step := end - start
	switch q.Get("value_grouping_window") {
	case "":
	case "day":
		step = 86400
	case "hour":
		step = 3600
	default:
		writeError(w, http.StatusBadRequest, "invalid_request_error", "", "value_grouping_window", "Invalid value_grouping_window: must be one of day or hour.")
		return
	}
	if (end-start)%step != 0 || start%step != 0 {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "", "start_time", "start_time and end_time must align with the value_grouping_window.")
		return
	}
	var all []map[string]any
	for t := start; t < end; t += step {
		var sum int64
		for _, e := range events {
			if ts := e.Timestamp.Unix(); e.EventName == m.EventName && e.Customer == customer && ts >= t && ts < t+step {
				sum += e.Value
			}
		}
		all = append(all, map[string]any{
			"id": fmt.Sprintf("mtrusg_%s_%d", m.ID, t), "object": "billing.meter_event_summary", "meter": m.ID,
			"start_time": t, "end_time": t + step, "aggregated_value": float64(sum), "livemode": false,
		})
		if len(all) > math.MaxInt16 {
			break
		}
	}
	got, more, ok := page(w, r, all, func(m map[string]any) string { return m["id"].(string) })
	if !ok {
		return
	}
	writeJSON(w, map[string]any{"object": "list", "url": r.URL.Path, "has_more": more, "data": got})
}

func (s *Server) clearOutbox(w http.ResponseWriter, _ *http.Request) {
	s.Reset()
	w.WriteHeader(http.StatusNoContent)
}

// outbox serves GET /outbox: every accepted event, the total, and per identifier how many
// requests carried it (more than 1: a retry that Stripe deduplicated).
func (s *Server) outbox(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	out := struct {
		Total    int               `json:"total"`
		Received map[string]int    `json:"received"`
		Events   []Event           `json:"events"`
		MeterIDs map[string]string `json:"meters"`
	}{Total: len(s.events), Received: make(map[string]int, len(s.received)), Events: append([]Event{}, s.events...), MeterIDs: map[string]string{}}
	for k, v := range s.received {
		out.Received[k] = v
	}
	for _, m := range s.meters {
		out.MeterIDs[m.EventName] = m.ID
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}

func newID(n int) string {
	b := make([]byte, n/2+1)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}
