// Package sendgrid is a client of SendGrid's v3 Mail Send API and a reader of its signed
// Event Webhook, written against the documented contract (api.sendgrid.com/v3/mail/send,
// the Event Webhook reference and sendgrid-go's helpers/eventwebhook).
//
// A send is one request per recipient: the delivery ledger records each recipient's outcome
// after SendGrid's answer, and SendGrid has no idempotency key, so every failure says whether
// SendGrid certainly did not process the request (safe to send again) or may have (reconcile
// through the Event Webhook's custom_args, never re-send blind). See Error and Outcome.
package sendgrid

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

// DefaultBaseURL is SendGrid's API origin.
const DefaultBaseURL = "https://api.sendgrid.com"

// DefaultTimeout bounds one request, from dialling to the end of the answer.
const DefaultTimeout = 10 * time.Second

// MaxCustomArgsBytes is SendGrid's documented limit on the custom_args of one message.
const MaxCustomArgsBytes = 10000

const maxAnswerBytes = 1 << 20

// Config configures a Client. The API key comes from the caller (configuration or a secret
// file), is sent only as the bearer credential, and never appears in logs or errors.
type Config struct {
	// BaseURL is SendGrid's origin (DefaultBaseURL when empty), or a stand-in's.
	BaseURL string
	// APIKey is a SendGrid API key with the Mail Send permission.
	APIKey Secret
	// Timeout bounds each request (DefaultTimeout when zero).
	Timeout time.Duration
	// HTTPClient sends the requests (a client of its own when nil). Its Timeout should be
	// zero: Timeout above bounds each request through its context.
	HTTPClient *http.Client
	// Now is the clock used to turn X-RateLimit-Reset into a wait (time.Now when nil).
	Now func() time.Time
}

// Client sends mail through SendGrid. It is safe for concurrent use.
type Client struct {
	base *url.URL
	// auth yields the Authorization header: a closure, so that even printing the
	// struct's fields (%+v of *Client) cannot show the key.
	auth    func() string
	timeout time.Duration
	http    *http.Client
	now     func() time.Time
}

// New returns a client for cfg.
func New(cfg Config) (*Client, error) {
	if cfg.APIKey.Reveal() == "" {
		return nil, errors.New("sendgrid: api key is required")
	}
	raw := cfg.BaseURL
	if raw == "" {
		raw = DefaultBaseURL
	}
	base, err := url.Parse(raw)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("sendgrid: base url %q is not an http(s) origin", raw)
	}
	key := cfg.APIKey
	c := &Client{base: base, auth: func() string { return "Bearer " + key.Reveal() }, timeout: cfg.Timeout, http: cfg.HTTPClient, now: cfg.Now}
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
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// String names the client without its key.
func (c *Client) String() string { return "sendgrid client for " + c.base.String() }

// Address is an email address with an optional display name.
type Address struct {
	Email string `json:"email"`
	Name  string `json:"name,omitempty"`
}

// Mail is one message to one recipient.
type Mail struct {
	From    Address
	ReplyTo *Address
	To      Address
	Subject string
	// Text and HTML are the bodies; at least one is required. SendGrid wants text/plain
	// first when both are given, which Send does.
	Text, HTML string
	// CustomArgs come back on every Event Webhook event of this message, as top-level
	// fields. SendGrid keeps them indefinitely as non-personal data: put only opaque ids
	// (the ledger's) here, never an address or a name.
	CustomArgs map[string]string
	// Headers are extra message headers.
	Headers map[string]string
	// Categories tag the message in SendGrid's statistics (at most 10).
	Categories []string
	// ListUnsubscribeURL, when set, adds List-Unsubscribe: <url> and RFC 8058's
	// List-Unsubscribe-Post: List-Unsubscribe=One-Click, so mailbox providers offer a
	// one-click unsubscribe whose POST to the URL unsubscribes by itself.
	ListUnsubscribeURL string
	// ListUnsubscribeMailto, when set with or without the URL, adds a mailto: target too.
	ListUnsubscribeMailto string
}

// Sent is SendGrid's answer to an accepted message.
type Sent struct {
	// MessageID is the X-Message-Id header: the prefix of every event's sg_message_id. It
	// is empty if SendGrid accepted the message without one (not seen in practice).
	MessageID string
	// RateLimit is what the answer's X-RateLimit-* headers said, if anything.
	RateLimit RateLimit
}

// RateLimit is SendGrid's X-RateLimit-* headers.
type RateLimit struct {
	Limit, Remaining int
	// Reset is when the current period ends (zero when not given).
	Reset time.Time
}

type wireContent struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

type wirePersonalization struct {
	To []Address `json:"to"`
}

type wireMail struct {
	Personalizations []wirePersonalization `json:"personalizations"`
	From             Address               `json:"from"`
	ReplyTo          *Address              `json:"reply_to,omitempty"`
	Subject          string                `json:"subject"`
	Content          []wireContent         `json:"content"`
	Headers          map[string]string     `json:"headers,omitempty"`
	CustomArgs       map[string]string     `json:"custom_args,omitempty"`
	Categories       []string              `json:"categories,omitempty"`
}

// reservedHeaders are headers SendGrid sets itself and refuses in "headers".
var reservedHeaders = map[string]bool{
	"x-sg-id": true, "x-sg-eid": true, "received": true, "dkim-signature": true,
	"content-type": true, "content-transfer-encoding": true, "to": true, "from": true,
	"subject": true, "reply-to": true, "cc": true, "bcc": true,
}

// body validates m and builds the request JSON. A message this refuses was never sent.
func (m Mail) body() ([]byte, error) {
	var bad []string
	if m.From.Email == "" {
		bad = append(bad, "from.email: required")
	}
	if m.To.Email == "" {
		bad = append(bad, "personalizations.to.email: required")
	}
	if m.Subject == "" {
		bad = append(bad, "subject: required")
	}
	if m.Text == "" && m.HTML == "" {
		bad = append(bad, "content: a text or an html body is required")
	}
	if len(m.Categories) > 10 {
		bad = append(bad, "categories: at most 10")
	}
	size := 0
	for k, v := range m.CustomArgs {
		size += len(k) + len(v)
	}
	if size > MaxCustomArgsBytes {
		bad = append(bad, fmt.Sprintf("custom_args: %d bytes, at most %d", size, MaxCustomArgsBytes))
	}
	headers := make(map[string]string, len(m.Headers)+2)
	for k, v := range m.Headers {
		if reservedHeaders[strings.ToLower(k)] {
			bad = append(bad, fmt.Sprintf("headers: %s is set by sendgrid", k))
		}
		headers[k] = v
	}
	var targets []string
	if m.ListUnsubscribeMailto != "" {
		targets = append(targets, "<mailto:"+m.ListUnsubscribeMailto+">")
	}
	if m.ListUnsubscribeURL != "" {
		u, err := url.Parse(m.ListUnsubscribeURL)
		if err != nil || u.Scheme != "https" && u.Scheme != "http" {
			bad = append(bad, "list unsubscribe url: must be an http(s) url")
		}
		targets = append(targets, "<"+m.ListUnsubscribeURL+">")
		// RFC 8058: one-click needs the POST header next to an https target.
		headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
	}
	if len(targets) > 0 {
		headers["List-Unsubscribe"] = strings.Join(targets, ", ")
	}
	if len(bad) > 0 {
		return nil, &Error{Outcome: NotProcessed, Permanent: true, Messages: bad}
	}
	w := wireMail{
		Personalizations: []wirePersonalization{{To: []Address{m.To}}},
		From:             m.From,
		ReplyTo:          m.ReplyTo,
		Subject:          m.Subject,
		CustomArgs:       m.CustomArgs,
		Categories:       m.Categories,
	}
	if len(headers) > 0 {
		w.Headers = headers
	}
	if m.Text != "" {
		w.Content = append(w.Content, wireContent{Type: "text/plain", Value: m.Text})
	}
	if m.HTML != "" {
		w.Content = append(w.Content, wireContent{Type: "text/html", Value: m.HTML})
	}
	return json.Marshal(w)
}

// Send hands m to SendGrid (POST /v3/mail/send). On success SendGrid answered 202 and has
// queued the message. On failure the error is a *Error whose Outcome says whether the
// message may have been sent anyway.
func (c *Client) Send(ctx context.Context, m Mail) (Sent, error) {
	body, err := m.body()
	if err != nil {
		return Sent{}, err
	}
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
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base.JoinPath("/v3/mail/send").String(), bytes.NewReader(body))
	if err != nil {
		return Sent{}, &Error{Outcome: NotProcessed, Permanent: true, err: err}
	}
	req.Header.Set("Authorization", c.auth())
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		// Until the whole request is written SendGrid cannot have acted on it; after
		// that, a lost answer says nothing about whether it did.
		outcome := NotProcessed
		if wrote.Load() {
			outcome = MaybeProcessed
		}
		return Sent{}, &Error{Outcome: outcome, err: transportError(err)}
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	rl := c.rateLimit(resp.Header)
	if resp.StatusCode == http.StatusAccepted || resp.StatusCode == http.StatusOK {
		return Sent{MessageID: resp.Header.Get("X-Message-Id"), RateLimit: rl}, nil
	}
	return Sent{RateLimit: rl}, c.statusError(resp, answer, rl)
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

func (c *Client) rateLimit(h http.Header) RateLimit {
	var rl RateLimit
	rl.Limit, _ = strconv.Atoi(h.Get("X-RateLimit-Limit"))
	rl.Remaining, _ = strconv.Atoi(h.Get("X-RateLimit-Remaining"))
	if s, err := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64); err == nil && s > 0 {
		rl.Reset = time.Unix(s, 0)
	}
	return rl
}

type wireErrors struct {
	Errors []struct {
		Message string `json:"message"`
		Field   any    `json:"field"`
	} `json:"errors"`
}

func (c *Client) statusError(resp *http.Response, answer []byte, rl RateLimit) *Error {
	e := &Error{Status: resp.StatusCode}
	var w wireErrors
	if json.Unmarshal(answer, &w) == nil {
		for _, x := range w.Errors {
			if f, ok := x.Field.(string); ok && f != "" {
				e.Messages = append(e.Messages, f+": "+x.Message)
			} else if x.Message != "" {
				e.Messages = append(e.Messages, x.Message)
			}
		}
	}
	switch s := resp.StatusCode; {
	case s == http.StatusTooManyRequests:
		e.Outcome = NotProcessed
		e.RetryAfter = retryAfter(resp.Header, rl, c.now())
	case s == http.StatusRequestTimeout:
		e.Outcome = NotProcessed
	case s >= 400 && s < 500:
		e.Outcome, e.Permanent = NotProcessed, true
	default:
		// 5xx (and anything unexpected): SendGrid may have queued the message first.
		e.Outcome = MaybeProcessed
	}
	return e
}

// retryAfter reads Retry-After (seconds) and else X-RateLimit-Reset (a Unix time).
func retryAfter(h http.Header, rl RateLimit, now time.Time) time.Duration {
	if s, err := strconv.Atoi(h.Get("Retry-After")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if !rl.Reset.IsZero() {
		if d := rl.Reset.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}
