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

func TestHotMethodsLogOnlyTheirFailuresAtInfo(t *testing.T) {
	level := quietCalls(map[string]bool{"/campaignmesh.ingest.v1.IngestService/IngestEvents": true})
	call := func(method, code string) []any {
		return []any{"grpc.service", "campaignmesh.ingest.v1.IngestService", "grpc.method", method, "grpc.code", code}
	}
	for _, tc := range []struct {
		method, code string
		in, want     logging.Level
	}{
		{"IngestEvents", "OK", logging.LevelInfo, logging.LevelDebug},
		{"IngestEvents", "Unauthenticated", logging.LevelInfo, logging.LevelInfo},
		{"IngestEvents", "PermissionDenied", logging.LevelWarn, logging.LevelWarn},
		{"IngestEvents", "Internal", logging.LevelError, logging.LevelError},
		{"StreamEvents", "OK", logging.LevelInfo, logging.LevelInfo},
	} {
		if got := level(tc.in, call(tc.method, tc.code)); got != tc.want {
			t.Errorf("%s %s: level %v, want %v", tc.method, tc.code, got, tc.want)
		}
	}
}
