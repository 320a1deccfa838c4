// Package apperr defines the small set of domain error codes every service returns, and the one
// place that turns them into gRPC statuses with google.rpc details. Unknown errors become
// INTERNAL with a generic message: callers never see SQL, driver text or stacks.
package apperr

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Domain is the ErrorInfo domain of every CampaignMesh error.
const Domain = "campaignmesh.local"

// Code classifies a domain error. Each maps to exactly one gRPC code.
type Code int

// The domain error codes.
const (
	Invalid            Code = iota + 1 // bad input: INVALID_ARGUMENT
	NotFound                           // missing, or another tenant's: NOT_FOUND
	AlreadyExists                      // unique key taken: ALREADY_EXISTS
	FailedPrecondition                 // wrong state for the operation: FAILED_PRECONDITION
	Conflict                           // concurrent change (stale etag): ABORTED
	PermissionDenied                   // authenticated but not allowed: PERMISSION_DENIED
	Unauthenticated                    // no or bad credential: UNAUTHENTICATED
	ResourceExhausted                  // limit reached: RESOURCE_EXHAUSTED
	Unavailable                        // dependency down, retry later: UNAVAILABLE
)

var grpcCodes = map[Code]codes.Code{
	Invalid:            codes.InvalidArgument,
	NotFound:           codes.NotFound,
	AlreadyExists:      codes.AlreadyExists,
	FailedPrecondition: codes.FailedPrecondition,
	Conflict:           codes.Aborted,
	PermissionDenied:   codes.PermissionDenied,
	Unauthenticated:    codes.Unauthenticated,
	ResourceExhausted:  codes.ResourceExhausted,
	Unavailable:        codes.Unavailable,
}

// FieldViolation names one invalid request field.
type FieldViolation struct {
	Field       string
	Description string
}

// Error is a domain error: safe to show to the caller as it is.
type Error struct {
	Code Code
	// Reason is a stable UPPER_SNAKE_CASE id for clients (google.rpc.ErrorInfo.reason).
	Reason string
	// Message is shown to the caller; it must not contain internals.
	Message    string
	Violations []FieldViolation
	// RetryAfter, when set, is sent as google.rpc.RetryInfo.
	RetryAfter time.Duration
}

func (e *Error) Error() string { return e.Message }

// New returns a domain error.
func New(code Code, reason, format string, args ...any) *Error {
	return &Error{Code: code, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// HasCode reports whether err is (or wraps) a domain error with code.
func HasCode(err error, code Code) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// First returns the first non-nil error (validations run in order, the first failure answers).
func First(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// NotFoundf returns a NOT_FOUND error for a kind of resource, e.g. NotFoundf("user %s", id).
func NotFoundf(format string, args ...any) *Error {
	return New(NotFound, "NOT_FOUND", format+" not found", args...)
}

// Violations collects field violations; Err returns nil when there are none.
type Violations []FieldViolation

// Add records a violation of field.
func (v *Violations) Add(field, format string, args ...any) {
	*v = append(*v, FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
}

// Err returns an Invalid error listing every violation, or nil.
func (v Violations) Err() error {
	if len(v) == 0 {
		return nil
	}
	msg := fmt.Sprintf("invalid %s: %s", v[0].Field, v[0].Description)
	if len(v) > 1 {
		msg += fmt.Sprintf(" (and %d more)", len(v)-1)
	}
	return &Error{Code: Invalid, Reason: "INVALID_ARGUMENT", Message: msg, Violations: v}
}

// ToStatus converts any error into the status a caller may see. internal reports whether the
// error was unexpected, in which case the caller only sees a generic message and the error
// must be logged.
func ToStatus(err error) (st *status.Status, internal bool) {
	if err == nil {
		return status.New(codes.OK, ""), false
	}
	var de *Error
	if errors.As(err, &de) {
		return de.status(), false
	}
	if s, ok := status.FromError(err); ok {
		// Already a status (from gRPC itself or a downstream service): passed on, except an
		// INTERNAL, UNKNOWN or DATA_LOSS that is not our own generic answer — its text came from
		// a transport or another process and is not for callers.
		if masked(s) {
			return status.New(codes.Internal, "internal error"), true
		}
		return s, false
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, "request canceled"), false
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, "deadline exceeded"), false
	}
	return status.New(codes.Internal, "internal error"), true
}

func (e *Error) status() *status.Status {
	code, ok := grpcCodes[e.Code]
	if !ok {
		code = codes.Internal
	}
	st := status.New(code, e.Message)
	var details []protoadapt.MessageV1
	if e.Reason != "" {
		details = append(details, &errdetails.ErrorInfo{Reason: e.Reason, Domain: Domain})
	}
	if len(e.Violations) > 0 {
		br := &errdetails.BadRequest{}
		for _, v := range e.Violations {
			br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: v.Field, Description: v.Description})
		}
		details = append(details, br)
	}
	if e.RetryAfter > 0 {
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(e.RetryAfter)})
	}
	if len(details) == 0 {
		return st
	}
	if withDetails, err := st.WithDetails(details...); err == nil {
		return withDetails
	}
	return st
}

// masked reports a status whose text must not reach a caller.
func masked(s *status.Status) bool {
	switch s.Code() {
	case codes.Internal, codes.Unknown, codes.DataLoss:
		return s.Message() != "internal error" || len(s.Proto().GetDetails()) > 0
	}
	return false
}
