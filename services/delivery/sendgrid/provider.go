package sendgrid

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/campaignmesh/campaignmesh/services/delivery"
)

// RefArg is the custom argument that carries the ledger row's id: opaque, no personal data
// (SendGrid keeps custom_args indefinitely as non-personal data). It comes back on every
// Event Webhook event and is what Lookup searches the Email Activity Feed by.
const RefArg = "cm_ref"

// ProviderConfig configures a Provider.
type ProviderConfig struct {
	// From is the tenant's verified sender identity.
	From    Address
	ReplyTo *Address
	// Categories tag every message (at most 10).
	Categories []string
}

// Provider is delivery's Provider port over a Client: Send is Mail Send with the ledger id
// in custom_args, Lookup the Email Activity Feed filtered by that custom argument.
type Provider struct {
	c   *Client
	cfg ProviderConfig
}

var _ delivery.Provider = (*Provider)(nil)

// NewProvider returns the port over c.
func NewProvider(c *Client, cfg ProviderConfig) *Provider { return &Provider{c: c, cfg: cfg} }

// Send implements delivery.Provider.
func (p *Provider) Send(ctx context.Context, m delivery.Message) (string, error) {
	mail := Mail{
		From: p.cfg.From, ReplyTo: p.cfg.ReplyTo, To: Address{Email: m.To},
		Subject: m.Subject, Text: m.Text, HTML: m.HTML, Headers: m.Headers,
		Categories:         p.cfg.Categories,
		CustomArgs:         map[string]string{RefArg: m.Ref},
		ListUnsubscribeURL: m.ListUnsubscribeURL,
	}
	if m.From.Email != "" {
		// The tenant's sender identity replaces the configured sender.
		mail.From, mail.ReplyTo = Address{Email: m.From.Email, Name: m.From.Name}, nil
		if m.From.ReplyTo != "" {
			mail.ReplyTo = &Address{Email: m.From.ReplyTo}
		}
	}
	sent, err := p.c.Send(ctx, mail)
	if err != nil {
		return "", classify(err)
	}
	return sent.MessageID, nil
}

// Lookup implements delivery.Provider: a message whose custom argument RefArg is ref.Ref.
// It needs the Email Activity add-on; SendGrid indexes a message with a delay, which the
// sender's settle time covers.
func (p *Provider) Lookup(ctx context.Context, ref delivery.LookupRef) (bool, string, error) {
	q, err := CustomArgQuery(RefArg, ref.Ref)
	if err != nil {
		return false, "", err
	}
	msgs, err := p.c.FilterMessages(ctx, q, 10)
	if err != nil {
		return false, "", fmt.Errorf("look up message %s: %w", ref.Ref, err)
	}
	for _, m := range msgs {
		if ref.To == "" || strings.EqualFold(m.ToEmail, ref.To) {
			return true, m.SendID(), nil
		}
	}
	return false, "", nil
}

// classify turns a client error into the sender's classes.
func classify(err error) error {
	var e *Error
	if !errors.As(err, &e) {
		return &delivery.SendError{Class: delivery.MaybeProcessed, Reason: "sendgrid", Err: err}
	}
	se := &delivery.SendError{RetryAfter: e.RetryAfter, Reason: e.Error()}
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
