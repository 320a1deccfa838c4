package twilio

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/campaignmesh/campaignmesh/services/delivery"
)

// RefParam is the query parameter of the StatusCallback URL that carries the ledger row's
// id, so each status callback names its row even before the SID was recorded.
const RefParam = "cm_ref"

// Marker is the reference appended to every SMS body: " #" and the ledger row's id (opaque,
// no personal data). The body is where the reference must go for a lookup: Twilio's
// Message resource, as fetch and list return it, has no field of ours but the body (the
// StatusCallback URL is not returned), and a message whose creation answer was lost has no
// SID to fetch. It costs a few characters of the SMS.
func Marker(ref string) string { return " #" + ref }

// lookupNewest bounds the second, date-less list of a lookup.
const lookupNewest = 100

// ProviderConfig configures a Provider.
type ProviderConfig struct {
	// From is the sending number or sender id; or set MessagingServiceSID.
	From                string
	MessagingServiceSID string
	// StatusCallback is the URL status callbacks are posted to (none when empty); RefParam
	// is added to its query.
	StatusCallback string
	// ValidityPeriod, when set, lets Twilio drop a message still queued after it.
	ValidityPeriod time.Duration
}

// Provider is delivery's Provider port over a Client: Send creates the message with the
// ledger id as a body marker, Lookup lists the recipient's messages and matches the marker.
type Provider struct {
	c   *Client
	cfg ProviderConfig
}

var _ delivery.Provider = (*Provider)(nil)

// NewProvider returns the port over c.
func NewProvider(c *Client, cfg ProviderConfig) (*Provider, error) {
	if cfg.StatusCallback != "" {
		if u, err := url.Parse(cfg.StatusCallback); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, errors.New("twilio: status callback must be an http(s) url")
		}
	}
	return &Provider{c: c, cfg: cfg}, nil
}

// Send implements delivery.Provider. The body is the message's Text and the Marker.
func (p *Provider) Send(ctx context.Context, m delivery.Message) (string, error) {
	params := SendParams{
		To: m.To, From: p.cfg.From, MessagingServiceSID: p.cfg.MessagingServiceSID,
		Body: m.Text + Marker(m.Ref), ValidityPeriod: p.cfg.ValidityPeriod,
	}
	if m.From.Number != "" || m.From.MessagingServiceSID != "" {
		// The tenant's sender identity replaces the configured sender.
		params.From, params.MessagingServiceSID = m.From.Number, m.From.MessagingServiceSID
	}
	if p.cfg.StatusCallback != "" {
		u, _ := url.Parse(p.cfg.StatusCallback)
		q := u.Query()
		q.Set(RefParam, m.Ref)
		u.RawQuery = q.Encode()
		params.StatusCallback = u.String()
	}
	msg, err := p.c.Send(ctx, params)
	if err != nil {
		return "", classify(err)
	}
	return msg.SID, nil
}

// Lookup implements delivery.Provider: the recipient's messages sent on or after the
// attempt's day (To and DateSent>, as the plan for Twilio says), then — because a message
// still queued has no date_sent and so escapes a date filter — the recipient's newest
// messages whatever their date; a body ending in the row's Marker is the message.
func (p *Provider) Lookup(ctx context.Context, ref delivery.LookupRef) (bool, string, error) {
	if ref.To == "" {
		return false, "", errors.New("twilio: lookup needs the recipient's number")
	}
	marker := Marker(ref.Ref)
	lists := []ListParams{{To: ref.To, PageSize: 1000}, {To: ref.To, PageSize: lookupNewest, Limit: lookupNewest}}
	if !ref.Since.IsZero() {
		lists[0].DateSentAfter = ref.Since.Add(-24 * time.Hour) // Twilio filters by UTC day
	} else {
		lists = lists[1:]
	}
	for _, lp := range lists {
		msgs, err := p.c.ListMessages(ctx, lp)
		if err != nil {
			return false, "", fmt.Errorf("look up message %s: %w", ref.Ref, err)
		}
		for _, m := range msgs {
			if strings.HasSuffix(m.Body, marker) {
				return true, m.SID, nil
			}
		}
	}
	return false, "", nil
}

// classify turns a client error into the sender's classes.
func classify(err error) error {
	var e *Error
	if !errors.As(err, &e) {
		return &delivery.SendError{Class: delivery.MaybeProcessed, Reason: "twilio", Err: err}
	}
	// Twilio's messages may quote the number: the reason keeps the status and code only.
	se := &delivery.SendError{RetryAfter: e.RetryAfter, Reason: fmt.Sprintf("twilio: status %d code %d (%s)", e.Status, e.Code, e.Outcome)}
	switch {
	case e.Outcome == MaybeProcessed:
		se.Class = delivery.MaybeProcessed
	case e.Permanent:
		se.Class = delivery.NotProcessedPermanent
	default:
		se.Class = delivery.NotProcessedRetryable
	}
	return se
}
