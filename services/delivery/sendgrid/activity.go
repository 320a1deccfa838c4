package sendgrid

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// MaxActivityLimit is the Email Activity API's largest page ("limit", 1..1000).
const MaxActivityLimit = 1000

// ActivityMessage is one message as SendGrid's Email Activity Feed lists it
// (GET /v3/messages).
type ActivityMessage struct {
	// MsgID is SendGrid's full message id: the X-Message-Id of the send, a dot, and
	// SendGrid's own suffix (as in the events' sg_message_id).
	MsgID     string
	FromEmail string
	ToEmail   string
	Subject   string
	// Status is processed, delivered or not_delivered.
	Status        string
	OpensCount    int
	ClicksCount   int
	LastEventTime time.Time
}

// SendID returns the X-Message-Id part of MsgID (before the first dot): the id Send returned.
func (m ActivityMessage) SendID() string {
	id, _, _ := strings.Cut(m.MsgID, ".")
	return id
}

// CustomArgQuery is the Email Activity query matching messages whose custom argument name
// equals value: unique_args['name']="value" (the activity feed still calls custom_args
// unique_args). Quotes and backslashes cannot be escaped in that query language, so they
// are refused.
func CustomArgQuery(name, value string) (string, error) {
	for _, s := range []string{name, value} {
		if s == "" || strings.ContainsAny(s, `"'\`) {
			return "", fmt.Errorf("sendgrid: custom argument %q cannot be queried", s)
		}
	}
	return fmt.Sprintf(`unique_args['%s']="%s"`, name, value), nil
}

type wireActivity struct {
	Messages []struct {
		FromEmail     string `json:"from_email"`
		MsgID         string `json:"msg_id"`
		Subject       string `json:"subject"`
		ToEmail       string `json:"to_email"`
		Status        string `json:"status"`
		OpensCount    int    `json:"opens_count"`
		ClicksCount   int    `json:"clicks_count"`
		LastEventTime string `json:"last_event_time"`
	} `json:"messages"`
}

// FilterMessages searches the Email Activity Feed (GET /v3/messages?query=…&limit=…). It
// needs SendGrid's Email Activity add-on and an API key with the email activity scope, and
// shows a message only once SendGrid has indexed it (seconds to minutes after the send): an
// empty answer soon after a send proves nothing. A failure is a *Error.
func (c *Client) FilterMessages(ctx context.Context, query string, limit int) ([]ActivityMessage, error) {
	if limit <= 0 || limit > MaxActivityLimit {
		limit = MaxActivityLimit
	}
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if query != "" {
		q.Set("query", query)
	}
	u := c.base.JoinPath("/v3/messages")
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, &Error{Outcome: NotProcessed, Permanent: true, err: err}
	}
	req.Header.Set("Authorization", c.auth())
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &Error{Outcome: NotProcessed, err: transportError(err)}
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return nil, &Error{Outcome: NotProcessed, Status: resp.StatusCode, err: transportError(err)}
	}
	if resp.StatusCode != http.StatusOK {
		return nil, c.statusError(resp, answer, c.rateLimit(resp.Header))
	}
	var w wireActivity
	if err := json.Unmarshal(answer, &w); err != nil {
		return nil, &Error{Outcome: NotProcessed, Status: resp.StatusCode, Messages: []string{"answer is not the expected json"}}
	}
	out := make([]ActivityMessage, 0, len(w.Messages))
	for _, m := range w.Messages {
		a := ActivityMessage{
			MsgID: m.MsgID, FromEmail: m.FromEmail, ToEmail: m.ToEmail, Subject: m.Subject, Status: m.Status,
			OpensCount: m.OpensCount, ClicksCount: m.ClicksCount,
		}
		a.LastEventTime, _ = time.Parse(time.RFC3339, m.LastEventTime)
		out = append(out, a)
	}
	return out, nil
}
