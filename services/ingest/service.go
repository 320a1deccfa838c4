package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/quota"
	"github.com/campaignmesh/campaignmesh/internal/platform/ratelimit"
)

// Publisher stores accepted batches in the event stream: the domain's port, implemented on
// JetStream by services/ingest/natsjs.
type Publisher interface {
	// Publish stores batch for tenant and returns only once the stream has stored it. A batch
	// published again with the same batchID is a duplicate the stream drops when its events go
	// out in messages of their own again (the usual case at low load); events stored twice
	// otherwise are dropped by the analytics writer's deduplication. Errors wrap
	// ErrStreamFull or ErrStreamUnavailable when they are one of those.
	Publish(ctx context.Context, tenant, batchID string, batch []*ingestv1.AcceptedEvent) error
}

// DeadLetters keeps the events of requests that were rejected, with why, where an operator can
// read them and a data subject's erasure deletes them: the domain's port, implemented on the
// dead-letter stream by services/ingest/natsjs. Nothing a client sent is then lost silently,
// even when the client ignores the rejections in its answer (SDKs do).
type DeadLetters interface {
	// Keep stores the rejected events of one request of tenant; reasons[i] says why events[i]
	// was rejected. It returns only once they are stored, with Publisher.Publish's errors.
	Keep(ctx context.Context, tenant string, events []*ingestv1.AcceptedEvent, reasons []string) error
}

// ErrStreamFull is a Publisher's error when the stream has no room: senders should back off.
var ErrStreamFull = errors.New("event stream is full")

// ErrStreamUnavailable is a Publisher's error when the stream cannot be reached.
var ErrStreamUnavailable = errors.New("event stream is unavailable")

// RateLimits bound events per second (bursts of one second's worth twice over).
type RateLimits struct {
	PerTenant float64
	PerSource float64
}

// DefaultRateLimits are the documented defaults.
var DefaultRateLimits = RateLimits{PerTenant: 200000, PerSource: 100000}

// Service is event intake: a request's events are validated, the accepted ones counted against
// the caller's rate limits and published as one batch, and the caller answered only after the
// stream has stored them.
type Service struct {
	limits           Limits
	tenants, sources *ratelimit.Keyed
	pub              Publisher
	dead             DeadLetters
	privacy          Privacy
	now              func() time.Time
	rejected         *prometheus.CounterVec
	suppressed       prometheus.Counter
	deadLettered     prometheus.Counter
	tails            TailSink
	identify         IdentifyPublisher
	quotas           *quota.View
	quotaExceeded    *prometheus.CounterVec
}

// NewService returns the intake publishing through pub under limits and rates.
func NewService(pub Publisher, limits Limits, rates RateLimits) *Service {
	return &Service{
		limits: limits, pub: pub, now: time.Now,
		tenants: ratelimit.New(ratelimit.Config{Rate: rates.PerTenant, Burst: int(2 * rates.PerTenant)}),
		sources: ratelimit.New(ratelimit.Config{Rate: rates.PerSource, Burst: int(2 * rates.PerSource)}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ingest_events_rejected_total", Help: "Events rejected, by field at fault and reason."},
			[]string{"field", "reason"}),
		deadLettered:  prometheus.NewCounter(prometheus.CounterOpts{Name: "ingest_events_dead_lettered_total", Help: "Rejected events kept in the dead-letter stream."}),
		suppressed:    prometheus.NewCounter(prometheus.CounterOpts{Name: "ingest_events_suppressed_total", Help: "Events of suppressed data subjects, dropped before publish."}),
		quotaExceeded: quota.NewExceededCounter(),
	}
}

// WithQuotas makes the intake enforce the tenants' events_accepted quotas of v (billing's
// QUOTAS bucket): a request whose accepted events would take the tenant past a hard quota is
// refused whole (RESOURCE_EXHAUSTED, quota.Exceeded.Err: nothing is published or
// dead-lettered), one past a soft quota is stored with Result.QuotaWarnings. The units that
// count are the events that will be stored: after validation and suppression, before publish.
// Each refusal and each warned request counts in campaignmesh_quota_exceeded_total.
func (s *Service) WithQuotas(v *quota.View) *Service {
	s.quotas = v
	return s
}

// WithPrivacy makes the intake apply the tenants' suppression lists and privacy policies (p)
// to accepted events before they are published.
func (s *Service) WithPrivacy(p Privacy) *Service {
	s.privacy = p
	return s
}

// WithDeadLetters makes the intake keep every rejected event with its reason through d (a
// suppressed subject's excepted, and after the tenant's privacy policy, like accepted events).
// Kept events spend rate like accepted ones, so rejections cannot flood the dead letters.
func (s *Service) WithDeadLetters(d DeadLetters) *Service {
	s.dead = d
	return s
}

// WithTails makes the intake offer each request's outcomes to the open tails of its tenant
// (the live event debugger) through t; nothing is built when nobody tails the tenant. t also
// records them for the tails opened later, by reference: callers must not change a request's
// events once Ingest has returned.
func (s *Service) WithTails(t TailSink) *Service {
	s.tails = t
	return s
}

// WithMetrics registers the intake's series (rejections by field, suppressed events) with reg.
func (s *Service) WithMetrics(reg prometheus.Registerer) *Service {
	reg.MustRegister(s.rejected, s.suppressed, s.deadLettered, s.quotaExceeded)
	return s
}

// Ingest takes the events of one request of requestBytes from source (the API key or user) of
// tenant. A request over the batch limits is refused whole (INVALID_ARGUMENT); otherwise the
// valid events are published as one batch, unless the caller is over a rate limit
// (RESOURCE_EXHAUSTED, nothing published), and the result says which events were accepted and
// which rejected. With WithDeadLetters the rejected events are kept too, after the accepted
// ones are stored (an error keeping them fails the request: a resend stores the accepted ones
// once, by event id). When nothing is to be stored, nothing is published and no rate is spent.
//
// With WithPrivacy, the valid events of a suppressed data subject are then dropped and counted
// in Result.Suppressed (a success: they are neither accepted nor rejected; a request of only
// such events publishes nothing), and the tenant's policy is applied to the others before
// they are published. Suppressed events spend rate like the others: the check comes first, so
// a flood is refused before any hashing.
//
// With WithIdentify, the batch's identify events are then copied for delivery, and a failure
// to store the copy fails the request (copyIdentify says why that loses and doubles nothing).
func (s *Service) Ingest(ctx context.Context, tenant, source string, events []*ingestv1.Event, requestBytes int) (Result, error) {
	return s.ingest(ctx, tenant, source, events, requestBytes, true)
}

// IngestOnBehalf is Ingest for the events a mesh service reports on a tenant's behalf (delivery:
// tracked clicks and opens, provider status webhooks): they are the platform's consequences of
// work already done, so no quota refuses them or warns about them, but they are counted
// against the tenant's events_accepted quotas like the others (billing counts them too).
func (s *Service) IngestOnBehalf(ctx context.Context, tenant, source string, events []*ingestv1.Event, requestBytes int) (Result, error) {
	return s.ingest(ctx, tenant, source, events, requestBytes, false)
}

// ingest is Ingest; enforce says whether the tenant's quotas may refuse the request.
func (s *Service) ingest(ctx context.Context, tenant, source string, events []*ingestv1.Event, requestBytes int, enforce bool) (Result, error) {
	receivedAt := s.now().UTC()
	res, err := s.limits.Prepare(events, tenant, source, receivedAt, requestBytes)
	if err != nil {
		var v apperr.Violations
		v.Add("events", "%v", err)
		return Result{}, v.Err()
	}
	for _, r := range res.Rejected {
		field := r.GetField()
		if i := strings.IndexByte(field, ']'); i >= 0 {
			field = strings.TrimPrefix(field[i+1:], ".")
		}
		s.rejected.WithLabelValues(field, r.GetReason()).Inc()
	}
	dead, reasons := s.deadLetters(tenant, source, receivedAt, events, res.Rejected)
	if len(res.Accepted) == 0 && len(dead) == 0 {
		s.tell(tenant, source, res, nil, requestBytes)
		return res, nil
	}
	if err := s.allow(tenant, source, len(res.Accepted)+len(dead)); err != nil {
		return Result{}, err
	}
	valid := res.Accepted // Suppress returns a new slice when it removes events: this one stays whole
	if res.Accepted, res.Suppressed = s.privacy.Suppress(tenant, res.Accepted); res.Suppressed > 0 {
		s.suppressed.Add(float64(res.Suppressed))
	}
	if len(res.Accepted) > 0 {
		reservation, err := s.reserve(tenant, &res, enforce)
		if err != nil {
			return Result{}, err
		}
		s.privacy.Apply(tenant, res.Accepted)
		id := batchID(tenant, res.Accepted)
		if err := s.pub.Publish(ctx, tenant, id, res.Accepted); err != nil {
			reservation.Release() // nothing stored: no usage (an ack lost after the store undercounts until billing's next snapshot)
			return Result{}, publishError(err)
		}
		if err := s.copyIdentify(ctx, tenant, id, res.Accepted); err != nil {
			return Result{}, publishError(err)
		}
	}
	if len(dead) > 0 {
		s.privacy.Apply(tenant, dead)
		if err := s.dead.Keep(ctx, tenant, dead, reasons); err != nil {
			return Result{}, publishError(err)
		}
		s.deadLettered.Add(float64(len(dead)))
	}
	s.tell(tenant, source, res, valid, requestBytes)
	return res, nil
}

// deadLetters returns the rejected events of a request to keep, as the stream's events, with
// why each was rejected: none without WithDeadLetters, and none of a suppressed data subject.
func (s *Service) deadLetters(tenant, source string, receivedAt time.Time, events []*ingestv1.Event, rejected []*ingestv1.Rejection) ([]*ingestv1.AcceptedEvent, []string) {
	if s.dead == nil || len(rejected) == 0 {
		return nil, nil
	}
	received := timestamppb.New(receivedAt)
	checkSuppressed := s.privacy.State != nil && s.privacy.State.Suppressions(tenant) > 0
	dead := make([]*ingestv1.AcceptedEvent, 0, len(rejected))
	reasons := make([]string, 0, len(rejected))
	for _, r := range rejected {
		e := events[r.GetIndex()]
		if e == nil || checkSuppressed && s.privacy.suppressed(tenant, e) {
			continue
		}
		dead = append(dead, &ingestv1.AcceptedEvent{Event: e, TenantId: tenant, Source: source, ReceivedAt: received, CorrectedTime: received})
		reasons = append(reasons, r.GetField()+": "+r.GetReason())
	}
	return dead, reasons
}

// tell records the outcomes of a request that succeeded for the tenant's tails opened later,
// and offers them to those open now. valid are the events that passed validation: those no
// longer accepted were suppressed (only their ids are told, never the subject's data).
// Watching is asked after Record: a tail that opens meanwhile finds the request in the
// history or receives it live (Service.Recent drops the repeat).
func (s *Service) tell(tenant, source string, res Result, valid []*ingestv1.AcceptedEvent, requestBytes int) {
	if s.tails == nil {
		return
	}
	r := newRequestOutcomes(s.now().UTC(), source, res, valid, requestBytes)
	s.tails.Record(tenant, r)
	if s.tails.Watching(tenant) {
		s.tails.Publish(tenant, r.Messages())
	}
}

// reserve counts res's accepted events against the tenant's events_accepted quotas (WithQuotas)
// and, when enforce, refuses them past a hard quota and notes the soft ones passed in res. A
// batch resent after a lost answer is counted again here though the stream drops it:
// conservative, and billing's next snapshot (which counts stored batches) sets it right.
func (s *Service) reserve(tenant string, res *Result, enforce bool) (*quota.Reservation, error) {
	if s.quotas == nil {
		return nil, nil
	}
	n := int64(len(res.Accepted))
	if !enforce {
		s.quotas.Record(tenant, quota.EventsAccepted, n, s.now())
		return nil, nil
	}
	d, r := s.quotas.Reserve(tenant, quota.EventsAccepted, n, s.now())
	quota.Observe(s.quotaExceeded, quota.EventsAccepted, d)
	if !d.Allow {
		return nil, d.Hard.Err()
	}
	res.QuotaWarnings = d.Soft
	return r, nil
}

// allow spends n events of the tenant's and then of the source's rate; the first refusal
// answers with how long to wait.
func (s *Service) allow(tenant, source string, n int) error {
	if ok, wait := s.tenants.Allow(tenant, n); !ok {
		return rateError(wait)
	}
	if ok, wait := s.sources.Allow(source, n); !ok {
		return rateError(wait)
	}
	return nil
}

func rateError(d time.Duration) error {
	e := apperr.New(apperr.ResourceExhausted, "RATE_LIMITED", "event rate limit exceeded; retry later")
	e.RetryAfter = d
	return e
}

// publishError turns the stream's refusals into answers a sender can act on; anything else
// stays an internal error.
func publishError(err error) error {
	switch {
	case errors.Is(err, ErrStreamFull):
		e := apperr.New(apperr.ResourceExhausted, "STREAM_FULL", "event stream is full; retry later")
		e.RetryAfter = 5 * time.Second
		return e
	case errors.Is(err, ErrStreamUnavailable):
		e := apperr.New(apperr.Unavailable, "STREAM_UNAVAILABLE", "event stream is unavailable; retry")
		e.RetryAfter = time.Second
		return e
	}
	return err
}

// batchID identifies a batch by its tenant and event ids, so the same batch sent again is a
// duplicate the stream drops.
func batchID(tenant string, events []*ingestv1.AcceptedEvent) string {
	h := sha256.New()
	h.Write([]byte(tenant))
	for _, e := range events {
		h.Write([]byte{0})
		h.Write([]byte(e.GetEvent().GetEventId()))
	}
	return hex.EncodeToString(h.Sum(nil))
}
