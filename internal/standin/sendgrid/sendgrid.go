// Package sendgrid is a stand-in for SendGrid's v3 Mail Send API and its signed Event
// Webhook: an http.Handler that checks the bearer key, validates a send as SendGrid does
// (answering errors in its {"errors":[…]} shape), answers 202 with an X-Message-Id, keeps
// every accepted message in an in-memory outbox with a count per recipient, and posts
// processed/delivered (or bounce) events, signed with its own ECDSA P-256 key, to a
// configured webhook URL. Failures are injected through Faults or POST /faults, and a rate
// limit answers 429 with SendGrid's X-RateLimit-* headers.
//
// Routes: POST /v3/mail/send; GET /v3/user/webhooks/event/settings/signed (the public key,
// as SendGrid serves it); GET /v3/messages (the Email Activity Feed's filter, see activity);
// GET and DELETE /outbox; POST and DELETE /faults.
//
// Recipients at the domain bounce.invalid bounce (a "bounce" event instead of "delivered").
package sendgrid

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/mail"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/standin"
)

// BounceDomain is the recipient domain whose messages bounce.
const BounceDomain = "bounce.invalid"

// Config configures the stand-in.
type Config struct {
	// APIKey is the bearer key a send must carry.
	APIKey string
	// WebhookURL receives the Event Webhook posts; none are sent when empty.
	WebhookURL string
	// RatePerSecond limits mail sends (429 beyond it); 0 is unlimited.
	RatePerSecond int
	// Key signs the webhooks; a fresh P-256 key is generated when nil.
	Key *ecdsa.PrivateKey
	// Logger logs requests and webhook posts, never the key or addresses.
	Logger *slog.Logger
	// HTTPClient posts the webhooks (a client with a 10 s timeout when nil).
	HTTPClient *http.Client
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Message is one accepted message to one recipient, as the outbox shows it.
type Message struct {
	ID         string            `json:"id"`
	To         string            `json:"to"`
	From       string            `json:"from"`
	Subject    string            `json:"subject"`
	Text       string            `json:"text,omitempty"`
	HTML       string            `json:"html,omitempty"`
	Headers    map[string]string `json:"headers,omitempty"`
	CustomArgs map[string]string `json:"custom_args,omitempty"`
	Categories []string          `json:"categories,omitempty"`
	AcceptedAt time.Time         `json:"accepted_at"`
}

// Server is the stand-in. It is safe for concurrent use.
type Server struct {
	apiKey  string
	key     *ecdsa.PrivateKey
	pub     string
	log     *slog.Logger
	client  *http.Client
	now     func() time.Time
	limiter *standin.Limiter
	faults  standin.Faults
	mux     *http.ServeMux

	mu         sync.Mutex
	messages   []Message
	counts     map[string]int
	webhookURL string

	// pending holds events not yet posted: unbounded, so neither a slow webhook receiver
	// slows sends nor an overload drops events. wake signals the dispatcher.
	pending []map[string]any
	wake    chan struct{}
	done    chan struct{}
	wg      sync.WaitGroup
	closing sync.Once
}

// New returns a running stand-in; Close stops its webhook sender.
func New(cfg Config) (*Server, error) {
	if cfg.APIKey == "" {
		return nil, errors.New("sendgrid stand-in: api key is required")
	}
	key := cfg.Key
	if key == nil {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, fmt.Errorf("sendgrid stand-in: generate key: %w", err)
		}
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("sendgrid stand-in: encode public key: %w", err)
	}
	s := &Server{
		apiKey: cfg.APIKey, key: key, pub: base64.StdEncoding.EncodeToString(der),
		log: cfg.Logger, client: cfg.HTTPClient, now: cfg.Now,
		limiter: standin.NewLimiter(cfg.RatePerSecond), counts: make(map[string]int),
		webhookURL: cfg.WebhookURL, wake: make(chan struct{}, 1), done: make(chan struct{}),
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
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("POST /v3/mail/send", s.send)
	s.mux.HandleFunc("GET /v3/user/webhooks/event/settings/signed", s.publicKey)
	s.mux.HandleFunc("GET /v3/messages", s.activity)
	s.mux.HandleFunc("GET /outbox", s.outbox)
	s.mux.HandleFunc("DELETE /outbox", s.clearOutbox)
	s.mux.HandleFunc("/faults", s.faults.ServeFaults)
	s.wg.Add(1)
	go s.dispatch()
	return s, nil
}

// ServeHTTP serves the stand-in's routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Close releases hung requests and stops the webhook sender; events not yet posted are
// dropped (a test waits for the events it expects before closing).
func (s *Server) Close() {
	s.closing.Do(func() { close(s.done) })
	s.wg.Wait()
}

// PublicKey returns the webhook verification key as SendGrid shows it (base64 DER).
func (s *Server) PublicKey() string { return s.pub }

// Faults returns the fault queue, to inject failures from Go.
func (s *Server) Faults() *standin.Faults { return &s.faults }

// SetWebhookURL changes where events are posted ("" stops posting).
func (s *Server) SetWebhookURL(u string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.webhookURL = u
}

// Messages returns a copy of the outbox in acceptance order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// Count returns how many messages were accepted for the address (case-insensitive).
func (s *Server) Count(email string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[strings.ToLower(email)]
}

// Total returns how many messages the outbox holds.
func (s *Server) Total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.messages)
}

// Reset empties the outbox.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.messages, s.counts = nil, make(map[string]int)
}

type apiError struct {
	Message string  `json:"message"`
	Field   *string `json:"field"`
	Help    *string `json:"help"`
}

func field(s string) *string { return &s }

func writeErrors(w http.ResponseWriter, status int, errs ...apiError) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string][]apiError{"errors": errs})
}

func (s *Server) authorized(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(s.apiKey)) == 1
}

func (s *Server) publicKey(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(r) {
		writeErrors(w, http.StatusUnauthorized, apiError{Message: "authorization required"})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"enabled": true, "public_key": s.pub})
}

type wireAddress struct {
	Email string `json:"email"`
	Name  string `json:"name,omitempty"`
}

type wireMail struct {
	Personalizations []struct {
		To         []wireAddress     `json:"to"`
		Subject    string            `json:"subject"`
		Headers    map[string]string `json:"headers"`
		CustomArgs map[string]string `json:"custom_args"`
	} `json:"personalizations"`
	From       *wireAddress                   `json:"from"`
	Subject    string                         `json:"subject"`
	Content    []struct{ Type, Value string } `json:"content"`
	Headers    map[string]string              `json:"headers"`
	CustomArgs map[string]string              `json:"custom_args"`
	Categories []string                       `json:"categories"`
}

// validate checks a send as SendGrid's documented Mail Send errors describe it.
func (m *wireMail) validate() []apiError {
	var errs []apiError
	if len(m.Personalizations) == 0 {
		errs = append(errs, apiError{Message: "The personalizations field is required and must have at least one personalization.", Field: field("personalizations")})
	}
	if len(m.Personalizations) > 1000 {
		errs = append(errs, apiError{Message: "The personalization block is limited to 1000 personalizations per API request.", Field: field("personalizations")})
	}
	for i, p := range m.Personalizations {
		if len(p.To) == 0 {
			errs = append(errs, apiError{Message: "The to array is required for all personalization objects, and must have at least one email object with a valid email address.", Field: field(fmt.Sprintf("personalizations.%d.to", i))})
		}
		for j, to := range p.To {
			if _, err := mail.ParseAddress(to.Email); err != nil || strings.ContainsAny(to.Email, "<> ") {
				errs = append(errs, apiError{Message: "Does not contain a valid address.", Field: field(fmt.Sprintf("personalizations.%d.to.%d.email", i, j))})
			}
		}
		if p.Subject == "" && m.Subject == "" {
			errs = append(errs, apiError{Message: "The subject is required. You can get around this requirement if you use a template with a subject defined or if every personalization has a subject defined.", Field: field("subject")})
		}
	}
	if m.From == nil || m.From.Email == "" {
		errs = append(errs, apiError{Message: "The from object must be provided for every email send. It is an object that requires the email parameter, but may also contain a name parameter.", Field: field("from")})
	} else if _, err := mail.ParseAddress(m.From.Email); err != nil {
		errs = append(errs, apiError{Message: "The from email does not contain a valid address.", Field: field("from.email")})
	}
	if len(m.Content) == 0 {
		errs = append(errs, apiError{Message: "Unless a valid template_id is provided, the content parameter is required. There must be at least one defined content block.", Field: field("content")})
	}
	for i, c := range m.Content {
		if c.Type == "" || c.Value == "" {
			errs = append(errs, apiError{Message: "The content value must be a string at least one character in length.", Field: field(fmt.Sprintf("content.%d.value", i))})
		}
		if i > 0 && c.Type == "text/plain" {
			errs = append(errs, apiError{Message: "If present, text/plain content must be first, followed by text/html content.", Field: field("content")})
		}
	}
	return errs
}

// nominalLimit is the X-RateLimit-Limit an injected 429 shows when no limit is configured.
const nominalLimit = 10000

// rateHeaders sets SendGrid's X-RateLimit-* headers; without a configured limit only a 429
// (injected) carries them.
func (s *Server) rateHeaders(w http.ResponseWriter, now time.Time, reset time.Time, limited bool) {
	if s.limiter == nil && !limited {
		return
	}
	if reset.IsZero() {
		reset = now.Add(time.Second)
	}
	limit, remaining := nominalLimit, 0
	if s.limiter != nil {
		limit, remaining = s.limiter.PerSecond(), s.limiter.Remaining(now)
	}
	if limited {
		remaining = 0
	}
	w.Header().Set("X-RateLimit-Limit", strconv.Itoa(limit))
	w.Header().Set("X-RateLimit-Remaining", strconv.Itoa(remaining))
	// SendGrid's reset is a Unix time in whole seconds: round up so a client that waits
	// until it never comes back too early.
	w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(reset.Add(time.Second-1).Unix(), 10))
}

func (s *Server) send(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(r) {
		writeErrors(w, http.StatusUnauthorized, apiError{Message: "The provided authorization grant is invalid, expired, or revoked"})
		return
	}
	now := s.now()
	if ok, next := s.limiter.Allow(now); !ok {
		s.rateHeaders(w, now, next, true)
		writeErrors(w, http.StatusTooManyRequests, apiError{Message: "too many requests"})
		s.log.Info("sendgrid stand-in: rate limited")
		return
	}
	fault := s.faults.Next()
	switch fault {
	case standin.FaultRateLimit:
		s.rateHeaders(w, now, now.Add(time.Second), true)
		writeErrors(w, http.StatusTooManyRequests, apiError{Message: "too many requests"})
		s.log.Info("sendgrid stand-in: injected fault", "fault", fault)
		return
	case standin.FaultServerError:
		writeErrors(w, http.StatusInternalServerError, apiError{Message: "internal error"})
		s.log.Info("sendgrid stand-in: injected fault", "fault", fault)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 30<<20))
	if err != nil {
		writeErrors(w, http.StatusRequestEntityTooLarge, apiError{Message: "The JSON payload you have included in your request is too large."})
		return
	}
	var m wireMail
	if err := json.Unmarshal(body, &m); err != nil {
		writeErrors(w, http.StatusBadRequest, apiError{Message: "Bad Request"})
		return
	}
	if errs := m.validate(); len(errs) > 0 {
		writeErrors(w, http.StatusBadRequest, errs...)
		return
	}
	id := newID()
	s.accept(id, &m, now)
	s.log.Debug("sendgrid stand-in: accepted", "message_id", id)
	switch fault {
	case standin.FaultServerErrorAfterSend:
		writeErrors(w, http.StatusInternalServerError, apiError{Message: "internal error"})
		s.log.Info("sendgrid stand-in: injected fault after accepting", "fault", fault, "message_id", id)
		return
	case standin.FaultHang:
		s.log.Info("sendgrid stand-in: injected fault after accepting", "fault", fault, "message_id", id)
		select {
		case <-r.Context().Done():
		case <-s.done:
		}
		return
	}
	s.rateHeaders(w, now, time.Time{}, false)
	w.Header().Set("X-Message-Id", id)
	w.WriteHeader(http.StatusAccepted)
}

// accept puts one outbox entry per recipient and queues their events.
func (s *Server) accept(id string, m *wireMail, now time.Time) {
	var text, html string
	for _, c := range m.Content {
		switch c.Type {
		case "text/plain":
			text = c.Value
		case "text/html":
			html = c.Value
		}
	}
	var events []map[string]any
	s.mu.Lock()
	hook := s.webhookURL
	n := 0
	for _, p := range m.Personalizations {
		subject := cmpOr(p.Subject, m.Subject)
		args := merge(m.CustomArgs, p.CustomArgs)
		headers := merge(m.Headers, p.Headers)
		for _, to := range p.To {
			s.messages = append(s.messages, Message{
				ID: id, To: to.Email, From: m.From.Email, Subject: subject, Text: text, HTML: html,
				Headers: headers, CustomArgs: args, Categories: m.Categories, AcceptedAt: now,
			})
			s.counts[strings.ToLower(to.Email)]++
			if hook != "" {
				sgID := fmt.Sprintf("%s.standin%d.%d", id, n, now.Unix())
				n++
				events = append(events, event("processed", to.Email, sgID, now, args, m.Categories))
				if strings.HasSuffix(strings.ToLower(to.Email), "@"+BounceDomain) {
					e := event("bounce", to.Email, sgID, now, args, m.Categories)
					e["type"], e["status"], e["reason"] = "bounce", "5.1.1", "550 5.1.1 The email account that you tried to reach does not exist."
					e["bounce_classification"] = "Invalid Address"
					events = append(events, e)
				} else {
					e := event("delivered", to.Email, sgID, now, args, m.Categories)
					e["response"] = "250 OK"
					events = append(events, e)
				}
			}
		}
	}
	s.pending = append(s.pending, events...)
	s.mu.Unlock()
	if len(events) > 0 {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

func event(kind, email, sgMessageID string, at time.Time, args map[string]string, categories []string) map[string]any {
	e := map[string]any{
		"event": kind, "email": email, "timestamp": at.Unix(), "sg_message_id": sgMessageID,
		"sg_event_id": newEventID(), "smtp-id": "<" + sgMessageID + "@standin>",
	}
	if len(categories) == 1 {
		e["category"] = categories[0]
	} else if len(categories) > 1 {
		e["category"] = categories
	}
	// custom_args come back as top-level fields, SendGrid's own fields winning.
	for k, v := range args {
		if _, taken := e[k]; !taken {
			e[k] = v
		}
	}
	return e
}

// dispatch posts queued events in batches, as SendGrid does, until Close.
func (s *Server) dispatch() {
	defer s.wg.Done()
	for {
		select {
		case <-s.wake:
		case <-s.done:
			return
		}
		for {
			// Post what is queued in SendGrid-sized batches.
			s.mu.Lock()
			n := min(len(s.pending), 1000)
			batch := s.pending[:n:n]
			s.pending = s.pending[n:]
			if len(s.pending) == 0 {
				s.pending = nil
			}
			s.mu.Unlock()
			if n == 0 {
				break
			}
			s.post(batch)
			select {
			case <-s.done:
				return
			default:
			}
		}
	}
}

// post signs and posts one batch, retrying a few times on failure.
func (s *Server) post(batch []map[string]any) {
	s.mu.Lock()
	hook := s.webhookURL
	s.mu.Unlock()
	if hook == "" {
		return
	}
	body, err := json.Marshal(batch)
	if err != nil {
		s.log.Error("sendgrid stand-in: encode events", "error", err)
		return
	}
	for attempt := range 3 {
		ts := strconv.FormatInt(s.now().Unix(), 10)
		sig, err := s.sign(ts, body)
		if err != nil {
			s.log.Error("sendgrid stand-in: sign events", "error", err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, hook, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "SendGrid Event API")
		req.Header.Set("X-Twilio-Email-Event-Webhook-Signature", sig)
		req.Header.Set("X-Twilio-Email-Event-Webhook-Timestamp", ts)
		resp, err := s.client.Do(req)
		status := 0
		if err == nil {
			status = resp.StatusCode
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		cancel()
		if status >= 200 && status < 300 {
			s.log.Debug("sendgrid stand-in: events posted", "events", len(batch))
			return
		}
		s.log.Warn("sendgrid stand-in: webhook post refused", "status", status, "attempt", attempt+1, "events", len(batch))
		select {
		case <-time.After(time.Duration(100<<attempt) * time.Millisecond): // backoff between webhook retries
		case <-s.done:
			return
		}
	}
}

// sign signs SHA-256(timestamp || body) with ECDSA and returns the base64 of its ASN.1 DER
// form, as SendGrid's Signed Event Webhook does.
func (s *Server) sign(ts string, body []byte) (string, error) {
	h := sha256.New()
	h.Write([]byte(ts))
	h.Write(body)
	sig, err := ecdsa.SignASN1(rand.Reader, s.key, h.Sum(nil))
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

func (s *Server) clearOutbox(w http.ResponseWriter, _ *http.Request) {
	s.Reset()
	w.WriteHeader(http.StatusNoContent)
}

// outbox serves GET /outbox[?to=address][&limit=n]: the total, the count per recipient and
// the last limit messages (default 1000).
func (s *Server) outbox(w http.ResponseWriter, r *http.Request) {
	limit := 1000
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 1_000_000 {
			http.Error(w, "limit must be 0..1000000", http.StatusBadRequest)
			return
		}
		limit = n
	}
	to := strings.ToLower(r.URL.Query().Get("to"))
	s.mu.Lock()
	out := struct {
		Total       int            `json:"total"`
		ByRecipient map[string]int `json:"by_recipient"`
		// FirstAcceptedAt and LastAcceptedAt bound the outbox's messages in time (a bench's
		// time to the first message and its rate).
		FirstAcceptedAt *time.Time `json:"first_accepted_at,omitempty"`
		LastAcceptedAt  *time.Time `json:"last_accepted_at,omitempty"`
		Messages        []Message  `json:"messages"`
	}{Total: len(s.messages), ByRecipient: make(map[string]int, len(s.counts)), Messages: []Message{}}
	if len(s.messages) > 0 {
		first, last := s.messages[0].AcceptedAt, s.messages[len(s.messages)-1].AcceptedAt
		out.FirstAcceptedAt, out.LastAcceptedAt = &first, &last
	}
	for k, v := range s.counts {
		if to == "" || k == to {
			out.ByRecipient[k] = v
		}
	}
	for i := len(s.messages) - 1; i >= 0 && len(out.Messages) < limit; i-- {
		if to == "" || strings.ToLower(s.messages[i].To) == to {
			out.Messages = append(out.Messages, s.messages[i])
		}
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}

func merge(a, b map[string]string) map[string]string {
	if len(a)+len(b) == 0 {
		return nil
	}
	m := make(map[string]string, len(a)+len(b))
	for k, v := range a {
		m[k] = v
	}
	for k, v := range b {
		m[k] = v
	}
	return m
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// newID returns a SendGrid-like X-Message-Id: 22 characters of URL-safe base64, no dot.
func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func newEventID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
