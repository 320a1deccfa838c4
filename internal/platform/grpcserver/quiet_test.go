package grpcserver

import (
	"testing"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"

	_ "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

func TestSuccessfulInternalCallsLogAtDebug(t *testing.T) {
	call := func(method, code string) []any {
		return []any{"grpc.service", "campaignmesh.auth.v1.AuthService", "grpc.method", method, "grpc.code", code}
	}
	for _, tc := range []struct {
		method, code string
		want         logging.Level
	}{
		{"ListRevocations", "OK", logging.LevelDebug},
		{"VerifyApiKey", "OK", logging.LevelDebug},
		{"ListRevocations", "PermissionDenied", logging.LevelInfo},
		{"Login", "OK", logging.LevelInfo},
	} {
		if got := quietInternal(logging.LevelInfo, call(tc.method, tc.code)); got != tc.want {
			t.Errorf("%s %s: level %v, want %v", tc.method, tc.code, got, tc.want)
		}
	}
}
