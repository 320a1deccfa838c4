package stripe

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Error is a failed call to Stripe. It never holds the API key, and its text holds only
// Stripe's own error fields (type, code, param, message) and the kind of a transport failure,
// never addresses or driver text.
type Error struct {
	// Status is the HTTP status, 0 when no answer came (or the request was refused before
	// it was sent).
	Status int
	// Type, Code, Param and Message are Stripe's error object ({"error":{…}}).
	Type, Code, Param, Message string
	// Retryable is true when the same request may succeed later: 429, 409 (a concurrent
	// request on the same object), 5xx, timeouts and connection failures, or whatever
	// Stripe's Stripe-Should-Retry header says. Meter events carry an identifier Stripe
	// deduplicates on, so resending one that may have been processed is safe.
	Retryable bool
	// RetryAfter is how long Stripe asked to wait (Retry-After), 0 when it did not say.
	RetryAfter time.Duration
	err        error
}

// Error describes the failure.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("stripe: ")
	if e.Status != 0 {
		fmt.Fprintf(&b, "status %d", e.Status)
	} else {
		b.WriteString("no answer")
	}
	if e.Retryable {
		b.WriteString(" (retryable)")
	} else {
		b.WriteString(" (permanent)")
	}
	for _, f := range []struct{ k, v string }{{"type", e.Type}, {"code", e.Code}, {"param", e.Param}} {
		if f.v != "" {
			fmt.Fprintf(&b, " %s=%s", f.k, f.v)
		}
	}
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

// Unwrap returns the cause (a context error for timeouts and cancellations), if any.
func (e *Error) Unwrap() error { return e.err }

// Retryable reports whether err is a Stripe failure worth retrying as is.
func Retryable(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Retryable
}

// Permanent reports whether err is a Stripe failure that the same request would meet again
// (a validation error, a bad key, an unknown customer): retrying it is pointless.
func Permanent(err error) bool {
	var e *Error
	return errors.As(err, &e) && !e.Retryable
}
