package stripe

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/campaignmesh/campaignmesh/services/billing"
)

// SignatureHeader is the HTTP header Stripe signs webhook deliveries in.
const SignatureHeader = "Stripe-Signature"

// DefaultTolerance is how far a signed timestamp may be from now, either way: Stripe's own
// libraries default to five minutes, which bounds how long a captured delivery can be replayed.
const DefaultTolerance = 5 * time.Minute

// The verification errors. They say what was wrong, never the secret, the expected signature
// or the header's text, so they are safe to log and to map to a plain "bad signature" answer.
var (
	// ErrNoSignature: the header is empty, has no timestamp or no v1 signature.
	ErrNoSignature = errors.New("stripe webhook: no signature")
	// ErrBadSignature: no v1 signature matches the payload under the endpoint secret, or the
	// header is malformed.
	ErrBadSignature = errors.New("stripe webhook: signature does not match")
	// ErrTooOld: the signed timestamp is further than the tolerance from now (in the past, or
	// in the future: a clock that far ahead is as suspect as a replay).
	ErrTooOld = errors.New("stripe webhook: timestamp outside the tolerance")
	// ErrBadPayload: the signature matched but the body is not an event envelope.
	ErrBadPayload = errors.New("stripe webhook: payload is not an event")
)

// Verifier checks webhook signatures with one endpoint's signing secret.
type Verifier struct {
	secret    []byte
	tolerance time.Duration
	now       func() time.Time
}

// VerifierOption configures a Verifier.
type VerifierOption func(*Verifier)

// WithTolerance sets how far the signed timestamp may be from now (default DefaultTolerance).
func WithTolerance(d time.Duration) VerifierOption { return func(v *Verifier) { v.tolerance = d } }

// WithClock sets the verifier's clock (tests).
func WithClock(now func() time.Time) VerifierOption { return func(v *Verifier) { v.now = now } }

// NewVerifier returns a verifier for the endpoint secret (Stripe's "whsec_…" string, used as
// the HMAC key as it is).
func NewVerifier(secret []byte, opts ...VerifierOption) (*Verifier, error) {
	if len(bytes.TrimSpace(secret)) == 0 {
		return nil, errors.New("stripe webhook: empty signing secret")
	}
	v := &Verifier{secret: bytes.Clone(bytes.TrimSpace(secret)), tolerance: DefaultTolerance, now: time.Now}
	for _, o := range opts {
		o(v)
	}
	if v.tolerance <= 0 {
		return nil, errors.New("stripe webhook: tolerance must be positive")
	}
	return v, nil
}

// LoadWebhookSecret reads an endpoint signing secret from a file (surrounding white space is
// not part of it). Errors name the file, never its content.
func LoadWebhookSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("stripe webhook secret: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 || len(b) > 1024 {
		return nil, fmt.Errorf("stripe webhook secret %s: must hold 1 to 1024 bytes", path)
	}
	return b, nil
}

// Verify checks header (the Stripe-Signature value, `t=<unix>,v1=<hex>[,v1=<hex>…][,v0=…]`)
// against payload, the raw body as received: any v1 signature may match (Stripe sends one per
// active secret while a secret is rolled), other schemes (v0) are ignored, and the comparison
// is constant-time. The timestamp is checked only once a signature matched, so an attacker
// learns nothing about timing from a forged header.
func (v *Verifier) Verify(payload []byte, header string) error {
	t, sigs, err := parseHeader(header)
	if err != nil {
		return err
	}
	want := v.mac(t, payload)
	ok := false
	for _, s := range sigs {
		got, err := hex.DecodeString(s)
		if err != nil {
			continue
		}
		if hmac.Equal(got, want) {
			ok = true
		}
	}
	if !ok {
		return ErrBadSignature
	}
	if d := v.now().Sub(time.Unix(t, 0)); d > v.tolerance || d < -v.tolerance {
		return ErrTooOld
	}
	return nil
}

// ConstructEvent verifies the delivery and decodes its event envelope.
func (v *Verifier) ConstructEvent(payload []byte, header string) (Event, error) {
	if err := v.Verify(payload, header); err != nil {
		return Event{}, err
	}
	return DecodeEvent(payload)
}

func (v *Verifier) mac(t int64, payload []byte) []byte {
	m := hmac.New(sha256.New, v.secret)
	m.Write([]byte(strconv.FormatInt(t, 10)))
	m.Write([]byte{'.'})
	m.Write(payload)
	return m.Sum(nil)
}

// parseHeader splits the header into its timestamp and v1 signatures.
func parseHeader(header string) (int64, []string, error) {
	header = strings.TrimSpace(header)
	if header == "" {
		return 0, nil, ErrNoSignature
	}
	var (
		t    int64
		hasT bool
		sigs []string
	)
	for _, part := range strings.Split(header, ",") {
		k, val, found := strings.Cut(strings.TrimSpace(part), "=")
		if !found {
			return 0, nil, ErrBadSignature
		}
		switch k {
		case "t":
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil || hasT {
				return 0, nil, ErrBadSignature
			}
			t, hasT = n, true
		case "v1":
			sigs = append(sigs, val)
		}
	}
	if !hasT || len(sigs) == 0 {
		return 0, nil, ErrNoSignature
	}
	return t, sigs, nil
}

// Sign returns a Stripe-Signature header for payload signed at t with secret, as Stripe makes
// it. The stand-in and the tests sign their deliveries with it.
func Sign(secret, payload []byte, t time.Time) string {
	v := &Verifier{secret: bytes.TrimSpace(secret)}
	return fmt.Sprintf("t=%d,v1=%s", t.Unix(), hex.EncodeToString(v.mac(t.Unix(), payload)))
}

// Event is the part of a Stripe event envelope billing acts on.
type Event struct {
	// ID is Stripe's event id (evt_…): the same event delivered again has the same id.
	ID string `json:"id"`
	// Type is e.g. "invoice.paid".
	Type string `json:"type"`
	// Created is when Stripe created the event (unix seconds): deliveries may arrive out of
	// order, and this orders them.
	Created  int64 `json:"created"`
	Livemode bool  `json:"livemode"`
	Data     struct {
		Object EventObject `json:"object"`
	} `json:"data"`
}

// CreatedTime is Created as a time.
func (e Event) CreatedTime() time.Time { return time.Unix(e.Created, 0).UTC() }

// EventObject is the event's object (an invoice or a subscription for the events billing
// handles), reduced to the fields billing reads.
type EventObject struct {
	ID     string `json:"id"`
	Object string `json:"object"`
	// Customer is the customer id, whether Stripe sent it as a string or expanded.
	Customer string `json:"-"`
	// Status is the invoice's or the subscription's status (e.g. "past_due", "canceled").
	Status string `json:"status"`
	// AttemptCount is an invoice's number of payment attempts.
	AttemptCount int64 `json:"attempt_count"`
}

// UnmarshalJSON accepts customer as an id or an expanded object.
func (o *EventObject) UnmarshalJSON(b []byte) error {
	type plain EventObject
	var aux struct {
		plain
		Customer json.RawMessage `json:"customer"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*o = EventObject(aux.plain)
	c := bytes.TrimSpace(aux.Customer)
	switch {
	case len(c) == 0 || bytes.Equal(c, []byte("null")):
	case c[0] == '"':
		return json.Unmarshal(c, &o.Customer)
	default:
		var obj struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(c, &obj); err != nil {
			return err
		}
		o.Customer = obj.ID
	}
	return nil
}

// DecodeEvent decodes an event envelope; it needs an id, a type and a creation time.
func DecodeEvent(payload []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(payload, &e); err != nil {
		return Event{}, ErrBadPayload
	}
	if e.ID == "" || e.Type == "" || e.Created <= 0 {
		return Event{}, ErrBadPayload
	}
	return e, nil
}

// VerifyEvent implements billing.WebhookVerifier: ConstructEvent, in the domain's terms.
func (v *Verifier) VerifyEvent(payload []byte, header string) (billing.StripeEvent, error) {
	e, err := v.ConstructEvent(payload, header)
	if err != nil {
		return billing.StripeEvent{}, err
	}
	o := e.Data.Object
	return billing.StripeEvent{ID: e.ID, Type: e.Type, Created: e.CreatedTime(), CustomerID: o.Customer,
		ObjectID: o.ID, Status: o.Status, AttemptCount: o.AttemptCount}, nil
}
