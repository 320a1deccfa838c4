// Package apperr defines the small set of domain error codes every service returns, and the one
// place that turns them into gRPC statuses with google.rpc details. Every internal error — an
// unexpected error, a domain error with code Internal, an INTERNAL, UNKNOWN or DATA_LOSS status
// from gRPC or another service — becomes INTERNAL "internal error (ref <id>)": callers never see
// SQL, driver text or stacks, and the id leads an operator to the one log line with the detail.
package apperr

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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
	Internal                           // a broken invariant: INTERNAL, masked like any unexpected error
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
	// Metadata, when set, is sent as the ErrorInfo's metadata (with Reason): facts a client
	// acts on without parsing Message, e.g. which quota was exceeded and when it resets.
	Metadata map[string]string
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

// ToStatus converts any error into the status a caller may see. Domain errors and statuses from
// elsewhere pass through as they are (a wrapped status without its wrapping text, which is ours),
// except every internal error whatever its origin: a domain error with code Internal, a plain
// error, an INTERNAL, UNKNOWN or DATA_LOSS status made by gRPC or returned by another service
// (even our own masked answer: it gets a new ref, and the old one is in the logged detail).
// Those become INTERNAL "internal error (ref <id>)" with an ErrorInfo (reason INTERNAL, metadata
// "ref"), and ref is that id: the caller of ToStatus must log err in full with it, in one line.
// ref is "" when nothing was masked.
func ToStatus(err error) (st *status.Status, ref string) {
	if err == nil {
		return status.New(codes.OK, ""), ""
	}
	var de *Error
	if errors.As(err, &de) {
		if _, ok := grpcCodes[de.Code]; !ok {
			return Masked()
		}
		return de.status(), ""
	}
	var gs interface{ GRPCStatus() *status.Status }
	if errors.As(err, &gs) && gs.GRPCStatus() != nil {
		s := gs.GRPCStatus()
		switch s.Code() {
		case codes.Internal, codes.Unknown, codes.DataLoss:
			return Masked()
		}
		return s, ""
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, "request canceled"), ""
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, "deadline exceeded"), ""
	}
	return Masked()
}

// Masked returns the generic INTERNAL answer with a new correlation id, and the id. The caller
// logs the detail with the id; ToStatus is the usual way in.
func Masked() (*status.Status, string) {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	ref := hex.EncodeToString(b)
	st := status.New(codes.Internal, "internal error (ref "+ref+")")
	if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Reason: "INTERNAL", Domain: Domain, Metadata: map[string]string{"ref": ref}}); err == nil {
		return withInfo, ref
	}
	return st, ref
}

// Ref returns the correlation id of a masked answer (see ToStatus), or "".
func Ref(st *status.Status) string {
	if st.Code() != codes.Internal {
		return ""
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetDomain() == Domain && ei.GetReason() == "INTERNAL" {
			return ei.GetMetadata()["ref"]
		}
	}
	return ""
}

func (e *Error) status() *status.Status {
	st := status.New(grpcCodes[e.Code], e.Message)
	var details []protoadapt.MessageV1
	if e.Reason != "" {
		details = append(details, &errdetails.ErrorInfo{Reason: e.Reason, Domain: Domain, Metadata: e.Metadata})
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
