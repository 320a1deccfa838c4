package meshtest

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// RequireStoreUnavailable checks the status of a call made while the service's store cannot be
// reached: UNAVAILABLE, reason STORE_UNAVAILABLE, a retry delay of 1–5 s, and a message that
// shows nothing of the driver or the network.
func RequireStoreUnavailable(tb testing.TB, what string, st *status.Status) {
	tb.Helper()
	var retry time.Duration
	var reason string
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.RetryInfo:
			retry = d.GetRetryDelay().AsDuration()
		case *errdetails.ErrorInfo:
			reason = d.GetReason()
		}
	}
	if st.Code() != codes.Unavailable || reason != "STORE_UNAVAILABLE" || retry < time.Second || retry > 5*time.Second {
		tb.Errorf("%s: %v %q reason %q retry %s; want UNAVAILABLE, STORE_UNAVAILABLE, retry 1–5 s", what, st.Code(), st.Message(), reason, retry)
	}
	for _, leak := range []string{"127.0.0.1", "dial", "EOF", "timeout", "clickhouse:", "pgx", "postgres", "SQLSTATE"} {
		if strings.Contains(st.Message(), leak) {
			tb.Errorf("%s: message %q shows %q", what, st.Message(), leak)
		}
	}
}

// LogBuffer is a buffer a test's logger writes to from any goroutine.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is what was written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
