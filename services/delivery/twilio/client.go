// Package twilio is a client of Twilio Programmable Messaging (the 2010-04-01 REST API's
// Messages resource) and a reader of its signed status callbacks, written against the
// documented contract and twilio-go's sources (rest/api/v2010, client/request_validator.go,
// client/error.go). It also counts SMS segments (Segments).
//
// Twilio has no idempotency key and documents that retrying after a 500 can send twice, so
// every failure says whether Twilio certainly did not process the request (safe to send
// again) or may have (reconcile with FetchMessage or ListMessages). See Error and Outcome.
package twilio

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// DefaultBaseURL is Twilio's REST API origin.
const DefaultBaseURL = "https://api.twilio.com"

// DefaultTimeout bounds one request, from dialling to the end of the answer.
const DefaultTimeout = 10 * time.Second

// MaxBodyChars is Twilio's limit on a message body (characters).
const MaxBodyChars = 1600

const maxAnswerBytes = 4 << 20

// Config configures a Client. Credentials come from the caller (configuration or secret
// files) and never appear in logs or errors.
type Config struct {
	// BaseURL is Twilio's origin (DefaultBaseURL when empty), or a stand-in's.
	BaseURL string
	// AccountSID is the account (AC…) whose Messages resource is used.
	AccountSID string
	// Username is the Basic-auth user: an API key SID (SK…), or the account SID when empty.
	Username string
	// Password is the API key's secret, or the account's auth token.
	Password Secret
	// Timeout bounds each request (DefaultTimeout when zero).
	Timeout time.Duration
	// HTTPClient sends the requests (a client of its own when nil); leave its Timeout zero.
	HTTPClient *http.Client
}

// Client talks to Twilio's Messages resource. It is safe for concurrent use.
type Client struct {
	base    *url.URL
	account string
	// auth sets Basic auth: a closure, so that even printing the struct's fields (%+v of
	// *Client) cannot show the secret.
	auth    func(*http.Request)
	timeout time.Duration
	http    *http.Client
}

// New returns a client for cfg.
func New(cfg Config) (*Client, error) {
	if cfg.AccountSID == "" || cfg.Password.Reveal() == "" {
		return nil, errors.New("twilio: account sid and password (auth token or api key secret) are required")
	}
	if strings.ContainsAny(cfg.AccountSID, "/?#") {
		return nil, errors.New("twilio: account sid is malformed")
	}
	raw := cfg.BaseURL
	if raw == "" {
		raw = DefaultBaseURL
	}
	base, err := url.Parse(raw)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("twilio: base url %q is not an http(s) origin", raw)
	}
	user := cfg.Username
	if user == "" {
		user = cfg.AccountSID
	}
	pass := cfg.Password
	c := &Client{
		base: base, account: cfg.AccountSID, timeout: cfg.Timeout, http: cfg.HTTPClient,
		auth: func(r *http.Request) { r.SetBasicAuth(user, pass.Reveal()) },
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.http == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// The default keeps 2 idle connections per host: a sender with more concurrent
		// requests than that would open and close a connection per request.
		t.MaxIdleConnsPerHost = 256
		c.http = &http.Client{Transport: t}
	}
	return c, nil
}

// String names the client without its credentials.
func (c *Client) String() string {
	return "twilio client for " + c.base.String() + " account " + c.account
}

// SendParams is one SMS to create.
type SendParams struct {
	// To is the recipient in E.164 (+15551234567).
	To string
	// From is a Twilio number or sender id; or leave it empty and set MessagingServiceSID.
	From                string
	MessagingServiceSID string
	// Body is the text, at most MaxBodyChars characters.
	Body string
	// StatusCallback is the URL Twilio posts status changes to (signed; see Validator).
	StatusCallback string
	// ValidityPeriod, when set, lets Twilio drop the message if still queued after it
	// (1 s to 4 h).
	ValidityPeriod time.Duration
}

func (p SendParams) form() (url.Values, error) {
	var bad []string
	if p.To == "" {
		bad = append(bad, "To is required")
	}
	if p.From == "" && p.MessagingServiceSID == "" {
		bad = append(bad, "From or MessagingServiceSid is required")
	}
	if p.Body == "" {
		bad = append(bad, "Body is required")
	}
	if n := len([]rune(p.Body)); n > MaxBodyChars {
		bad = append(bad, fmt.Sprintf("Body has %d characters, at most %d", n, MaxBodyChars))
	}
	if p.ValidityPeriod != 0 && (p.ValidityPeriod < time.Second || p.ValidityPeriod > 4*time.Hour) {
		bad = append(bad, "ValidityPeriod must be 1s..4h")
	}
	if len(bad) > 0 {
		return nil, &Error{Outcome: NotProcessed, Permanent: true, Message: strings.Join(bad, "; ")}
	}
	f := url.Values{"To": {p.To}, "Body": {p.Body}}
	if p.From != "" {
		f.Set("From", p.From)
	}
	if p.MessagingServiceSID != "" {
		f.Set("MessagingServiceSid", p.MessagingServiceSID)
	}
	if p.StatusCallback != "" {
		f.Set("StatusCallback", p.StatusCallback)
	}
	if p.ValidityPeriod != 0 {
		f.Set("ValidityPeriod", strconv.Itoa(int(p.ValidityPeriod/time.Second)))
	}
	return f, nil
}

// Message is Twilio's Message resource (the fields delivery uses).
type Message struct {
	SID                 string
	AccountSID          string
	MessagingServiceSID string
	To, From, Body      string
	// Status is queued, accepted, scheduled, sending, sent, delivered, undelivered,
	// failed, canceled, receiving, received or read.
	Status      string
	Direction   string
	NumSegments int
	// ErrorCode and ErrorMessage explain a failed or undelivered message (0 / "" if none).
	ErrorCode    int
	ErrorMessage string
	DateCreated  time.Time
	DateSent     time.Time
	DateUpdated  time.Time
}

type wireMessage struct {
	SID                 string  `json:"sid"`
	AccountSID          string  `json:"account_sid"`
	MessagingServiceSID *string `json:"messaging_service_sid"`
	To                  string  `json:"to"`
	From                *string `json:"from"`
	Body                string  `json:"body"`
	Status              string  `json:"status"`
	Direction           string  `json:"direction"`
	NumSegments         string  `json:"num_segments"`
	ErrorCode           *int    `json:"error_code"`
	ErrorMessage        *string `json:"error_message"`
	DateCreated         *string `json:"date_created"`
	DateSent            *string `json:"date_sent"`
	DateUpdated         *string `json:"date_updated"`
}

func (w wireMessage) message() Message {
	m := Message{
		SID: w.SID, AccountSID: w.AccountSID, To: w.To, Body: w.Body, Status: w.Status, Direction: w.Direction,
		MessagingServiceSID: deref(w.MessagingServiceSID), From: deref(w.From), ErrorMessage: deref(w.ErrorMessage),
		DateCreated: rfc2822(w.DateCreated), DateSent: rfc2822(w.DateSent), DateUpdated: rfc2822(w.DateUpdated),
	}
	m.NumSegments, _ = strconv.Atoi(w.NumSegments)
	if w.ErrorCode != nil {
		m.ErrorCode = *w.ErrorCode
	}
	return m
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// rfc2822 reads Twilio's dates ("Thu, 30 Jul 2015 20:12:31 +0000"); zero when absent.
func rfc2822(s *string) time.Time {
	if s == nil {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC1123Z, *s)
	if err != nil {
		return time.Time{}
	}
	return t.UTC()
}

// Send creates a message (POST /2010-04-01/Accounts/{AccountSid}/Messages.json). On success
// Twilio answered 201 and the message has a SID. On failure the error is a *Error whose
// Outcome says whether the message may have been created anyway.
func (c *Client) Send(ctx context.Context, p SendParams) (Message, error) {
	form, err := p.form()
	if err != nil {
		return Message{}, err
	}
	var w wireMessage
	if err := c.do(ctx, http.MethodPost, c.messagesPath()+".json", form, &w); err != nil {
		return Message{}, err
	}
	return w.message(), nil
}

// FetchMessage reads one message (GET …/Messages/{Sid}.json). IsNotFound(err) tells a
// message Twilio does not have.
func (c *Client) FetchMessage(ctx context.Context, sid string) (Message, error) {
	if sid == "" || strings.ContainsAny(sid, "/?#") {
		return Message{}, &Error{Outcome: NotProcessed, Permanent: true, Message: "message sid is malformed"}
	}
	var w wireMessage
	if err := c.do(ctx, http.MethodGet, c.messagesPath()+"/"+url.PathEscape(sid)+".json", nil, &w); err != nil {
		return Message{}, err
	}
	return w.message(), nil
}

// ListParams filters ListMessages.
type ListParams struct {
	To, From string
	// DateSent keeps messages sent on that UTC day; DateSentAfter and DateSentBefore keep
	// those sent on or after / on or before a UTC day. Twilio filters by day only.
	DateSent, DateSentAfter, DateSentBefore time.Time
	// PageSize is the page size asked for (50 when zero, at most 1000).
	PageSize int
	// Limit stops after that many messages (0: all pages).
	Limit int
}

// MaxListPages bounds the pages one ListMessages call follows.
const MaxListPages = 1000

type wirePage struct {
	Messages    []wireMessage `json:"messages"`
	NextPageURI *string       `json:"next_page_uri"`
}

// ListMessages lists messages (GET …/Messages.json), following next_page_uri, newest first
// as Twilio orders them. It is how a message whose creation answer was lost is found: by its
// recipient and day, then by a marker in its body.
func (c *Client) ListMessages(ctx context.Context, p ListParams) ([]Message, error) {
	q := url.Values{}
	if p.To != "" {
		q.Set("To", p.To)
	}
	if p.From != "" {
		q.Set("From", p.From)
	}
	const day = "2006-01-02"
	if !p.DateSent.IsZero() {
		q.Set("DateSent", p.DateSent.UTC().Format(day))
	}
	// Twilio's range filters are the parameters "DateSent>" and "DateSent<" (written
	// DateSent>=YYYY-MM-DD in its docs: the "=" is the form's separator).
	if !p.DateSentAfter.IsZero() {
		q.Set("DateSent>", p.DateSentAfter.UTC().Format(day))
	}
	if !p.DateSentBefore.IsZero() {
		q.Set("DateSent<", p.DateSentBefore.UTC().Format(day))
	}
	size := p.PageSize
	if size <= 0 {
		size = 50
	}
	q.Set("PageSize", strconv.Itoa(min(size, 1000)))
	next := c.messagesPath() + ".json?" + q.Encode()
	var out []Message
	for page := 0; next != "" && page < MaxListPages; page++ {
		var w wirePage
		if err := c.do(ctx, http.MethodGet, next, nil, &w); err != nil {
			return out, err
		}
		for _, m := range w.Messages {
			out = append(out, m.message())
			if p.Limit > 0 && len(out) >= p.Limit {
				return out, nil
			}
		}
		next = deref(w.NextPageURI)
	}
	return out, nil
}

func (c *Client) messagesPath() string {
	return "/2010-04-01/Accounts/" + url.PathEscape(c.account) + "/Messages"
}

// do sends one request; pathAndQuery is relative to the origin (next_page_uri is too).
func (c *Client) do(ctx context.Context, method, pathAndQuery string, form url.Values, into any) error {
	ref, err := url.Parse(pathAndQuery)
	if err != nil || ref.IsAbs() || ref.Host != "" {
		return &Error{Outcome: NotProcessed, Permanent: true, Message: "request path is malformed"}
	}
	target := c.base.ResolveReference(ref)
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var wrote atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(info httptrace.WroteRequestInfo) {
			if info.Err == nil {
				wrote.Store(true)
			}
		},
	})
	var body io.Reader
	if form != nil {
		body = bytes.NewBufferString(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, target.String(), body)
	if err != nil {
		return &Error{Outcome: NotProcessed, Permanent: true, err: err}
	}
	c.auth(req)
	req.Header.Set("Accept", "application/json")
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// Until the whole request is written Twilio cannot have acted on it; after that, a
		// lost answer says nothing about whether it did.
		outcome := NotProcessed
		if wrote.Load() {
			outcome = MaybeProcessed
		}
		return &Error{Outcome: outcome, err: transportError(err)}
	}
	defer resp.Body.Close()
	answer, readErr := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if readErr != nil {
			return &Error{Outcome: MaybeProcessed, Status: resp.StatusCode, err: transportError(readErr)}
		}
		if err := json.Unmarshal(answer, into); err != nil {
			// Twilio acted (2xx) but its answer is unreadable: the message exists.
			return &Error{Outcome: MaybeProcessed, Status: resp.StatusCode, Message: "answer is not the expected json"}
		}
		return nil
	}
	return statusError(resp, answer)
}

// transportError keeps the kind of a transport failure (timeout, cancel) without the
// addresses and driver text that net errors carry.
func transportError(err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("request timed out: %w", context.DeadlineExceeded)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("request canceled: %w", context.Canceled)
	}
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("request timed out: %w", context.DeadlineExceeded)
	}
	return errors.New("connection failed")
}

type wireError struct {
	Code     int    `json:"code"`
	Message  string `json:"message"`
	MoreInfo string `json:"more_info"`
	Status   int    `json:"status"`
}

func statusError(resp *http.Response, answer []byte) *Error {
	e := &Error{Status: resp.StatusCode}
	var w wireError
	if json.Unmarshal(answer, &w) == nil {
		e.Code, e.Message, e.MoreInfo = w.Code, w.Message, w.MoreInfo
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		e.RetryAfter = time.Duration(s) * time.Second
	}
	switch s := resp.StatusCode; {
	case s == http.StatusTooManyRequests || e.Code == CodeTooManyRequests:
		e.Outcome = NotProcessed
	case s >= 400 && s < 500:
		e.Outcome, e.Permanent = NotProcessed, true
	default:
		// 5xx (and anything unexpected): Twilio may have created the message first.
		e.Outcome = MaybeProcessed
	}
	return e
}
