// Package grpcapi serves event intake over gRPC (and REST through the gateway). A call returns
// only after JetStream has stored the accepted events.
package grpcapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/services/ingest"
)

// RateLimits bound events per second (bursts of one second's worth twice over).
type RateLimits struct {
	PerTenant float64
	PerSource float64
}

// DefaultRateLimits are the documented defaults.
var DefaultRateLimits = RateLimits{PerTenant: 200000, PerSource: 100000}

// HotMethods are the RPCs on the events' hot path: the server logs their successful calls at
// debug (grpcserver.WithQuietCalls); failures and denials keep their level.
var HotMethods = []string{ingestv1.IngestService_IngestEvents_FullMethodName, ingestv1.IngestService_StreamEvents_FullMethodName}

// Server implements ingestv1.IngestServiceServer.
type Server struct {
	ingestv1.UnimplementedIngestServiceServer
	js     jetstream.JetStream
	limits ingest.Limits
	rates  RateLimits
	now    func() time.Time

	mu       sync.Mutex
	limiters map[string]*rate.Limiter

	accepted, published prometheus.Counter
	rejected            *prometheus.CounterVec
	publishTime         prometheus.Histogram
}

var _ ingestv1.IngestServiceServer = (*Server)(nil)

// NewServer returns the ingest server publishing to js; its metrics are registered with reg
// (which may be nil).
func NewServer(js jetstream.JetStream, limits ingest.Limits, rates RateLimits, reg prometheus.Registerer) *Server {
	s := &Server{js: js, limits: limits, rates: rates, now: time.Now, limiters: map[string]*rate.Limiter{},
		accepted:    prometheus.NewCounter(prometheus.CounterOpts{Name: "ingest_events_accepted_total", Help: "Events stored in the stream."}),
		published:   prometheus.NewCounter(prometheus.CounterOpts{Name: "ingest_batches_published_total", Help: "Batches stored in the stream."}),
		rejected:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ingest_events_rejected_total", Help: "Events rejected, by field at fault."}, []string{"field"}),
		publishTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ingest_publish_seconds", Help: "Time for JetStream to store a batch.", Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14)}),
	}
	if reg != nil {
		reg.MustRegister(s.accepted, s.published, s.rejected, s.publishTime)
	}
	return s
}

// IngestEvents implements ingestv1.IngestServiceServer.
func (s *Server) IngestEvents(ctx context.Context, req *ingestv1.IngestEventsRequest) (*ingestv1.IngestEventsResponse, error) {
	resp, err := s.ingest(ctx, req.GetEvents(), proto.Size(req))
	if err != nil {
		return nil, err
	}
	resp.Batch = req.GetBatch()
	return resp, nil
}

// StreamEvents implements ingestv1.IngestServiceServer: each batch is acknowledged in order once
// stored; a batch that fails ends the stream with its error (earlier acks stand).
func (s *Server) StreamEvents(stream ingestv1.IngestService_StreamEventsServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp, err := s.ingest(stream.Context(), req.GetEvents(), proto.Size(req))
		if err != nil {
			return err
		}
		resp.Batch = req.GetBatch()
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

func (s *Server) ingest(ctx context.Context, events []*ingestv1.Event, size int) (*ingestv1.IngestEventsResponse, error) {
	p := authn.FromContext(ctx)
	received := s.now().UTC()
	res, err := s.limits.Prepare(events, p.TenantID, p.Subject, received, size)
	if err != nil {
		var v apperr.Violations
		v.Add("events", "%v", err)
		return nil, v.Err()
	}
	resp := &ingestv1.IngestEventsResponse{Accepted: int32(len(res.Accepted)), Rejected: res.Rejected, Warnings: res.Warnings}
	for _, r := range res.Rejected {
		field := r.GetField()
		if i := strings.IndexByte(field, ']'); i >= 0 {
			field = strings.TrimPrefix(field[i+1:], ".")
		}
		s.rejected.WithLabelValues(field).Inc()
	}
	if len(res.Accepted) == 0 {
		return resp, nil
	}
	if err := s.allow(p, len(res.Accepted)); err != nil {
		return nil, err
	}
	data, err := proto.Marshal(&ingestv1.AcceptedBatch{Events: res.Accepted})
	if err != nil {
		return nil, err
	}
	hdr := nats.Header{}
	otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(http.Header(hdr)))
	start := time.Now()
	if _, err := natsjs.Publish(ctx, s.js, p.TenantID, batchID(p.TenantID, res.Accepted), data, hdr); err != nil {
		return nil, publishError(err)
	}
	s.publishTime.Observe(time.Since(start).Seconds())
	s.published.Inc()
	s.accepted.Add(float64(len(res.Accepted)))
	return resp, nil
}

// batchID identifies a batch by its tenant and event ids, so the same batch sent again is a
// duplicate JetStream drops.
func batchID(tenant string, events []*ingestv1.AcceptedEvent) string {
	h := sha256.New()
	h.Write([]byte(tenant))
	for _, e := range events {
		h.Write([]byte{0})
		h.Write([]byte(e.GetEvent().GetEventId()))
	}
	return hex.EncodeToString(h.Sum(nil))
}

func publishError(err error) error {
	switch {
	case errors.Is(err, natsjs.ErrStreamFull):
		e := apperr.New(apperr.ResourceExhausted, "STREAM_FULL", "event stream is full; retry later")
		e.RetryAfter = 5 * time.Second
		return e
	case errors.Is(err, natsjs.ErrUnavailable):
		e := apperr.New(apperr.Unavailable, "STREAM_UNAVAILABLE", "event stream is unavailable; retry")
		e.RetryAfter = time.Second
		return e
	}
	return err
}

// allow applies the per-tenant and per-source (API key or user) rate limits to n events.
func (s *Server) allow(p *authn.Principal, n int) error {
	for _, k := range []struct {
		key   string
		limit float64
	}{{"tenant:" + p.TenantID, s.rates.PerTenant}, {"source:" + p.Subject, s.rates.PerSource}} {
		lim := s.limiter(k.key, k.limit)
		now := s.now()
		r := lim.ReserveN(now, n)
		if !r.OK() {
			return rateError(time.Second)
		}
		if d := r.DelayFrom(now); d > 0 {
			r.CancelAt(now)
			return rateError(d)
		}
	}
	return nil
}

func rateError(d time.Duration) error {
	e := apperr.New(apperr.ResourceExhausted, "RATE_LIMITED", "event rate limit exceeded; retry later")
	e.RetryAfter = d
	return e
}

func (s *Server) limiter(key string, perSecond float64) *rate.Limiter {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.limiters[key]
	if !ok {
		if len(s.limiters) > 100000 {
			s.limiters = map[string]*rate.Limiter{} // bounded: start over rather than grow
		}
		l = rate.NewLimiter(rate.Limit(perSecond), int(2*perSecond))
		s.limiters[key] = l
	}
	return l
}
