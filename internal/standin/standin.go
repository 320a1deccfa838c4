// Package standin holds what the provider stand-ins share: failure injection and a request
// rate limit. The stand-ins themselves (packages sendgrid and twilio below) are HTTP servers
// that implement the part of each provider's documented contract our clients use, with an
// outbox a test (or a person) can read, so the delivery service is tested against real HTTP
// and real signatures while no provider can be reached.
package standin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Fault is a failure a stand-in plays on its next send requests.
type Fault string

const (
	// FaultRateLimit answers 429 in the provider's shape; the message is not sent.
	FaultRateLimit Fault = "429"
	// FaultServerError answers 500 without sending the message.
	FaultServerError Fault = "500"
	// FaultServerErrorAfterSend sends the message, then answers 500: the case where a blind
	// retry sends twice.
	FaultServerErrorAfterSend Fault = "500-after-send"
	// FaultHang sends the message, then never answers until the client gives up: a send
	// that happened although the client saw a timeout.
	FaultHang Fault = "hang"
)

// Valid reports whether f is a known fault.
func (f Fault) Valid() bool {
	switch f {
	case FaultRateLimit, FaultServerError, FaultServerErrorAfterSend, FaultHang:
		return true
	}
	return false
}

// Faults is a queue of injected faults, consumed one per send request. It is safe for
// concurrent use.
type Faults struct {
	mu    sync.Mutex
	queue []Fault
}

// Inject queues n requests that fail with f.
func (q *Faults) Inject(f Fault, n int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for range n {
		q.queue = append(q.queue, f)
	}
}

// Next takes the fault for this request, "" when none is queued.
func (q *Faults) Next() Fault {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.queue) == 0 {
		return ""
	}
	f := q.queue[0]
	q.queue = q.queue[1:]
	return f
}

// Pending returns how many injected faults are left.
func (q *Faults) Pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queue)
}

// Clear drops every queued fault.
func (q *Faults) Clear() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.queue = nil
}

// ServeFaults handles POST /faults {"fault":"429","count":3} (queue) and DELETE /faults
// (clear), so a test in another process or a person with curl can inject failures.
func (q *Faults) ServeFaults(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodDelete:
		q.Clear()
		w.WriteHeader(http.StatusNoContent)
	case http.MethodPost:
		var in struct {
			Fault Fault `json:"fault"`
			Count int   `json:"count"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&in); err != nil || !in.Fault.Valid() || in.Count < 1 || in.Count > 1_000_000 {
			http.Error(w, `want {"fault":"429"|"500"|"500-after-send"|"hang","count":1..1000000}`, http.StatusBadRequest)
			return
		}
		q.Inject(in.Fault, in.Count)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, "{\"pending\":%d}\n", q.Pending())
	default:
		w.Header().Set("Allow", "POST, DELETE")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// Limiter is a stand-in's request rate limit: a token bucket of perSecond requests a second
// with a burst of the same size. A nil *Limiter allows everything.
type Limiter struct {
	lim       *rate.Limiter
	perSecond int
}

// NewLimiter returns a limiter of perSecond requests a second, nil (no limit) when
// perSecond <= 0.
func NewLimiter(perSecond int) *Limiter {
	if perSecond <= 0 {
		return nil
	}
	return &Limiter{lim: rate.NewLimiter(rate.Limit(perSecond), perSecond), perSecond: perSecond}
}

// Allow takes a token at now. When none is left it reports false with the time the next
// token is due.
func (l *Limiter) Allow(now time.Time) (ok bool, next time.Time) {
	if l == nil {
		return true, time.Time{}
	}
	r := l.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, now.Add(d)
	}
	return true, time.Time{}
}

// PerSecond returns the limit (0 when unlimited).
func (l *Limiter) PerSecond() int {
	if l == nil {
		return 0
	}
	return l.perSecond
}

// Remaining returns the whole tokens left at now.
func (l *Limiter) Remaining(now time.Time) int {
	if l == nil {
		return 0
	}
	return max(0, int(l.lim.TokensAt(now)))
}
