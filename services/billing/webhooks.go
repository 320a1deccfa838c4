package billing

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
)

// StripeEvent is a verified Stripe event, reduced to what billing acts on.
type StripeEvent struct {
	// ID is Stripe's event id (evt_…), the same on every delivery of the event.
	ID   string
	Type string
	// Created is when Stripe created the event; it orders deliveries that arrive out of order.
	Created time.Time
	// CustomerID is the customer of the event's object (invoice, subscription).
	CustomerID string
	// ObjectID is the invoice's or subscription's id.
	ObjectID string
	// Status is the object's status (a subscription's: active, past_due, unpaid, canceled…).
	Status string
	// AttemptCount is an invoice's number of payment attempts.
	AttemptCount int64
}

// The Stripe event types billing acts on; every other type is answered and ignored.
const (
	StripeInvoicePaid          = "invoice.paid"
	StripeInvoicePaymentFailed = "invoice.payment_failed"
	StripeSubscriptionUpdated  = "customer.subscription.updated"
	StripeSubscriptionDeleted  = "customer.subscription.deleted"
)

// WebhookVerifier checks a delivery's signature and decodes its event. Any error means the
// delivery is refused (signature missing, wrong or outside the tolerance; not an event).
type WebhookVerifier interface {
	VerifyEvent(payload []byte, signature string) (StripeEvent, error)
}

// The outcomes of a Stripe event, recorded with its id.
const (
	// WebhookApplied: the event changed the account.
	WebhookApplied = "applied"
	// WebhookNoChange: the account was already as the event says (or suspended: a payment
	// after suspension is recorded, the tenant stays suspended until an operator acts).
	WebhookNoChange = "no_change"
	// WebhookStale: an event older than the last one applied to the account, delivered late.
	WebhookStale = "stale"
	// WebhookUnknownCustomer: no tenant maps to the event's customer.
	WebhookUnknownCustomer = "unknown_customer"
)

// WebhookStore is the port through which a Stripe event is acted on once: ApplyStripeEvent
// records ev's id and, in the same transaction, locks the account of ev's customer and writes
// what decide returns. When ev's id is already recorded it does nothing and reports duplicate.
// decide gets ok=false when no account maps to the customer; it returns the new account
// (written when changed), the audit record to write with it (nil: none) and the outcome.
type WebhookStore interface {
	ApplyStripeEvent(ctx context.Context, ev StripeEvent, decide func(acc Account, ok bool) (next Account, changed bool, rec *audit.Record, outcome string)) (outcome string, duplicate bool, err error)
}

// AuditMethodStripeWebhook is the method of the audit records of a standing changed by a
// Stripe webhook: the service's own work (actor service:billing), in the platform's chain
// (see AccountAuditResource).
const AuditMethodStripeWebhook = "billing.stripe/Webhook"

// Webhooks acts on Stripe's webhooks.
type Webhooks struct {
	verifier WebhookVerifier
	store    WebhookStore
	log      *slog.Logger
}

// NewWebhooks returns the webhook handler.
func NewWebhooks(verifier WebhookVerifier, store WebhookStore, logger *slog.Logger) *Webhooks {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Webhooks{verifier: verifier, store: store, log: logger}
}

// MaxWebhookPayload bounds a webhook body (the gateway refuses larger ones before relaying).
const MaxWebhookPayload = 1 << 20

var errBadWebhook = apperr.New(apperr.Invalid, "BAD_SIGNATURE", "webhook signature or payload rejected")

// HandleStripeWebhook verifies a delivery and acts on its event once: the event id is recorded
// in the transaction of its effect, so a redelivery (or two concurrent deliveries) changes
// nothing the second time and still succeeds. Unknown event types and events of customers no
// tenant maps to succeed without effect (Stripe would otherwise retry them for days). A bad
// signature is Invalid; any other error means "retry" (Stripe redelivers).
func (w *Webhooks) HandleStripeWebhook(ctx context.Context, payload []byte, signature string) error {
	if len(payload) > MaxWebhookPayload {
		return errBadWebhook
	}
	ev, err := w.verifier.VerifyEvent(payload, signature)
	if err != nil {
		w.log.WarnContext(ctx, "stripe webhook refused", "error", err)
		return errBadWebhook
	}
	switch ev.Type {
	case StripeInvoicePaid, StripeInvoicePaymentFailed, StripeSubscriptionUpdated, StripeSubscriptionDeleted:
	default:
		w.log.DebugContext(ctx, "stripe webhook ignored", "event_id", ev.ID, "type", ev.Type)
		return nil
	}
	if ev.CustomerID == "" {
		w.log.WarnContext(ctx, "stripe webhook names no customer", "event_id", ev.ID, "type", ev.Type)
		return nil
	}
	outcome, dup, err := w.store.ApplyStripeEvent(ctx, ev, func(acc Account, ok bool) (Account, bool, *audit.Record, string) {
		if !ok {
			return acc, false, nil, WebhookUnknownCustomer
		}
		next, outcome := applyStripeEvent(acc, ev)
		if outcome != WebhookApplied {
			return next, next != acc, nil, outcome
		}
		var rec *audit.Record
		wctx := audit.WithWork(ctx, func() audit.Record {
			return audit.Record{Method: AuditMethodStripeWebhook, Actor: "service:billing", ActorKind: "service", Service: "billing"}
		})
		if r, ok := audit.Take(wctx, "", AccountAuditResource(acc.TenantID)+"/events/"+ev.ID); ok {
			rec = &r
		}
		return next, true, rec, outcome
	})
	if err != nil {
		return fmt.Errorf("apply stripe event %s: %w", ev.ID, err)
	}
	w.log.InfoContext(ctx, "stripe webhook", "event_id", ev.ID, "type", ev.Type, "outcome", outcome, "duplicate", dup)
	return nil
}

// applyStripeEvent is what ev does to acc, and the outcome. Standing changes only with status
// (flagged/ok), their reasons and time; an event older than the last applied one changes
// nothing; a suspended account stays suspended.
func applyStripeEvent(acc Account, ev StripeEvent) (Account, string) {
	if !acc.LastEventAt.IsZero() && ev.Created.Before(acc.LastEventAt) {
		return acc, WebhookStale
	}
	next := acc
	next.LastEventAt = ev.Created
	flag := func(reason string) {
		if next.Status == AccountOK {
			next.Status, next.FlaggedAt = AccountFlagged, ev.Created
		}
		if next.Status == AccountFlagged {
			next.StatusReason = reason
		}
	}
	switch ev.Type {
	case StripeInvoicePaid:
		if next.Status == AccountFlagged {
			next.Status, next.StatusReason, next.FlaggedAt = AccountOK, "", time.Time{}
		}
	case StripeInvoicePaymentFailed:
		flag(fmt.Sprintf("%s %s attempt %d", ev.Type, ev.ObjectID, ev.AttemptCount))
	case StripeSubscriptionUpdated, StripeSubscriptionDeleted:
		status := ev.Status
		if ev.Type == StripeSubscriptionDeleted && status == "" {
			status = "canceled"
		}
		next.SubscriptionStatus = status
		if ev.Type == StripeSubscriptionDeleted || status == "unpaid" || status == "canceled" {
			flag(fmt.Sprintf("%s %s status %s", ev.Type, ev.ObjectID, status))
		}
	}
	if next.Status == acc.Status && next.StatusReason == acc.StatusReason && next.SubscriptionStatus == acc.SubscriptionStatus {
		return next, WebhookNoChange
	}
	return next, WebhookApplied
}
