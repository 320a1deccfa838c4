// Package natsjs publishes ingest's accepted batches to the event stream on NATS JetStream: it
// implements the domain's ingest.Publisher. A request's events are split by partition
// (natsjs.Partition of the tenant and the event's user, else anonymous id) and stored on the
// partitions' subjects events.<tenant>.<p> (internal/platform/natsjs owns the stream).
//
// JetStream here writes every message to disk before acknowledging it (fsync on every write),
// so the number of messages, not of events, bounds ingest: a 100-event request over 8
// partitions as 8 messages would store about 8 times fewer events a second. The publisher
// therefore coalesces, in rounds per tenant: a round is at most one message per partition
// (so per (tenant, partition) at most one publish is in flight), published together; the
// events of the calls arriving meanwhile go together in the next round's messages (up to
// 1,000 events and 256 KiB a message; more wait for the round after). At low load a call's
// events go out at once, one message per partition; under load the messages grow instead of
// multiplying. A call returns when every message holding its events is stored, with the
// error of any that failed.
//
// Duplicates: a message holding one call's events of a partition, all of them, has the message
// id <batch id>.<p>, so a resent batch that goes out the same way is a duplicate the stream
// drops. A merged message's id is a hash of its calls' batch ids and event ranges; the same
// events resent in another message are stored again and dropped by the analytics writer's
// deduplication of event ids.
package natsjs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
	"github.com/campaignmesh/campaignmesh/services/ingest"
)

// Config bounds the messages and what waits for them.
type Config struct {
	// MaxMessageEvents and MaxMessageBytes bound one message: its events and the size of its
	// encoded batch (natsjs.EncodeBatch). A single event larger than MaxMessageBytes still
	// goes, alone.
	MaxMessageEvents, MaxMessageBytes int
	// MaxWaitingEvents bounds the events waiting for the next message of one (tenant,
	// partition); a call that finds no room waits for it (or for its context). A call's events
	// of one partition are let in whole when nothing waits, even if they are more.
	MaxWaitingEvents int
	// MaxLinger bounds how long a tenant's next round waits for the calls the previous one
	// answered to come back (see linger), and so the latency it adds; 0: no wait.
	MaxLinger time.Duration
	// PublishTimeout bounds one publish. A message may hold several calls' events, so no
	// caller's deadline bounds it: a caller whose context ends stops waiting instead.
	PublishTimeout time.Duration
}

// DefaultConfig are the documented defaults.
var DefaultConfig = Config{MaxMessageEvents: 1000, MaxMessageBytes: 256 << 10, MaxWaitingEvents: 20000, MaxLinger: 2 * time.Millisecond,
	PublishTimeout: 5 * time.Second}

// Option configures NewPublisher.
type Option func(*Publisher)

// WithConfig replaces DefaultConfig.
func WithConfig(c Config) Option { return func(p *Publisher) { p.cfg = c } }

// Publisher stores batches in the event stream through js, coalescing concurrent calls' events
// per tenant and partition.
type Publisher struct {
	js                  jetstream.JetStream
	cfg                 Config
	accepted, published prometheus.Counter
	publishTime         prometheus.Histogram
	messageEvents       prometheus.Histogram
	roomWaits           prometheus.Counter

	mu      sync.Mutex
	tenants map[string]*tenantQueue // the tenants with a round in flight or events waiting

	// since measures a round's duration (time.Since; tests make rounds last as long as they need).
	since func(time.Time) time.Duration
}

var _ ingest.Publisher = (*Publisher)(nil)

// NewPublisher returns the publisher over js; its metrics are registered with reg (which may
// be nil).
func NewPublisher(js jetstream.JetStream, reg prometheus.Registerer, opts ...Option) *Publisher {
	p := &Publisher{js: js, cfg: DefaultConfig, tenants: map[string]*tenantQueue{}, since: time.Since,
		accepted:  prometheus.NewCounter(prometheus.CounterOpts{Name: "ingest_events_accepted_total", Help: "Events stored in the stream."}),
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "ingest_batches_published_total", Help: "Messages (one partition's events of one or more requests) stored in the stream."}),
		publishTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ingest_publish_seconds", Help: "Time for JetStream to store a message.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14)}),
		messageEvents: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ingest_message_events", Help: "Events in a message stored in the stream.",
			Buckets: []float64{1, 5, 10, 25, 50, 100, 200, 400, 700, 1000}}),
		roomWaits: prometheus.NewCounter(prometheus.CounterOpts{Name: "ingest_publish_room_waits_total",
			Help: "Calls that waited for room behind the events already waiting for a partition's next message."}),
	}
	for _, o := range opts {
		o(p)
	}
	if reg != nil {
		reg.MustRegister(p.accepted, p.published, p.publishTime, p.messageEvents, p.roomWaits)
	}
	return p
}

// tenantQueue is what waits for a tenant's next round. One goroutine (run) exists per queue:
// it publishes the rounds and ends with the queue when nothing waits.
type tenantQueue struct {
	lanes   [natsjs.Partitions]lane
	calls   int           // calls with events waiting (not yet taken into a message)
	arrived chan struct{} // closed (and replaced) when a call's events are queued
}

// lane is what waits for a partition's next message.
type lane struct {
	queue   []*part
	waiting int           // events in queue not yet taken into a message
	room    chan struct{} // closed (and replaced) when waiting goes down
}

// call is one Publish: done closes when every message holding its events has settled.
type call struct {
	ctx     context.Context
	batchID string
	untaken int // parts with events not yet taken into a message (under Publisher.mu)

	mu   sync.Mutex
	open int // parts not wholly taken into messages, plus messages not yet settled
	err  error
	done chan struct{}
}

func (c *call) add(n int) { c.mu.Lock(); c.open += n; c.mu.Unlock() }

// settle records the outcome of one message holding c's events and says whether it was the
// last: c is answered.
func (c *call) settle(err error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil && c.err == nil {
		c.err = err
	}
	if c.open--; c.open == 0 {
		close(c.done)
		return true
	}
	return false
}

// part is a call's events of one partition, in the call's order.
type part struct {
	call      *call
	p         int
	events    []*ingestv1.AcceptedEvent
	sizes     []int // upper bounds of each event's bytes in an encoded batch
	next      int   // the first event not yet taken into a message
	withdrawn bool  // the caller stopped waiting: the events not taken then are not sent
}

// segment is the events [from, to) of a part in one message.
type segment struct {
	part     *part
	from, to int
}

// Publish implements ingest.Publisher: it returns once JetStream has stored every message
// holding the batch's events, or with the error of one that failed (the whole call failed; the
// client resends the batch), or with ctx's error when ctx ends first. Events not yet taken
// into a message then are not sent; a message already holding them, shared with other calls,
// is not cancelled.
func (p *Publisher) Publish(ctx context.Context, tenant, batchID string, batch []*ingestv1.AcceptedEvent) error {
	if tenant == "" {
		return errors.New("publish batch: no tenant")
	}
	if len(batch) == 0 {
		return nil
	}
	if ctx.Err() != nil {
		return ctxError(ctx)
	}
	c := &call{ctx: ctx, batchID: batchID, done: make(chan struct{})}
	parts := split(c, tenant, batch)
	c.open = len(parts)
	for i, pt := range parts {
		if err := p.enqueue(ctx, tenant, pt); err != nil {
			p.withdraw(tenant, parts[:i])
			return err
		}
	}
	p.arrived(tenant)
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		p.withdraw(tenant, parts)
		select {
		case <-c.done: // settled meanwhile: the outcome is known
			return c.err
		default:
			return ctxError(ctx)
		}
	}
}

// split groups batch by partition, keeping each partition's events in batch order.
func split(c *call, tenant string, batch []*ingestv1.AcceptedEvent) []*part {
	var byPart [natsjs.Partitions]*part
	for _, e := range batch {
		n := natsjs.Partition(tenant, subjectOf(e))
		if byPart[n] == nil {
			byPart[n] = &part{call: c, p: n}
		}
		byPart[n].events = append(byPart[n].events, e)
		byPart[n].sizes = append(byPart[n].sizes, encodedSize(e))
	}
	parts := make([]*part, 0, len(byPart))
	for _, pt := range byPart {
		if pt != nil {
			parts = append(parts, pt)
		}
	}
	return parts
}

// subjectOf is what an event's partition follows: its user id, else its anonymous id.
func subjectOf(e *ingestv1.AcceptedEvent) string {
	if s := e.GetEvent().GetUserId(); s != "" {
		return s
	}
	return e.GetEvent().GetAnonymousId()
}

// batchOverhead bounds what an encoded batch holds besides its events: the compact flag and
// the tenant, source and received time carried once (natsjs.EncodeBatch).
const batchOverhead = 64

// encodedSize bounds e's bytes in an encoded batch: the event, its tenant and source (kept per
// event when they differ within the batch), two times (received, corrected: 13 bytes each at
// most with their tags) and the field's tag and length (5 bytes at most).
func encodedSize(e *ingestv1.AcceptedEvent) int {
	return proto.Size(e.GetEvent()) + len(e.GetTenantId()) + len(e.GetSource()) + 48
}

// enqueue adds pt to its lane, starting the tenant's publisher when there was none, once the
// lane has room for it.
func (p *Publisher) enqueue(ctx context.Context, tenant string, pt *part) error {
	for {
		p.mu.Lock()
		t := p.tenants[tenant]
		if t == nil {
			t = &tenantQueue{arrived: make(chan struct{})}
			for i := range t.lanes {
				t.lanes[i].room = make(chan struct{})
			}
			p.tenants[tenant] = t
			go p.run(tenant, t)
		}
		l := &t.lanes[pt.p]
		if l.waiting == 0 || l.waiting+len(pt.events) <= p.cfg.MaxWaitingEvents {
			l.queue = append(l.queue, pt)
			l.waiting += len(pt.events)
			if pt.call.untaken++; pt.call.untaken == 1 {
				t.calls++
			}
			p.mu.Unlock()
			return nil
		}
		room := l.room
		p.mu.Unlock()
		p.roomWaits.Inc()
		select {
		case <-room:
		case <-ctx.Done():
			return ctxError(ctx)
		}
	}
}

// arrived tells tenant's publisher, lingering for calls, that one has all its events queued.
func (p *Publisher) arrived(tenant string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t := p.tenants[tenant]; t != nil {
		close(t.arrived)
		t.arrived = make(chan struct{})
	}
}

// withdraw takes the events of parts not yet in a message out of their lanes (the publisher
// drops the parts themselves when it comes to them).
func (p *Publisher) withdraw(tenant string, parts []*part) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pt := range parts {
		if pt.withdrawn || pt.next == len(pt.events) {
			continue
		}
		// Not wholly taken, so still queued: its tenant's queue exists.
		t := p.tenants[tenant]
		l := &t.lanes[pt.p]
		l.waiting -= len(pt.events) - pt.next
		pt.next, pt.withdrawn = len(pt.events), true
		p.taken(t, pt)
		close(l.room)
		l.room = make(chan struct{})
	}
}

// taken notes that pt has no events waiting any more (the caller holds p.mu).
func (p *Publisher) taken(t *tenantQueue, pt *part) {
	if pt.call.untaken--; pt.call.untaken == 0 {
		t.calls--
	}
}

// message is one message of a round: partition part's segs, n events.
type message struct {
	part int
	segs []segment
	n    int
	err  error
}

// run publishes tenant's rounds until nothing waits: each round takes the next message of
// every partition with events waiting, publishes them together and answers their calls.
func (p *Publisher) run(tenant string, t *tenantQueue) {
	var released int            // calls the last round answered
	var lastRound time.Duration // how long it took
	for {
		p.mu.Lock()
		p.linger(t, t.calls+released, min(p.cfg.MaxLinger, lastRound))
		var round []*message
		for i := range t.lanes {
			if segs, n := p.take(t, &t.lanes[i]); n > 0 {
				round = append(round, &message{part: i, segs: segs, n: n})
			}
		}
		if len(round) == 0 {
			delete(p.tenants, tenant)
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		start := time.Now()
		var wg sync.WaitGroup
		for _, m := range round[1:] {
			wg.Add(1)
			go func() { defer wg.Done(); m.err = p.send(tenant, m) }()
		}
		round[0].err = p.send(tenant, round[0])
		wg.Wait()
		lastRound = p.since(start)
		released = 0
		for _, m := range round {
			for _, s := range m.segs {
				if s.part.call.settle(m.err) {
					released++
				}
			}
		}
	}
}

// linger holds the next round (the caller holds p.mu) until want calls wait, or a partition
// has a full message waiting, or wait has passed. want is the calls waiting when the last
// round ended plus those it answered. Callers that send a request as soon as the previous
// one is answered are answered together (every partition's message of their requests
// stored) and come back together, a moment later: a round started at once would hold the
// calls that were waiting and leave the answered ones to the round after, and the rounds
// would settle at about half the calls each (half the events a message, and, as the server
// stores one message at a time, about half the events stored a second). A single caller
// waits for nobody but itself; with no caller coming back the round waits at most wait (the
// last round's duration, at most MaxLinger).
func (p *Publisher) linger(t *tenantQueue, want int, wait time.Duration) {
	if t.calls >= want || wait <= 0 || p.fullLane(t) {
		return
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for t.calls < want && !p.fullLane(t) {
		arrived := t.arrived
		p.mu.Unlock()
		select {
		case <-arrived:
			p.mu.Lock()
		case <-timer.C:
			p.mu.Lock()
			return
		}
	}
}

// fullLane says whether a partition of t has a full message waiting.
func (p *Publisher) fullLane(t *tenantQueue) bool {
	for i := range t.lanes {
		if t.lanes[i].waiting >= p.cfg.MaxMessageEvents {
			return true
		}
	}
	return false
}

// take removes the next message's events from l's queue (the caller holds p.mu): the waiting
// events in arrival order up to the message limits; a part that does not fit whole is split
// and its rest goes first in the next message.
func (p *Publisher) take(t *tenantQueue, l *lane) ([]segment, int) {
	var segs []segment
	events, bytes := 0, batchOverhead
	for len(l.queue) > 0 {
		pt := l.queue[0]
		if pt.withdrawn {
			l.queue[0], l.queue = nil, l.queue[1:]
			continue
		}
		from := pt.next
		for pt.next < len(pt.events) && (events == 0 || events < p.cfg.MaxMessageEvents && bytes+pt.sizes[pt.next] <= p.cfg.MaxMessageBytes) {
			bytes += pt.sizes[pt.next]
			pt.next++
			events++
		}
		if pt.next > from {
			segs = append(segs, segment{pt, from, pt.next})
		}
		if pt.next < len(pt.events) {
			if pt.next > from {
				pt.call.add(1) // the rest makes one more message to settle
			}
			break // the message is full
		}
		p.taken(t, pt)
		l.queue[0], l.queue = nil, l.queue[1:]
	}
	if events > 0 {
		l.waiting -= events
		close(l.room)
		l.room = make(chan struct{})
	}
	return segs, events
}

// send stores m.
func (p *Publisher) send(tenant string, m *message) error {
	segs, n := m.segs, m.n
	events := make([]*ingestv1.AcceptedEvent, 0, n)
	for _, s := range segs {
		events = append(events, s.part.events[s.from:s.to]...)
	}
	data, err := natsjs.EncodeBatch(events)
	if err != nil {
		return err
	}
	// The message carries the trace context of its first call (the one waiting longest), so the
	// writer's spans join that call's trace. A merged message gets a span of its own under that
	// call, linked to the others' calls.
	first := segs[0].part.call
	ctx := context.WithoutCancel(first.ctx)
	if len(segs) > 1 {
		links := make([]trace.Link, 0, len(segs)-1)
		for _, s := range segs[1:] {
			if sc := trace.SpanContextFromContext(s.part.call.ctx); sc.IsValid() {
				links = append(links, trace.Link{SpanContext: sc})
			}
		}
		var span trace.Span
		ctx, span = otel.Tracer("ingest/natsjs").Start(ctx, "ingest.publish", trace.WithSpanKind(trace.SpanKindProducer), trace.WithLinks(links...))
		defer span.End()
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.PublishTimeout)
	defer cancel()
	hdr := nats.Header{}
	otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(http.Header(hdr)))
	start := time.Now()
	if _, err := natsjs.PublishPart(ctx, p.js, tenant, m.part, messageID(m.part, segs), data, hdr); err != nil {
		return classify(err)
	}
	telemetry.ObserveWithTrace(ctx, p.publishTime, time.Since(start).Seconds())
	p.published.Inc()
	p.accepted.Add(float64(n))
	p.messageEvents.Observe(float64(n))
	return nil
}

// messageID is <batch id>.<p> for a message holding one call's events of partition p, all of
// them; else a hash of each segment's batch id and event range, with .<p>.
func messageID(part int, segs []segment) string {
	if s := segs[0]; len(segs) == 1 && s.from == 0 && s.to == len(s.part.events) {
		return s.part.call.batchID + "." + strconv.Itoa(part)
	}
	h := sha256.New()
	for _, s := range segs {
		h.Write([]byte(s.part.call.batchID))
		h.Write([]byte{0})
		h.Write(strconv.AppendInt(strconv.AppendInt(nil, int64(s.from), 10), int64(s.to), 10))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)) + "." + strconv.Itoa(part)
}

// ctxError is the error of a call whose context ended before its events were stored: as
// before the coalescing publisher, a deadline reads as the stream being unavailable.
func ctxError(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: publish batch: %w", ingest.ErrStreamUnavailable, ctx.Err())
	}
	return fmt.Errorf("publish batch: %w", ctx.Err())
}

// classify says which of the domain's stream errors err is, keeping the cause for the log.
func classify(err error) error {
	switch {
	case errors.Is(err, natsjs.ErrStreamFull):
		return fmt.Errorf("%w: %w", ingest.ErrStreamFull, err)
	case errors.Is(err, natsjs.ErrUnavailable):
		return fmt.Errorf("%w: %w", ingest.ErrStreamUnavailable, err)
	}
	return err
}
