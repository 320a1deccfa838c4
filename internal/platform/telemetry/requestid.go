package telemetry

import (
	"crypto/rand"
	"encoding/hex"
)

// RequestIDHeader carries the request id between processes and back to the caller (gRPC
// metadata key; X-Request-Id over HTTP).
const RequestIDHeader = "x-request-id"

// MaxRequestIDLen bounds a request id a caller may choose.
const MaxRequestIDLen = 64

// ValidRequestID is the one rule for a request id a caller chooses, at the gateway, in every
// service and in the CLI: 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-', so it is safe
// in logs, headers and audit records as it is.
func ValidRequestID(id string) bool {
	if id == "" || len(id) > MaxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// NewRequestID returns a random request id.
func NewRequestID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// RequestIDOrNew returns id when it is a valid request id, else a new one.
func RequestIDOrNew(id string) string {
	if ValidRequestID(id) {
		return id
	}
	return NewRequestID()
}
