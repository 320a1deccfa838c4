package standin

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestFaultsQueue(t *testing.T) {
	t.Parallel()
	var q Faults
	q.Inject(FaultRateLimit, 2)
	q.Inject(FaultHang, 1)
	for _, want := range []Fault{FaultRateLimit, FaultRateLimit, FaultHang, ""} {
		if got := q.Next(); got != want {
			t.Fatalf("Next = %q, want %q", got, want)
		}
	}
	for _, tc := range []struct {
		method, body string
		status       int
		pending      int
	}{
		{http.MethodPost, `{"fault":"500-after-send","count":2}`, http.StatusOK, 2},
		{http.MethodPost, `{"fault":"teapot","count":1}`, http.StatusBadRequest, 2},
		{http.MethodPost, `{"fault":"429","count":0}`, http.StatusBadRequest, 2},
		{http.MethodGet, ``, http.StatusMethodNotAllowed, 2},
		{http.MethodDelete, ``, http.StatusNoContent, 0},
	} {
		rec := httptest.NewRecorder()
		q.ServeFaults(rec, httptest.NewRequest(tc.method, "/faults", strings.NewReader(tc.body)))
		if rec.Code != tc.status || q.Pending() != tc.pending {
			t.Fatalf("%s %s: status %d pending %d, want %d and %d", tc.method, tc.body, rec.Code, q.Pending(), tc.status, tc.pending)
		}
	}
}

func TestLimiter(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	l := NewLimiter(2)
	for i := range 2 {
		if ok, _ := l.Allow(now); !ok {
			t.Fatalf("request %d refused within the burst", i)
		}
	}
	ok, next := l.Allow(now)
	if ok || next.Sub(now) <= 0 || next.Sub(now) > time.Second {
		t.Fatalf("third request: ok %v next in %s", ok, next.Sub(now))
	}
	if ok, _ := l.Allow(now.Add(time.Second)); !ok {
		t.Fatal("refused after a second")
	}
	var none *Limiter
	if ok, _ := none.Allow(now); !ok || none.PerSecond() != 0 {
		t.Fatal("a nil limiter limits")
	}
}
