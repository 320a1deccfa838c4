package sendgrid

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Outcome says what a failed send may have done at the provider. The sender's exactly-once
// rule rests on it: neither SendGrid nor Twilio takes an idempotency key, so only a request
// that was certainly not processed may be sent again; one that may have been processed is
// reconciled (webhook events by custom_args), never re-sent blind.
type Outcome int

const (
	// NotProcessed: the provider certainly did not act on the request — the connection
	// failed before the request was written, or the provider answered 429 or another 4xx.
	NotProcessed Outcome = iota + 1
	// MaybeProcessed: the request left and no clear answer came back — a timeout or a broken
	// connection after the request was written, or a 5xx. The message may have been sent.
	MaybeProcessed
)

// String names the outcome for logs and errors.
func (o Outcome) String() string {
	switch o {
	case NotProcessed:
		return "not processed"
	case MaybeProcessed:
		return "maybe processed"
	}
	return "unknown"
}

// Error is a failed call to SendGrid. It never holds the API key, and its text holds only the
// provider's own error messages (no transport internals beyond the wrapped cause).
type Error struct {
	// Outcome says whether the provider may have acted on the request.
	Outcome Outcome
	// Permanent is true when the same request would fail the same way again (validation,
	// authentication, permission, size): retrying it is pointless.
	Permanent bool
	// Status is the HTTP status, 0 when no answer came.
	Status int
	// RetryAfter is how long the provider asked to wait (429), 0 when it did not say.
	RetryAfter time.Duration
	// Messages are the provider's error messages (the "errors" array), field-qualified.
	Messages []string
	err      error
}

// Error describes the failure.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("sendgrid: ")
	if e.Status != 0 {
		fmt.Fprintf(&b, "status %d", e.Status)
	} else {
		b.WriteString("no answer")
	}
	fmt.Fprintf(&b, " (%s", e.Outcome)
	if e.Permanent {
		b.WriteString(", permanent")
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, ", retry after %s", e.RetryAfter)
	}
	b.WriteString(")")
	if len(e.Messages) > 0 {
		b.WriteString(": ")
		b.WriteString(strings.Join(e.Messages, "; "))
	}
	if e.err != nil {
		b.WriteString(": ")
		b.WriteString(e.err.Error())
	}
	return b.String()
}

// Unwrap returns the transport cause, if any.
func (e *Error) Unwrap() error { return e.err }

// Retryable reports whether err is a SendGrid failure that may be retried as is: certainly
// not processed and not permanent (429, or a connection that failed before sending).
func Retryable(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Outcome == NotProcessed && !e.Permanent
}

// MaybeSent reports whether err leaves open that the message was sent. A nil error is a sure
// send; an error that is not a *Error (none is returned by this package) counts as maybe.
func MaybeSent(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Outcome == MaybeProcessed
	}
	return err != nil
}
