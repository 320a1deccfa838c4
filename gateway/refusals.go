package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"

	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
)

// What the edge refuses is audited. The gateway authenticates nobody (the services do), so its
// refusals are of client addresses: over the per-IP rate limit (REST 429, gRPC
// RESOURCE_EXHAUSTED) and oversized requests (REST 413, gRPC RESOURCE_EXHAUSTED). They are
// anonymous records of the methods below in the platform's chain (no tenant: none is known at
// the edge), stored through the gateway's durable sink (Config.Auditor) and delivered to auth.
//
// A refusal is what a flood produces, so one record per refused request would turn a flood of
// requests into a flood of records — into the audit stream, auth and its chain. Refusals are
// therefore counted per client address and method over one rate window (Config.RateWindow,
// starting at the first refusal), and the window becomes ONE record when it ends: its time,
// request id and trace id are those of the first refusal, its resource says how many requests
// were refused ("37 refused"). Records are written from a background loop, never on the request
// path, so a refusal costs a map update. At most maxRefusalAddresses addresses are counted one
// by one at a time; refusals of further addresses share one record without an address. So a
// flood from any number of addresses yields at most 2 × (maxRefusalAddresses + 1) records per
// window. The price: counts still open when the process dies (at most one window) are lost; a
// graceful stop records them (Gateway.Stop).
const (
	// MethodRateLimited is the audited method of requests refused by the per-IP rate limit.
	MethodRateLimited = "gateway.RateLimited"
	// MethodRequestTooLarge is the audited method of requests refused for their size.
	MethodRequestTooLarge = "gateway.RequestTooLarge"
)

// maxRefusalAddresses bounds the client addresses counted one by one at a time.
const maxRefusalAddresses = 100

type refusalKey struct{ method, ip string }

// refusalWindow counts the refusals of one address and method.
type refusalWindow struct {
	first              time.Time
	requestID, traceID string
	n                  int
}

// refusals coalesces refusals into audit records (see above). A nil *refusals records nothing.
type refusals struct {
	sink   audit.Sink
	window time.Duration
	logger *slog.Logger

	mu   sync.Mutex
	open map[refusalKey]*refusalWindow
}

func newRefusals(sink audit.Sink, window time.Duration, logger *slog.Logger) *refusals {
	if sink == nil {
		return nil
	}
	return &refusals{sink: sink, window: window, logger: logger, open: map[refusalKey]*refusalWindow{}}
}

// note counts a refusal of method for the client at ip.
func (r *refusals) note(ctx context.Context, method, ip string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	k := refusalKey{method, ip}
	w := r.open[k]
	if w == nil && len(r.open) >= maxRefusalAddresses {
		k.ip = "" // addresses past the bound share one count
		w = r.open[k]
	}
	if w == nil {
		w = &refusalWindow{first: time.Now().UTC(), requestID: telemetry.RequestID(ctx)}
		if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
			w.traceID = sc.TraceID().String()
		}
		r.open[k] = w
	}
	w.n++
}

// run records ended windows until ctx ends.
func (r *refusals) run(ctx context.Context) {
	tick := time.NewTicker(min(r.window/2, time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			r.flush(ctx, false)
		}
	}
}

// flush records the windows that have ended, or all of them when final.
func (r *refusals) flush(ctx context.Context, final bool) {
	if r == nil {
		return
	}
	now := time.Now()
	var due []audit.Record
	r.mu.Lock()
	for k, w := range r.open {
		if !final && now.Sub(w.first) < r.window {
			continue
		}
		delete(r.open, k)
		resource := fmt.Sprintf("%d refused", w.n)
		if k.ip == "" {
			resource = fmt.Sprintf("%d refused from addresses past the first %d", w.n, maxRefusalAddresses)
		}
		due = append(due, audit.Record{
			ID: audit.NewID(), Time: w.first, Method: k.method, ActorKind: "anonymous", Resource: resource,
			Outcome: codes.ResourceExhausted, RequestID: w.requestID, TraceID: w.traceID, ClientAddress: k.ip, Service: "gateway",
		})
	}
	r.mu.Unlock()
	ctx = context.WithoutCancel(ctx) // a stop still records what it counted
	for _, rec := range due {
		if err := r.sink.Record(ctx, rec); err != nil {
			r.logger.ErrorContext(ctx, "store audit record", "err", err, "id", rec.ID, "method", rec.Method,
				"client_address", rec.ClientAddress, "resource", rec.Resource, "request_id", rec.RequestID)
		}
	}
}
