// Package stripe is a client of the part of Stripe's API the billing service uses, written
// against Stripe's documented contract (docs.stripe.com/api, and the shapes in the official
// stripe-go library): billing meter events (POST /v1/billing/meter_events), billing meters
// (GET /v1/billing/meters) and their event summaries (GET /v1/billing/meters/{id}/
// event_summaries). It never uses the legacy usage-records API (removed in API version
// 2025-03-31).
//
// Requests are form-encoded, authenticated with the secret key as a bearer token, and pinned
// to APIVersion. Every failure is an *Error that says whether it is worth retrying; a meter
// event whose identifier Stripe already holds is not a failure but an acknowledgement
// (MeterEventAck.Duplicate), because the identifier names the units it carries.
package stripe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultBaseURL is Stripe's API origin.
const DefaultBaseURL = "https://api.stripe.com"

// APIVersion is the Stripe-Version every request is pinned to, so that a change of the
// account's default version cannot change the shapes this package reads.
const APIVersion = "2025-03-31.basil"

// DefaultTimeout bounds one request, from dialling to the end of the answer.
const DefaultTimeout = 10 * time.Second

// Stripe's documented limits on a meter event (POST /v1/billing/meter_events): the timestamp
// within the past 35 calendar days or at most 5 minutes in the future; identifier and event
// name at most 100 characters.
const (
	MaxEventAge        = 35 * 24 * time.Hour
	MaxEventFuture     = 5 * time.Minute
	MaxIdentifierLen   = 100
	MaxEventNameLen    = 100
	maxAnswerBytes     = 1 << 20
	pageLimit          = 100
	maxPages           = 1000
	duplicateIDMessage = "already exists with identifier"
)

// Config configures a Client. The API key comes from the caller (a secret file), is sent
// only as the bearer credential and never appears in logs or errors.
type Config struct {
	// BaseURL is Stripe's origin (DefaultBaseURL when empty), or a stand-in's.
	BaseURL string
	// APIKey is a Stripe secret (or restricted) key allowed to write meter events and read
	// meters.
	APIKey Secret
	// Timeout bounds each request (DefaultTimeout when zero).
	Timeout time.Duration
	// HTTPClient sends the requests (a client of its own when nil). Its Timeout should be
	// zero: Timeout above bounds each request through its context.
	HTTPClient *http.Client
	// Now is the clock the timestamp checks use (time.Now when nil).
	Now func() time.Time
}

// Client calls Stripe. It is safe for concurrent use.
type Client struct {
	base *url.URL
	// auth yields the Authorization header: a closure, so that even printing the struct's
	// fields cannot show the key.
	auth    func() string
	timeout time.Duration
	http    *http.Client
	now     func() time.Time
}

// New returns a client for cfg.
func New(cfg Config) (*Client, error) {
	if cfg.APIKey.Reveal() == "" {
		return nil, errors.New("stripe: api key is required")
	}
	raw := cfg.BaseURL
	if raw == "" {
		raw = DefaultBaseURL
	}
	base, err := url.Parse(raw)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("stripe: base url %q is not an http(s) origin", raw)
	}
	key := cfg.APIKey
	c := &Client{base: base, auth: func() string { return "Bearer " + key.Reveal() }, timeout: cfg.Timeout, http: cfg.HTTPClient, now: cfg.Now}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.http == nil {
		c.http = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// String names the client without its key.
func (c *Client) String() string { return "stripe client for " + c.base.String() }

// MeterEvent is one usage report: Value units of the meter whose event_name is EventName,
// for the customer, at Timestamp. Identifier is what Stripe deduplicates on (for at least 24
// hours): the same units must always be sent under the same identifier.
type MeterEvent struct {
	EventName  string
	CustomerID string
	Value      int64
	Identifier string
	Timestamp  time.Time
}

// MeterEventAck is Stripe's acknowledgement of a meter event.
type MeterEventAck struct {
	// Duplicate is true when Stripe already held an event with this identifier (it answers
	// 400 invalid_request_error "An event already exists with identifier …"): the units
	// were accepted by an earlier request, whose answer was lost.
	Duplicate bool
}

// validate checks e against Stripe's documented limits before anything is sent: a request
// Stripe would refuse is refused here, as a permanent error.
func (e MeterEvent) validate(now time.Time) error {
	var bad []string
	switch {
	case e.EventName == "":
		bad = append(bad, "event_name: required")
	case len(e.EventName) > MaxEventNameLen:
		bad = append(bad, fmt.Sprintf("event_name: longer than %d characters", MaxEventNameLen))
	}
	if e.CustomerID == "" {
		bad = append(bad, "payload[stripe_customer_id]: required")
	}
	if e.Value < 0 {
		bad = append(bad, "payload[value]: negative")
	}
	switch {
	case e.Identifier == "":
		// Without an identifier Stripe makes one up, and a retry would count twice.
		bad = append(bad, "identifier: required")
	case len(e.Identifier) > MaxIdentifierLen:
		bad = append(bad, fmt.Sprintf("identifier: longer than %d characters", MaxIdentifierLen))
	}
	switch {
	case e.Timestamp.IsZero():
		bad = append(bad, "timestamp: required")
	case e.Timestamp.Before(now.Add(-MaxEventAge)):
		bad = append(bad, "timestamp: more than 35 days in the past")
	case e.Timestamp.After(now.Add(MaxEventFuture)):
		bad = append(bad, "timestamp: more than 5 minutes in the future")
	}
	if len(bad) > 0 {
		return &Error{Type: "invalid_request", Message: "meter event not sent: " + strings.Join(bad, "; ")}
	}
	return nil
}

// ReportMeterEvent sends e (POST /v1/billing/meter_events). A nil error means Stripe holds
// the event, now or from an earlier request with the same identifier.
func (c *Client) ReportMeterEvent(ctx context.Context, e MeterEvent) (MeterEventAck, error) {
	if err := e.validate(c.now()); err != nil {
		return MeterEventAck{}, err
	}
	form := url.Values{}
	form.Set("event_name", e.EventName)
	form.Set("payload[stripe_customer_id]", e.CustomerID)
	form.Set("payload[value]", strconv.FormatInt(e.Value, 10))
	form.Set("identifier", e.Identifier)
	form.Set("timestamp", strconv.FormatInt(e.Timestamp.Unix(), 10))
	var out struct {
		Identifier string `json:"identifier"`
	}
	err := c.do(ctx, http.MethodPost, "/v1/billing/meter_events", form, &out)
	var se *Error
	if errors.As(err, &se) && isDuplicateIdentifier(se, e.Identifier) {
		return MeterEventAck{Duplicate: true}, nil
	}
	if err != nil {
		return MeterEventAck{}, err
	}
	return MeterEventAck{}, nil
}

// isDuplicateIdentifier recognises Stripe's answer to a meter event whose identifier it
// already holds. Stripe documents no error code for it; the answer observed in practice is a
// 400 of type invalid_request_error with the message "An event already exists with
// identifier <identifier>." (see langfuse/langfuse#16292, and nucleuscloud/neosync's test of
// the same case). The identifier must be ours, so that no other 400 is taken for an ack.
func isDuplicateIdentifier(e *Error, identifier string) bool {
	return e.Status == http.StatusBadRequest && e.Type == "invalid_request_error" &&
		strings.Contains(e.Message, duplicateIDMessage) && strings.Contains(e.Message, identifier)
}

// Meter is a billing meter: the event_name its events carry and its id.
type Meter struct {
	ID          string `json:"id"`
	EventName   string `json:"event_name"`
	DisplayName string `json:"display_name"`
	Status      string `json:"status"`
}

// ListMeters returns every billing meter (GET /v1/billing/meters, all pages).
func (c *Client) ListMeters(ctx context.Context) ([]Meter, error) {
	var all []Meter
	after := ""
	for range maxPages {
		q := url.Values{"limit": {strconv.Itoa(pageLimit)}}
		if after != "" {
			q.Set("starting_after", after)
		}
		var page struct {
			Data    []Meter `json:"data"`
			HasMore bool    `json:"has_more"`
		}
		if err := c.do(ctx, http.MethodGet, "/v1/billing/meters", q, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Data...)
		if !page.HasMore || len(page.Data) == 0 {
			return all, nil
		}
		after = page.Data[len(page.Data)-1].ID
	}
	return nil, &Error{Message: "too many pages of meters"}
}

// MeterIDs maps the active meters' event names to their ids.
func (c *Client) MeterIDs(ctx context.Context) (map[string]string, error) {
	meters, err := c.ListMeters(ctx)
	if err != nil {
		return nil, err
	}
	ids := make(map[string]string, len(meters))
	for _, m := range meters {
		if m.Status == "" || m.Status == "active" {
			ids[m.EventName] = m.ID
		}
	}
	return ids, nil
}

// EventSummary is Stripe's aggregate of a customer's events of one meter in [Start, End).
type EventSummary struct {
	Meter string
	Start time.Time
	End   time.Time
	// Value is the aggregated value (a sum for our meters). Stripe answers a float.
	Value float64
}

// MeterEventSummaries returns the customer's event summaries of the meter in [start, end)
// (GET /v1/billing/meters/{id}/event_summaries, all pages), one per UTC day: start and end
// must be UTC midnights. Stripe aggregates asynchronously: the latest events may be missing.
func (c *Client) MeterEventSummaries(ctx context.Context, meterID, customer string, start, end time.Time) ([]EventSummary, error) {
	if meterID == "" || customer == "" {
		return nil, &Error{Type: "invalid_request", Message: "meter id and customer are required"}
	}
	if !isUTCMidnight(start) || !isUTCMidnight(end) || !end.After(start) {
		return nil, &Error{Type: "invalid_request", Message: "start and end must be UTC midnights, start before end"}
	}
	var all []EventSummary
	after := ""
	path := "/v1/billing/meters/" + url.PathEscape(meterID) + "/event_summaries"
	for range maxPages {
		q := url.Values{
			"customer":              {customer},
			"start_time":            {strconv.FormatInt(start.Unix(), 10)},
			"end_time":              {strconv.FormatInt(end.Unix(), 10)},
			"value_grouping_window": {"day"},
			"limit":                 {strconv.Itoa(pageLimit)},
		}
		if after != "" {
			q.Set("starting_after", after)
		}
		var page struct {
			Data []struct {
				ID              string  `json:"id"`
				Meter           string  `json:"meter"`
				StartTime       int64   `json:"start_time"`
				EndTime         int64   `json:"end_time"`
				AggregatedValue float64 `json:"aggregated_value"`
			} `json:"data"`
			HasMore bool `json:"has_more"`
		}
		if err := c.do(ctx, http.MethodGet, path, q, &page); err != nil {
			return nil, err
		}
		for _, d := range page.Data {
			all = append(all, EventSummary{Meter: d.Meter, Start: time.Unix(d.StartTime, 0).UTC(), End: time.Unix(d.EndTime, 0).UTC(), Value: d.AggregatedValue})
		}
		if !page.HasMore || len(page.Data) == 0 {
			return all, nil
		}
		after = page.Data[len(page.Data)-1].ID
	}
	return nil, &Error{Message: "too many pages of event summaries"}
}

func isUTCMidnight(t time.Time) bool {
	return !t.IsZero() && t.Equal(t.UTC().Truncate(24*time.Hour))
}

// do sends one request (form in the body for POST, in the query otherwise) and decodes a 2xx
// answer into out.
func (c *Client) do(ctx context.Context, method, path string, form url.Values, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	u := c.base.JoinPath(path)
	var body io.Reader
	if method == http.MethodGet {
		u.RawQuery = form.Encode()
	} else {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return &Error{Message: "build request", err: err}
	}
	req.Header.Set("Authorization", c.auth())
	req.Header.Set("Stripe-Version", APIVersion)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return &Error{Retryable: true, err: transportError(err)}
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	if err != nil {
		return &Error{Status: resp.StatusCode, Retryable: true, err: transportError(err)}
	}
	if len(answer) > maxAnswerBytes {
		return &Error{Status: resp.StatusCode, Retryable: resp.StatusCode >= 500, Message: "answer larger than 1 MiB"}
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if err := json.Unmarshal(answer, out); err != nil {
			return &Error{Status: resp.StatusCode, Message: "answer is not the expected json"}
		}
		return nil
	}
	return statusError(resp, answer)
}

// statusError reads Stripe's error object and classifies the failure as Stripe's own
// libraries do: Stripe-Should-Retry when present, else 409, 429 and 5xx are retryable.
func statusError(resp *http.Response, answer []byte) *Error {
	e := &Error{Status: resp.StatusCode}
	var w struct {
		Error struct {
			Type    string `json:"type"`
			Code    string `json:"code"`
			Param   string `json:"param"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(answer, &w) == nil {
		e.Type, e.Code, e.Param, e.Message = w.Error.Type, w.Error.Code, w.Error.Param, w.Error.Message
	}
	s := resp.StatusCode
	e.Retryable = s == http.StatusConflict || s == http.StatusTooManyRequests || s >= 500
	switch resp.Header.Get("Stripe-Should-Retry") {
	case "true":
		e.Retryable = true
	case "false":
		e.Retryable = false
	}
	if v, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && v > 0 {
		e.RetryAfter = time.Duration(v) * time.Second
	}
	return e
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
