// Package twilio is a stand-in for Twilio Programmable Messaging's Messages resource and its
// signed status callbacks: an http.Handler that checks Basic auth (account SID + auth token,
// or an API key SID + secret), validates a message as Twilio does (answering errors in its
// {"code","message","more_info","status"} shape), answers 201 with a Message resource (SM…
// SID), serves fetch and list (To, From, DateSent filters, paging), keeps every created
// message in an in-memory outbox with a count per recipient, and posts "sent" then
// "delivered" (or "undelivered") status callbacks signed with the auth token
// (X-Twilio-Signature). Failures are injected through Faults or POST /faults, and a rate
// limit answers 429 with error 20429.
//
// Routes: POST and GET /2010-04-01/Accounts/{AccountSid}/Messages.json;
// GET /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json; GET and DELETE /outbox;
// POST and DELETE /faults.
//
// Recipients starting with UndeliverablePrefix end "undelivered" (error 30003);
// InvalidNumber is refused with error 21211, as Twilio's test number is.
package twilio

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf16"

	"github.com/campaignmesh/campaignmesh/internal/standin"
)

// UndeliverablePrefix starts the numbers whose messages end undelivered.
const UndeliverablePrefix = "+1999"

// InvalidNumber is refused as not a valid phone number (Twilio's magic test number).
const InvalidNumber = "+15005550001"

// Config configures the stand-in.
type Config struct {
	// AccountSID and AuthToken are the account's credentials; the token also signs the
	// status callbacks.
	AccountSID, AuthToken string
	// APIKeys maps API key SIDs (SK…) to their secrets, accepted as Basic auth too.
	APIKeys map[string]string
	// CallbackURL receives status callbacks for messages created without StatusCallback.
	CallbackURL string
	// InboundURL receives the signed incoming-message webhooks POST /inbound simulates (the
	// messaging service's "a message comes in" URL); empty: /inbound answers 409.
	InboundURL string
	// RatePerSecond limits message creation (429 / 20429 beyond it); 0 is unlimited.
	RatePerSecond int
	// Logger logs requests and callback posts, never credentials or numbers.
	Logger *slog.Logger
	// HTTPClient posts the callbacks (a client with a 10 s timeout when nil).
	HTTPClient *http.Client
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Message is one created message, as the outbox, fetch and list show it.
type Message struct {
	SID                 string    `json:"sid"`
	To                  string    `json:"to"`
	From                string    `json:"from,omitempty"`
	MessagingServiceSID string    `json:"messaging_service_sid,omitempty"`
	Body                string    `json:"body"`
	StatusCallback      string    `json:"status_callback,omitempty"`
	Status              string    `json:"status"`
	ErrorCode           int       `json:"error_code,omitempty"`
	NumSegments         int       `json:"num_segments"`
	CreatedAt           time.Time `json:"created_at"`
}

// Server is the stand-in. It is safe for concurrent use.
type Server struct {
	cfg     Config
	log     *slog.Logger
	client  *http.Client
	now     func() time.Time
	limiter *standin.Limiter
	faults  standin.Faults
	mux     *http.ServeMux

	mu       sync.Mutex
	messages []*Message
	bySID    map[string]*Message
	counts   map[string]int

	// pending holds the callbacks of each message not yet posted (one job per message, so
	// its callbacks go out in order): unbounded, so neither a slow receiver slows creation
	// nor an overload drops callbacks. wake signals the workers.
	pending [][]callback
	wake    chan struct{}
	done    chan struct{}
	wg      sync.WaitGroup
	closing sync.Once
}

type callback struct {
	url    string
	params url.Values
}

// New returns a running stand-in; Close stops its callback senders.
func New(cfg Config) (*Server, error) {
	if cfg.AccountSID == "" || cfg.AuthToken == "" {
		return nil, errors.New("twilio stand-in: account sid and auth token are required")
	}
	s := &Server{
		cfg: cfg, log: cfg.Logger, client: cfg.HTTPClient, now: cfg.Now,
		limiter: standin.NewLimiter(cfg.RatePerSecond), bySID: make(map[string]*Message), counts: make(map[string]int),
		wake: make(chan struct{}, 4), done: make(chan struct{}),
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
	s.mux.HandleFunc("POST /2010-04-01/Accounts/{account}/Messages.json", s.create)
	s.mux.HandleFunc("GET /2010-04-01/Accounts/{account}/Messages.json", s.list)
	s.mux.HandleFunc("GET /2010-04-01/Accounts/{account}/Messages/{file}", s.fetch)
	s.mux.HandleFunc("GET /outbox", s.outbox)
	s.mux.HandleFunc("DELETE /outbox", s.clearOutbox)
	s.mux.HandleFunc("/faults", s.faults.ServeFaults)
	s.mux.HandleFunc("POST /inbound", s.inbound)
	// A few workers keep a large campaign's callbacks flowing; each message's callbacks go
	// through one worker, in order (sent before delivered).
	for range 4 {
		s.wg.Add(1)
		go s.dispatch()
	}
	return s, nil
}

// ServeHTTP serves the stand-in's routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Close releases hung requests and stops the callback senders; callbacks not yet posted are
// dropped (a test waits for the callbacks it expects before closing).
func (s *Server) Close() {
	s.closing.Do(func() { close(s.done) })
	s.wg.Wait()
}

// Faults returns the fault queue, to inject failures from Go.
func (s *Server) Faults() *standin.Faults { return &s.faults }

// Messages returns a copy of the outbox in creation order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Message, len(s.messages))
	for i, m := range s.messages {
		out[i] = *m
	}
	return out
}

// Count returns how many messages were created for the number.
func (s *Server) Count(to string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[to]
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
	s.messages, s.bySID, s.counts = nil, make(map[string]*Message), make(map[string]int)
}

func writeError(w http.ResponseWriter, status, code int, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"code": code, "message": message, "more_info": fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code), "status": status,
	})
}

// authorized checks Basic auth and that the path's account is the configured one.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	user, pass, ok := r.BasicAuth()
	good := false
	if ok {
		want, known := s.cfg.APIKeys[user], true
		if user == s.cfg.AccountSID {
			want = s.cfg.AuthToken
		} else if _, known = s.cfg.APIKeys[user]; !known {
			want = ""
		}
		good = known && want != "" && subtle.ConstantTimeCompare([]byte(pass), []byte(want)) == 1
	}
	if !good {
		w.Header().Set("WWW-Authenticate", `Basic realm="Twilio API"`)
		writeError(w, http.StatusUnauthorized, 20003, "Authenticate")
		return false
	}
	if r.PathValue("account") != s.cfg.AccountSID {
		writeError(w, http.StatusNotFound, 20404, "The requested resource "+r.URL.Path+" was not found")
		return false
	}
	return true
}

var e164 = regexp.MustCompile(`^\+[1-9][0-9]{6,14}$`)

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	now := s.now()
	if ok, next := s.limiter.Allow(now); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(next.Sub(now)/time.Second)+1))
		writeError(w, http.StatusTooManyRequests, 20429, "Too Many Requests")
		s.log.Info("twilio stand-in: rate limited")
		return
	}
	fault := s.faults.Next()
	switch fault {
	case standin.FaultRateLimit:
		writeError(w, http.StatusTooManyRequests, 20429, "Too Many Requests")
		s.log.Info("twilio stand-in: injected fault", "fault", fault)
		return
	case standin.FaultServerError:
		writeError(w, http.StatusInternalServerError, 20500, "An internal server error has occurred")
		s.log.Info("twilio stand-in: injected fault", "fault", fault)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, 20001, "Could not parse the request")
		return
	}
	f := r.PostForm
	to, from, svc, body, cb := f.Get("To"), f.Get("From"), f.Get("MessagingServiceSid"), f.Get("Body"), f.Get("StatusCallback")
	switch {
	case to == "":
		writeError(w, http.StatusBadRequest, 21604, "A 'To' phone number is required.")
		return
	case from == "" && svc == "":
		writeError(w, http.StatusBadRequest, 21603, "A 'From' phone number is required.")
		return
	case body == "":
		writeError(w, http.StatusBadRequest, 21602, "Message body is required.")
		return
	case len([]rune(body)) > 1600:
		writeError(w, http.StatusBadRequest, 21617, "The concatenated message body exceeds the 1600 character limit.")
		return
	case !e164.MatchString(to) || to == InvalidNumber:
		writeError(w, http.StatusBadRequest, 21211, fmt.Sprintf("The 'To' number %s is not a valid phone number.", to))
		return
	}
	if cb != "" {
		if u, err := url.Parse(cb); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			writeError(w, http.StatusBadRequest, 21609, "The StatusCallback URL "+cb+" is not a valid URL.")
			return
		}
	}
	m := &Message{
		SID: newSID("SM"), To: to, From: from, MessagingServiceSID: svc, Body: body, StatusCallback: cb,
		Status: StatusFor(to), NumSegments: segments(body), CreatedAt: now.UTC(),
	}
	if m.Status == "undelivered" {
		m.ErrorCode = 30003
	}
	if m.From == "" {
		m.From = "+15550000000" // the number a messaging service picked
	}
	s.mu.Lock()
	s.messages = append(s.messages, m)
	s.bySID[m.SID] = m
	s.counts[to]++
	created := *m
	s.mu.Unlock()
	s.log.Debug("twilio stand-in: created", "sid", m.SID)
	s.queueCallbacks(created)

	switch fault {
	case standin.FaultServerErrorAfterSend:
		writeError(w, http.StatusInternalServerError, 20500, "An internal server error has occurred")
		s.log.Info("twilio stand-in: injected fault after creating", "fault", fault, "sid", m.SID)
		return
	case standin.FaultHang:
		s.log.Info("twilio stand-in: injected fault after creating", "fault", fault, "sid", m.SID)
		select {
		case <-r.Context().Done():
		case <-s.done:
		}
		return
	}
	// The creation answer shows the message as Twilio does right after accepting it.
	answer := created
	answer.Status, answer.ErrorCode = "queued", 0
	if svc != "" {
		answer.Status = "accepted"
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(s.resource(answer, false))
}

// StatusFor is the final status the stand-in gives a message to the number.
func StatusFor(to string) string {
	if strings.HasPrefix(to, UndeliverablePrefix) {
		return "undelivered"
	}
	return "delivered"
}

func (s *Server) queueCallbacks(m Message) {
	target := m.StatusCallback
	if target == "" {
		target = s.cfg.CallbackURL
	}
	if target == "" {
		return
	}
	var job []callback
	for _, status := range []string{"sent", m.Status} {
		p := url.Values{
			"MessageSid": {m.SID}, "SmsSid": {m.SID}, "AccountSid": {s.cfg.AccountSID},
			"From": {m.From}, "To": {m.To}, "MessageStatus": {status}, "SmsStatus": {status},
			"ApiVersion": {"2010-04-01"},
		}
		if m.MessagingServiceSID != "" {
			p.Set("MessagingServiceSid", m.MessagingServiceSID)
		}
		if status == "undelivered" {
			p.Set("ErrorCode", strconv.Itoa(m.ErrorCode))
		}
		if status == "delivered" {
			p.Set("RawDlrDoneDate", m.CreatedAt.Format("0601021504"))
		}
		job = append(job, callback{url: target, params: p})
	}
	s.mu.Lock()
	s.pending = append(s.pending, job)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Server) dispatch() {
	defer s.wg.Done()
	for {
		select {
		case <-s.wake:
		case <-s.done:
			return
		}
		for {
			s.mu.Lock()
			if len(s.pending) == 0 {
				s.pending = nil
				s.mu.Unlock()
				break
			}
			job := s.pending[0]
			s.pending = s.pending[1:]
			more := len(s.pending) > 0
			s.mu.Unlock()
			if more {
				// Wake another worker for the rest.
				select {
				case s.wake <- struct{}{}:
				default:
				}
			}
			for _, cb := range job {
				s.post(cb)
			}
			select {
			case <-s.done:
				return
			default:
			}
		}
	}
}

// post signs and posts one callback, retrying a few times on failure.
func (s *Server) post(cb callback) {
	body := cb.params.Encode()
	sig := s.sign(cb.url, cb.params)
	for attempt := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, cb.url, bytes.NewBufferString(body))
		if err != nil {
			cancel()
			s.log.Warn("twilio stand-in: bad callback url")
			return
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("User-Agent", "TwilioProxy/1.1")
		req.Header.Set("X-Twilio-Signature", sig)
		resp, err := s.client.Do(req)
		status := 0
		if err == nil {
			status = resp.StatusCode
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		cancel()
		if status >= 200 && status < 300 {
			s.log.Debug("twilio stand-in: callback posted", "status", cb.params.Get("MessageStatus"))
			return
		}
		s.log.Warn("twilio stand-in: callback refused", "status", status, "attempt", attempt+1)
		select {
		case <-time.After(time.Duration(100<<attempt) * time.Millisecond): // backoff between callback retries
		case <-s.done:
			return
		}
	}
}

// sign is Twilio's request signature: base64 HMAC-SHA1 (key: the auth token) of the URL
// followed by every POST parameter's name and value, sorted by name.
func (s *Server) sign(target string, params url.Values) string {
	names := make([]string, 0, len(params))
	for k := range params {
		names = append(names, k)
	}
	slices.Sort(names)
	var b strings.Builder
	b.WriteString(target)
	for _, k := range names {
		vs := slices.Clone(params[k])
		slices.Sort(vs)
		for _, v := range vs {
			b.WriteString(k + v)
		}
	}
	mac := hmac.New(sha1.New, []byte(s.cfg.AuthToken))
	mac.Write([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

const rfc2822 = "Mon, 02 Jan 2006 15:04:05 -0700"

// resource renders m as Twilio's Message resource JSON.
func (s *Server) resource(m Message, final bool) map[string]any {
	date := m.CreatedAt.Format(rfc2822)
	r := map[string]any{
		"sid": m.SID, "account_sid": s.cfg.AccountSID, "to": m.To, "from": m.From, "body": m.Body,
		"status": m.Status, "direction": "outbound-api", "num_segments": strconv.Itoa(m.NumSegments),
		"num_media": "0", "api_version": "2010-04-01", "date_created": date, "date_updated": date,
		"date_sent": nil, "error_code": nil, "error_message": nil, "messaging_service_sid": nil,
		"price": nil, "price_unit": "USD",
		"uri": fmt.Sprintf("/2010-04-01/Accounts/%s/Messages/%s.json", s.cfg.AccountSID, m.SID),
	}
	if m.MessagingServiceSID != "" {
		r["messaging_service_sid"] = m.MessagingServiceSID
	}
	if final {
		r["date_sent"] = date
	}
	if m.ErrorCode != 0 {
		r["error_code"] = m.ErrorCode
		r["error_message"] = "Unreachable destination handset"
	}
	return r
}

func (s *Server) fetch(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	sid, ok := strings.CutSuffix(r.PathValue("file"), ".json")
	s.mu.Lock()
	m, found := s.bySID[sid]
	var cp Message
	if found {
		cp = *m
	}
	s.mu.Unlock()
	if !ok || !found {
		writeError(w, http.StatusNotFound, 20404, "The requested resource "+r.URL.Path+" was not found")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s.resource(cp, true))
}

// list serves the Messages list: To, From, DateSent (YYYY-MM-DD), DateSent> and DateSent<
// (on or after / on or before), PageSize (50, at most 1000) and Page; newest first.
func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	q := r.URL.Query()
	day := func(k string) (time.Time, bool, error) {
		v := q.Get(k)
		if v == "" {
			return time.Time{}, false, nil
		}
		t, err := time.Parse("2006-01-02", v)
		return t, true, err
	}
	on, hasOn, err1 := day("DateSent")
	after, hasAfter, err2 := day("DateSent>")
	before, hasBefore, err3 := day("DateSent<")
	if err := errors.Join(err1, err2, err3); err != nil {
		writeError(w, http.StatusBadRequest, 20001, "DateSent must be YYYY-MM-DD")
		return
	}
	size, page := 50, 0
	if v := q.Get("PageSize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, 20001, "Invalid PageSize")
			return
		}
		size = min(n, 1000)
	}
	if v := q.Get("Page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, 20001, "Invalid Page")
			return
		}
		page = n
	}
	var match []Message
	s.mu.Lock()
	for i := len(s.messages) - 1; i >= 0; i-- {
		m := s.messages[i]
		d := m.CreatedAt.UTC().Truncate(24 * time.Hour)
		if (q.Get("To") != "" && m.To != q.Get("To")) || (q.Get("From") != "" && m.From != q.Get("From")) ||
			(hasOn && !d.Equal(on)) || (hasAfter && d.Before(after)) || (hasBefore && d.After(before)) {
			continue
		}
		match = append(match, *m)
	}
	s.mu.Unlock()
	start := min(page*size, len(match))
	end := min(start+size, len(match))
	out := make([]map[string]any, 0, end-start)
	for _, m := range match[start:end] {
		out = append(out, s.resource(m, true))
	}
	base := r.URL.Path
	pageURI := func(p int) string {
		v := url.Values{}
		for k, vs := range q {
			if k != "Page" && k != "PageToken" {
				v[k] = vs
			}
		}
		v.Set("PageSize", strconv.Itoa(size))
		v.Set("Page", strconv.Itoa(p))
		return base + "?" + v.Encode()
	}
	var next any
	if end < len(match) {
		next = pageURI(page+1) + "&PageToken=PA" + strconv.Itoa(end)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"messages": out, "page": page, "page_size": size, "uri": pageURI(page),
		"first_page_uri": pageURI(0), "next_page_uri": next, "previous_page_uri": nil, "start": start, "end": max(end-1, start),
	})
}

func (s *Server) clearOutbox(w http.ResponseWriter, _ *http.Request) {
	s.Reset()
	w.WriteHeader(http.StatusNoContent)
}

// outbox serves GET /outbox[?to=number][&limit=n]: the total, the count per recipient and
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
	to := r.URL.Query().Get("to")
	s.mu.Lock()
	out := struct {
		Total       int            `json:"total"`
		ByRecipient map[string]int `json:"by_recipient"`
		Messages    []Message      `json:"messages"`
	}{Total: len(s.messages), ByRecipient: make(map[string]int, len(s.counts)), Messages: []Message{}}
	for k, v := range s.counts {
		if to == "" || k == to {
			out.ByRecipient[k] = v
		}
	}
	for i := len(s.messages) - 1; i >= 0 && len(out.Messages) < limit; i-- {
		if to == "" || s.messages[i].To == to {
			out.Messages = append(out.Messages, *s.messages[i])
		}
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}

// segments is a rough count for num_segments: GSM-7 for ASCII bodies without a backtick
// (extension characters counted as two), UCS-2 otherwise; it ignores the accented letters
// GSM-7 has and does not avoid splitting characters. The client's Segments is the reference.
func segments(body string) int {
	units, ascii := 0, true
	for _, r := range body {
		if r >= 0x80 || r == '`' {
			ascii = false
		}
	}
	single, part := 160, 153
	if ascii {
		for _, r := range body {
			units++
			if strings.ContainsRune("^{}\\[~]|\f", r) {
				units++
			}
		}
	} else {
		single, part = 70, 67
		units = len(utf16.Encode([]rune(body)))
	}
	if units <= single {
		return 1
	}
	return (units + part - 1) / part
}

func newSID(prefix string) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}
