package apperr_test

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// Statuses from elsewhere pass through, except INTERNAL, UNKNOWN and DATA_LOSS whose text came
// from a transport or another process: those become the generic answer and count as internal.
func TestToStatusMasksForeignInternalErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		err          error
		code         codes.Code
		msg          string
		wantInternal bool
	}{
		"domain error":           {apperr.New(apperr.NotFound, "X", "campaign not found"), codes.NotFound, "campaign not found", false},
		"downstream unavailable": {status.Error(codes.Unavailable, "auth is down"), codes.Unavailable, "auth is down", false},
		"downstream internal":    {status.Error(codes.Internal, "grpc: error while marshaling: proto: x"), codes.Internal, "internal error", true},
		"wrapped unknown":        {fmt.Errorf("call: %w", status.Error(codes.Unknown, "pq: relation")), codes.Internal, "internal error", true},
		"data loss":              {status.Error(codes.DataLoss, "disk"), codes.Internal, "internal error", true},
		"our generic answer":     {status.Error(codes.Internal, "internal error"), codes.Internal, "internal error", false},
		"plain error":            {errors.New("boom: SELECT"), codes.Internal, "internal error", true},
	} {
		st, internal := apperr.ToStatus(tc.err)
		if st.Code() != tc.code || st.Message() != tc.msg || internal != tc.wantInternal {
			t.Errorf("%s: %v %q internal=%v; want %v %q internal=%v", name, st.Code(), st.Message(), internal, tc.code, tc.msg, tc.wantInternal)
		}
	}
}
