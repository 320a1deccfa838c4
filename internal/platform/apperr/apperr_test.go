package apperr_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

var maskedText = regexp.MustCompile(`^internal error \(ref ([0-9a-f]{16})\)$`)

// Every internal error, whatever its origin, becomes the generic answer with a fresh
// correlation id, in the message and in an ErrorInfo, and ToStatus returns that id for the log.
func TestToStatusMasksEveryInternalError(t *testing.T) {
	ours, _ := apperr.Masked()
	seen := map[string]bool{}
	for name, err := range map[string]error{
		"domain error with code Internal": apperr.New(apperr.Internal, "BROKEN", "ledger row %d has no campaign", 7),
		"domain error with no code":       &apperr.Error{Message: "zero code: SELECT 1"},
		"wrapped domain Internal":         fmt.Errorf("settle: %w", apperr.New(apperr.Internal, "", "pq: deadlock")),
		"plain error":                     errors.New("boom: SELECT * FROM users"),
		"foreign internal status":         status.Error(codes.Internal, "grpc: error while marshaling: proto: x"),
		"foreign unknown status":          status.Error(codes.Unknown, "pq: relation \"x\" does not exist"),
		"foreign data loss":               status.Error(codes.DataLoss, "disk"),
		"wrapped downstream unknown":      fmt.Errorf("call analytics: %w", status.Error(codes.Unknown, "pq: relation")),
		"wrapped downstream internal":     fmt.Errorf("call auth: %w", status.Error(codes.Internal, "transport: x")),
		"downstream's own masked answer":  ours.Err(),
		"the bare generic answer":         status.Error(codes.Internal, "internal error"),
	} {
		st, ref := apperr.ToStatus(err)
		m := maskedText.FindStringSubmatch(st.Message())
		if st.Code() != codes.Internal || m == nil || m[1] != ref {
			t.Errorf("%s: %v %q ref %q; want INTERNAL \"internal error (ref <ref>)\"", name, st.Code(), st.Message(), ref)
			continue
		}
		if got := apperr.Ref(st); got != ref {
			t.Errorf("%s: ErrorInfo ref %q; want %q", name, got, ref)
		}
		if ref == apperr.Ref(ours) || seen[ref] {
			t.Errorf("%s: ref %s was used before", name, ref)
		}
		seen[ref] = true
	}
}

// Everything else passes through unchanged, with no ref: domain errors with their details,
// statuses from elsewhere (a wrapped one without our wrapping text), and context ends.
func TestToStatusPassesOtherErrorsThrough(t *testing.T) {
	var v apperr.Violations
	v.Add("name", "is required")
	retry := &apperr.Error{Code: apperr.Unavailable, Reason: "STORE_UNAVAILABLE", Message: "try later", RetryAfter: 2 * time.Second}
	downstream := status.New(codes.Unavailable, "auth is down")
	downstream, _ = downstream.WithDetails(&errdetails.RetryInfo{})
	for name, tc := range map[string]struct {
		err  error
		code codes.Code
		msg  string
	}{
		"invalid":                   {v.Err(), codes.InvalidArgument, "invalid name: is required"},
		"not found":                 {apperr.NotFoundf("campaign %s", "c1"), codes.NotFound, "campaign c1 not found"},
		"already exists":            {apperr.New(apperr.AlreadyExists, "X", "taken"), codes.AlreadyExists, "taken"},
		"failed precondition":       {apperr.New(apperr.FailedPrecondition, "X", "archived"), codes.FailedPrecondition, "archived"},
		"conflict":                  {apperr.New(apperr.Conflict, "X", "stale etag"), codes.Aborted, "stale etag"},
		"permission denied":         {apperr.New(apperr.PermissionDenied, "X", "no"), codes.PermissionDenied, "no"},
		"unauthenticated":           {apperr.New(apperr.Unauthenticated, "X", "who"), codes.Unauthenticated, "who"},
		"resource exhausted":        {apperr.New(apperr.ResourceExhausted, "X", "slow down"), codes.ResourceExhausted, "slow down"},
		"unavailable with retry":    {fmt.Errorf("open: %w", retry), codes.Unavailable, "try later"},
		"downstream unavailable":    {downstream.Err(), codes.Unavailable, "auth is down"},
		"wrapped downstream status": {fmt.Errorf("get key k1 from auth: %w", status.Error(codes.NotFound, "key not found")), codes.NotFound, "key not found"},
		"canceled":                  {fmt.Errorf("query: %w", context.Canceled), codes.Canceled, "request canceled"},
		"deadline":                  {fmt.Errorf("query: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "deadline exceeded"},
	} {
		st, ref := apperr.ToStatus(tc.err)
		if st.Code() != tc.code || st.Message() != tc.msg || ref != "" {
			t.Errorf("%s: %v %q ref %q; want %v %q and no ref", name, st.Code(), st.Message(), ref, tc.code, tc.msg)
		}
	}
	st, _ := apperr.ToStatus(retry)
	if len(st.Details()) != 2 {
		t.Fatalf("details of a retryable error: %v", st.Details())
	}
	if ri, ok := st.Details()[1].(*errdetails.RetryInfo); !ok || ri.GetRetryDelay().AsDuration() != 2*time.Second {
		t.Errorf("retry info: %v", st.Details())
	}
	if st, _ := apperr.ToStatus(downstream.Err()); !proto.Equal(st.Proto(), downstream.Proto()) {
		t.Errorf("downstream status changed: %v", st.Proto())
	}
	if st, ref := apperr.ToStatus(nil); st.Code() != codes.OK || ref != "" {
		t.Errorf("nil: %v %q", st.Code(), ref)
	}
}
