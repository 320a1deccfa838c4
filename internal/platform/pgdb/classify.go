package pgdb

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// RetryAfter is how long a caller is asked to wait when the database cannot be reached.
const RetryAfter = 2 * time.Second

// ConnectTimeout bounds one connection attempt when the URL does not set connect_timeout: a
// server that does not answer (a dead host, a full backlog) makes the pool's acquire fail as
// UNAVAILABLE instead of holding the call until its deadline.
const ConnectTimeout = 5 * time.Second

// ErrUnavailable is the answer for a call that needed the database while it could not be
// reached: UNAVAILABLE, reason STORE_UNAVAILABLE, with retry info.
var ErrUnavailable = &apperr.Error{
	Code:       apperr.Unavailable,
	Reason:     "STORE_UNAVAILABLE",
	Message:    "the service's database is unavailable; retry later",
	RetryAfter: RetryAfter,
}

// Unavailable reports whether err says the database could not be reached or went away, rather
// than refused a statement: the connection was refused, timed out or broke, or the server is
// shutting down, starting up or out of connection slots (SQLSTATE class 08, 57P01-57P03, 53300).
// A call that ended with its own context is not: that is the caller's deadline or cancel.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// The server answered: only these codes mean it cannot serve now (a wrong password or
		// a missing database, even at connect time, is a fault to fix, not to retry).
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03", pgErr.Code == "53300":
			return true
		}
		return false
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true // refused, unreachable, or no answer within the connect timeout
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var opErr *net.OpError
	return errors.Is(err, pgconn.ErrConnClosed) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.As(err, &opErr)
}

// Classify returns ErrUnavailable, still wrapping err for the log, when Unavailable(err), and
// err unchanged otherwise (also when it already carries a domain error). Stores and platform
// packages call it on their errors, and services install it in their gRPC chain
// (grpcserver.WithErrorClassifier) so every path to the database answers alike.
func Classify(err error) error {
	var de *apperr.Error
	if errors.As(err, &de) || !Unavailable(err) {
		return err
	}
	return &unavailableError{cause: err}
}

// unavailableError is ErrUnavailable to errors.As (so apperr answers with it) and keeps the
// driver's error in its text and chain for the log line.
type unavailableError struct{ cause error }

func (e *unavailableError) Error() string   { return "database unavailable: " + e.cause.Error() }
func (e *unavailableError) Unwrap() []error { return []error{ErrUnavailable, e.cause} }
