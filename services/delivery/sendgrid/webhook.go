package sendgrid

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Headers of a signed Event Webhook request (SendGrid's "Signed Event Webhook").
const (
	SignatureHeader = "X-Twilio-Email-Event-Webhook-Signature"
	TimestampHeader = "X-Twilio-Email-Event-Webhook-Timestamp"
)

// DefaultReplayWindow is how far a webhook's signed timestamp may be from now. SendGrid
// retries a failed delivery for up to 24 hours but signs each attempt afresh, so a genuine
// request is always recent; an old one is a replay.
const DefaultReplayWindow = 10 * time.Minute

// MaxWebhookBytes bounds a webhook body. SendGrid batches events into posts of a few MB at
// most (observed); anything larger is refused rather than read.
const MaxWebhookBytes = 8 << 20

// ErrBadSignature is returned for a webhook request whose signature does not verify or whose
// timestamp is outside the replay window: the request must be refused (403).
var ErrBadSignature = errors.New("sendgrid webhook: signature does not verify")

// ParsePublicKey reads the Event Webhook verification key as SendGrid shows it: the base64
// of a DER (PKIX) ECDSA P-256 public key. A PEM block is accepted too.
func ParsePublicKey(s string) (*ecdsa.PublicKey, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "-----BEGIN") {
		lines := strings.Split(s, "\n")
		var body []string
		for _, l := range lines {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "-----") {
				body = append(body, l)
			}
		}
		s = strings.Join(body, "")
	}
	der, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("sendgrid verification key: not base64: %w", err)
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("sendgrid verification key: %w", err)
	}
	key, ok := pub.(*ecdsa.PublicKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, errors.New("sendgrid verification key: not an ECDSA P-256 key")
	}
	return key, nil
}

// Verifier checks signed Event Webhook requests.
type Verifier struct {
	key    *ecdsa.PublicKey
	window time.Duration
	now    func() time.Time
}

// NewVerifier returns a verifier for key. window is the replay window (DefaultReplayWindow
// when zero); now is the clock (time.Now when nil).
func NewVerifier(key *ecdsa.PublicKey, window time.Duration, now func() time.Time) *Verifier {
	if window <= 0 {
		window = DefaultReplayWindow
	}
	if now == nil {
		now = time.Now
	}
	return &Verifier{key: key, window: window, now: now}
}

// Verify checks that signature (the base64 of an ASN.1 DER ECDSA signature) signs the
// SHA-256 of timestamp followed by the raw body, and that timestamp (Unix seconds) is within
// the replay window of now.
func (v *Verifier) Verify(signature, timestamp string, body []byte) error {
	if signature == "" || timestamp == "" {
		return fmt.Errorf("%w: signature or timestamp header missing", ErrBadSignature)
	}
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: timestamp is not unix seconds", ErrBadSignature)
	}
	if d := v.now().Sub(time.Unix(sec, 0)); d > v.window || d < -v.window {
		return fmt.Errorf("%w: timestamp outside the replay window", ErrBadSignature)
	}
	sig, err := base64.StdEncoding.DecodeString(signature)
	if err != nil {
		return fmt.Errorf("%w: signature is not base64", ErrBadSignature)
	}
	h := sha256.New()
	h.Write([]byte(timestamp))
	h.Write(body)
	if !ecdsa.VerifyASN1(v.key, h.Sum(nil), sig) {
		return ErrBadSignature
	}
	return nil
}

// VerifyRequest reads r's body (at most MaxWebhookBytes), verifies its signature and parses
// its events. The body is consumed.
func (v *Verifier) VerifyRequest(r *http.Request) ([]Event, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxWebhookBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read sendgrid webhook: %w", err)
	}
	if len(body) > MaxWebhookBytes {
		return nil, fmt.Errorf("sendgrid webhook: body larger than %d bytes", MaxWebhookBytes)
	}
	if err := v.Verify(r.Header.Get(SignatureHeader), r.Header.Get(TimestampHeader), body); err != nil {
		return nil, err
	}
	return ParseEvents(body)
}

// Event types of the Event Webhook.
const (
	EventProcessed        = "processed"
	EventDropped          = "dropped"
	EventDelivered        = "delivered"
	EventDeferred         = "deferred"
	EventBounce           = "bounce"
	EventOpen             = "open"
	EventClick            = "click"
	EventSpamReport       = "spamreport"
	EventUnsubscribe      = "unsubscribe"
	EventGroupUnsubscribe = "group_unsubscribe"
	EventGroupResubscribe = "group_resubscribe"
)

// Event is one Event Webhook event. Fields SendGrid did not send are zero.
type Event struct {
	Event string
	Email string
	// Timestamp is when the event happened (Unix seconds on the wire).
	Timestamp time.Time
	// EventID (sg_event_id) identifies the event, but may change when SendGrid redelivers:
	// deduplicate on (message id, event, timestamp) instead.
	EventID string
	// MessageID (sg_message_id) is the X-Message-Id of the send followed by a suffix.
	MessageID string
	SMTPID    string
	// Categories holds "category", which SendGrid sends as a string or an array.
	Categories []string
	// Reason, Status, Response and Attempt describe bounces, drops and deferrals.
	Reason, Status, Response, Attempt string
	// BounceType is "bounce" (hard) or "blocked" (soft) on a bounce event.
	BounceType           string
	BounceClassification string
	// URL is the clicked link; UserAgent and IP describe the opener or clicker.
	URL, UserAgent, IP string
	// MachineOpen is sg_machine_open: an open by a mailbox provider's proxy, not a person.
	MachineOpen bool
	// ASMGroupID is the unsubscribe group of a group event.
	ASMGroupID int64
	// CustomArgs are the message's custom_args: SendGrid adds them to each event as
	// top-level string fields, so every top-level string field that is not one of
	// SendGrid's own lands here.
	CustomArgs map[string]string
}

// SendGridMessageID returns the X-Message-Id part of sg_message_id (the text before the
// first dot), which is what Send returned.
func (e Event) SendGridMessageID() string {
	id, _, _ := strings.Cut(e.MessageID, ".")
	return id
}

// DedupKey identifies the event across SendGrid's redeliveries, whose sg_event_id may
// change: the message, the event type, its time and, for clicks, the link (two links
// clicked within a second are two events).
func (e Event) DedupKey() string {
	k := e.MessageID + "|" + e.Event + "|" + strconv.FormatInt(e.Timestamp.Unix(), 10)
	if e.Event == EventClick {
		k += "|" + e.URL
	}
	return k
}

// ownFields are the top-level fields SendGrid itself puts in events; any other string field
// is a custom arg.
var ownFields = map[string]bool{
	"event": true, "email": true, "timestamp": true, "sg_event_id": true, "sg_message_id": true,
	"smtp-id": true, "category": true, "reason": true, "status": true, "response": true,
	"attempt": true, "type": true, "bounce_classification": true, "url": true, "useragent": true,
	"ip": true, "sg_machine_open": true, "asm_group_id": true, "tls": true, "cert_err": true,
	"url_offset": true, "marketing_campaign_id": true, "marketing_campaign_name": true,
	"marketing_campaign_version": true, "marketing_campaign_split_id": true, "pool": true,
	"send_at": true, "sg_template_id": true, "sg_template_name": true, "sg_user_id": true,
	"singlesend_id": true, "singlesend_name": true, "template_id": true, "mc_stats": true,
	"phase_id": true, "post_type": true, "newsletter": true, "unique_args": true,
}

// MaxEvents bounds the events of one webhook post.
const MaxEvents = 100000

// ParseEvents parses an Event Webhook body: a JSON array of event objects. An event without
// an event type is refused; unknown fields are kept as custom args when they are strings.
func ParseEvents(body []byte) ([]Event, error) {
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, fmt.Errorf("sendgrid webhook: not a json array of events: %w", err)
	}
	if len(raw) > MaxEvents {
		return nil, fmt.Errorf("sendgrid webhook: %d events, at most %d", len(raw), MaxEvents)
	}
	events := make([]Event, 0, len(raw))
	for i, fields := range raw {
		e, err := parseEvent(fields)
		if err != nil {
			return nil, fmt.Errorf("sendgrid webhook: event %d: %w", i, err)
		}
		events = append(events, e)
	}
	return events, nil
}

func parseEvent(f map[string]json.RawMessage) (Event, error) {
	var e Event
	str := func(k string) string {
		var s string
		if v, ok := f[k]; ok {
			if json.Unmarshal(v, &s) != nil {
				// Some fields (attempt, status) come as numbers from older senders.
				var n json.Number
				if json.Unmarshal(v, &n) == nil {
					s = n.String()
				}
			}
		}
		return s
	}
	e.Event = str("event")
	if e.Event == "" {
		return e, errors.New("no event type")
	}
	e.Email = str("email")
	if v, ok := f["timestamp"]; ok {
		var ts int64
		if err := json.Unmarshal(v, &ts); err != nil {
			return e, errors.New("timestamp is not unix seconds")
		}
		e.Timestamp = time.Unix(ts, 0).UTC()
	}
	e.EventID = str("sg_event_id")
	e.MessageID = str("sg_message_id")
	e.SMTPID = str("smtp-id")
	if v, ok := f["category"]; ok {
		var one string
		if json.Unmarshal(v, &one) == nil {
			e.Categories = []string{one}
		} else if err := json.Unmarshal(v, &e.Categories); err != nil {
			return e, errors.New("category is neither a string nor an array of strings")
		}
	}
	e.Reason, e.Status, e.Response, e.Attempt = str("reason"), str("status"), str("response"), str("attempt")
	e.BounceType = str("type")
	e.BounceClassification = str("bounce_classification")
	e.URL, e.UserAgent, e.IP = str("url"), str("useragent"), str("ip")
	if v, ok := f["sg_machine_open"]; ok {
		_ = json.Unmarshal(v, &e.MachineOpen)
	}
	if v, ok := f["asm_group_id"]; ok {
		_ = json.Unmarshal(v, &e.ASMGroupID)
	}
	for k, v := range f {
		if ownFields[k] {
			continue
		}
		var s string
		if json.Unmarshal(v, &s) == nil {
			if e.CustomArgs == nil {
				e.CustomArgs = make(map[string]string)
			}
			e.CustomArgs[k] = s
		}
	}
	return e, nil
}
