package twilio

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Outcome says what a failed request may have done at Twilio. Twilio documents that a
// retried request after a 5xx can create the message twice and takes no idempotency key, so
// only a request that was certainly not processed may be sent again; one that may have been
// processed is reconciled (FetchMessage, or ListMessages by To and DateSent), never re-sent.
type Outcome int

const (
	// NotProcessed: Twilio certainly did not act on the request — the connection failed
	// before the request was written, or Twilio answered 429 / error 20429 or another 4xx.
	NotProcessed Outcome = iota + 1
	// MaybeProcessed: the request left and no clear answer came back — a timeout or a broken
	// connection after the request was written, a 5xx, or a success whose body was lost.
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

// CodeTooManyRequests is Twilio's error code for a rate-limited request.
const CodeTooManyRequests = 20429

// CodeNotFound is Twilio's error code for a resource that does not exist.
const CodeNotFound = 20404

// Error is a failed call to Twilio, carrying Twilio's error JSON (code, message, more_info,
// status). It never holds the credentials.
type Error struct {
	// Outcome says whether Twilio may have acted on the request.
	Outcome Outcome
	// Permanent is true when the same request would fail the same way again (invalid
	// number, missing body, authentication): retrying it is pointless.
	Permanent bool
	// Status is the HTTP status, 0 when no answer came.
	Status int
	// Code, Message and MoreInfo are Twilio's error fields (Code 0 when none).
	Code     int
	Message  string
	MoreInfo string
	// RetryAfter is how long Twilio asked to wait, 0 when it did not say.
	RetryAfter time.Duration
	err        error
}

// Error describes the failure.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("twilio: ")
	if e.Status != 0 {
		fmt.Fprintf(&b, "status %d", e.Status)
	} else {
		b.WriteString("no answer")
	}
	if e.Code != 0 {
		fmt.Fprintf(&b, " code %d", e.Code)
	}
	fmt.Fprintf(&b, " (%s", e.Outcome)
	if e.Permanent {
		b.WriteString(", permanent")
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, ", retry after %s", e.RetryAfter)
	}
	b.WriteString(")")
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.err != nil {
		b.WriteString(": ")
		b.WriteString(e.err.Error())
	}
	return b.String()
}

// Unwrap returns the transport cause, if any.
func (e *Error) Unwrap() error { return e.err }

// Retryable reports whether err is a Twilio failure that may be retried as is: certainly
// not processed and not permanent (429 / 20429, or a connection that failed before sending).
func Retryable(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Outcome == NotProcessed && !e.Permanent
}

// MaybeSent reports whether err leaves open that the message was created. A nil error is a
// sure send; an error that is not a *Error counts as maybe.
func MaybeSent(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Outcome == MaybeProcessed
	}
	return err != nil
}

// IsNotFound reports whether err is Twilio's answer that the resource does not exist.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && (e.Status == 404 || e.Code == CodeNotFound)
}
