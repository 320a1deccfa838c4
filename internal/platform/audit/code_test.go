package audit

import (
	"testing"

	"google.golang.org/grpc/codes"
)

func TestCodeNames(t *testing.T) {
	for c, want := range map[codes.Code]string{
		codes.OK: "OK", codes.PermissionDenied: "PERMISSION_DENIED", codes.InvalidArgument: "INVALID_ARGUMENT",
		codes.Unauthenticated: "UNAUTHENTICATED", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
	} {
		if got := CodeName(c); got != want {
			t.Errorf("CodeName(%v) = %q, want %q", c, got, want)
		}
		if back := CodeFromName(want); back != c {
			t.Errorf("CodeFromName(%q) = %v, want %v", want, back, c)
		}
	}
}
