package ingest

import (
	"container/list"
	"context"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
)

// RequestOutcomes is what a tail sees of one request, kept as the request's own messages (the
// accepted events as stored, the rejections, the ids of the suppressed events) and turned into
// TailOutcome messages only when a tail reads them: recording a request for the history costs
// ingest a small allocation, not a message per event. The messages it refers to are never
// changed after Ingest returns (the gRPC server decodes every request into fresh messages and
// nothing pools them), so holding them is safe.
type RequestOutcomes struct {
	at         time.Time
	source     string
	accepted   []*ingestv1.AcceptedEvent
	rejected   []*ingestv1.Rejection
	suppressed []string
	// bytes is what the history counts the request at: its size on the wire (an upper bound
	// of what is kept of it) plus the bookkeeping.
	bytes int
}

// requestOverhead is what the history counts for a request besides its wire size: the
// RequestOutcomes, its place in the tenant's list, the slices' headers.
const requestOverhead = 256

// tenantOverhead is what the history counts for a tenant it keeps requests of: the map entry,
// the LRU element, the tenant's list.
const tenantOverhead = 512

// newRequestOutcomes records res of a request of size bytes from source decided at at. valid
// are the accepted events before the suppression lists applied: those no longer in
// res.Accepted were suppressed (res.Accepted keeps valid's order), and only their ids are kept.
func newRequestOutcomes(at time.Time, source string, res Result, valid []*ingestv1.AcceptedEvent, bytes int) *RequestOutcomes {
	r := &RequestOutcomes{at: at, source: source, accepted: res.Accepted, rejected: res.Rejected, bytes: bytes + requestOverhead}
	if res.Suppressed > 0 {
		r.suppressed = make([]string, 0, res.Suppressed)
		k := 0
		for _, a := range valid {
			if k < len(res.Accepted) && res.Accepted[k] == a {
				k++
				continue
			}
			r.suppressed = append(r.suppressed, a.GetEvent().GetEventId())
		}
	}
	return r
}

// lastOnly answers r with its last n outcomes only (r itself when it has no more).
func (r *RequestOutcomes) lastOnly(n int) *RequestOutcomes {
	drop := r.count() - n
	if drop <= 0 {
		return r
	}
	// Copies, not sub-slices: a sub-slice's array would keep every event of the request.
	c := *r
	k := min(drop, len(c.rejected))
	c.rejected, drop = slices.Clone(c.rejected[k:]), drop-k
	k = min(drop, len(c.suppressed))
	c.suppressed, drop = slices.Clone(c.suppressed[k:]), drop-k
	c.accepted = slices.Clone(c.accepted[drop:])
	return &c
}

func (r *RequestOutcomes) count() int { return len(r.rejected) + len(r.suppressed) + len(r.accepted) }

// Messages builds what a tail receives of the request, in order: the rejections (field and
// reason, no values), the suppressed events by id, the accepted events as stored.
func (r *RequestOutcomes) Messages() []*TailOutcome {
	return r.last(r.count())
}

// last builds the request's last n messages.
func (r *RequestOutcomes) last(n int) []*TailOutcome {
	ts := timestamppb.New(r.at)
	out := make([]*TailOutcome, 0, min(n, r.count()))
	skip := r.count() - n
	for _, x := range r.rejected {
		if skip--; skip < 0 {
			out = append(out, &TailOutcome{Outcome: ingestv1.EventOutcome_EVENT_OUTCOME_REJECTED, Time: ts, Source: r.source, EventId: x.GetEventId(), Rejection: x})
		}
	}
	for _, id := range r.suppressed {
		if skip--; skip < 0 {
			out = append(out, &TailOutcome{Outcome: ingestv1.EventOutcome_EVENT_OUTCOME_SUPPRESSED, Time: ts, Source: r.source, EventId: id})
		}
	}
	for _, a := range r.accepted {
		if skip--; skip < 0 {
			out = append(out, &TailOutcome{Outcome: ingestv1.EventOutcome_EVENT_OUTCOME_ACCEPTED, Time: ts, Source: r.source,
				EventId: a.GetEvent().GetEventId(), Event: a.GetEvent()})
		}
	}
	return out
}

// history keeps, on one instance, the last requests of each tenant that hold its last
// limits.History outcomes of the last limits.HistoryAge, within limits.HistoryBytes across
// tenants: over that, the requests of the tenant recorded least recently go first (LRU).
type history struct {
	limits TailLimits
	mu     sync.Mutex
	byName map[string]*list.Element // of *tenantHistory
	lru    list.List                // front: recorded most recently
	bytes  int
}

type tenantHistory struct {
	tenant   string
	requests []*RequestOutcomes // oldest first
	outcomes int
	last     time.Time
}

func newHistory(limits TailLimits) *history {
	return &history{limits: limits, byName: map[string]*list.Element{}}
}

// record keeps r as tenant's latest request.
func (h *history) record(tenant string, r *RequestOutcomes) {
	r = r.lastOnly(h.limits.History)
	h.mu.Lock()
	defer h.mu.Unlock()
	el := h.byName[tenant]
	if el == nil {
		el = h.lru.PushFront(&tenantHistory{tenant: tenant})
		h.byName[tenant] = el
		h.bytes += tenantOverhead
	} else {
		h.lru.MoveToFront(el)
	}
	th := el.Value.(*tenantHistory)
	th.requests = append(th.requests, r)
	th.outcomes += r.count()
	th.last = r.at
	h.bytes += r.bytes
	// The oldest request goes when the newer ones hold enough outcomes, or when it is too old.
	for len(th.requests) > 1 && (th.outcomes-th.requests[0].count() >= h.limits.History || r.at.Sub(th.requests[0].at) > h.limits.HistoryAge) {
		h.dropOldest(th)
	}
	// Over the budget, or too old: the least recently recorded tenants' requests go.
	for back := h.lru.Back(); back != nil; back = h.lru.Back() {
		old := back.Value.(*tenantHistory)
		if h.bytes <= h.limits.HistoryBytes && r.at.Sub(old.last) <= h.limits.HistoryAge {
			break
		}
		h.dropOldest(old)
	}
}

// dropOldest forgets th's oldest request, and th when it was its last.
func (h *history) dropOldest(th *tenantHistory) {
	old := th.requests[0]
	th.requests[0] = nil
	th.requests = th.requests[1:]
	th.outcomes -= old.count()
	h.bytes -= old.bytes
	if len(th.requests) == 0 {
		h.lru.Remove(h.byName[th.tenant])
		delete(h.byName, th.tenant)
		h.bytes -= tenantOverhead
	}
}

// recent builds tenant's last limits.History outcomes decided after now - limits.HistoryAge,
// oldest first.
func (h *history) recent(tenant string, now time.Time) []*TailOutcome {
	h.mu.Lock()
	var requests []*RequestOutcomes
	if el := h.byName[tenant]; el != nil {
		requests = slices.Clone(el.Value.(*tenantHistory).requests)
	}
	h.mu.Unlock()
	var chunks [][]*TailOutcome
	left := h.limits.History
	for i := len(requests) - 1; i >= 0 && left > 0; i-- {
		r := requests[i]
		if now.Sub(r.at) > h.limits.HistoryAge {
			break
		}
		n := min(left, r.count())
		chunks = append(chunks, r.last(n))
		left -= n
	}
	var out []*TailOutcome
	for i := len(chunks) - 1; i >= 0; i-- {
		out = append(out, chunks[i]...)
	}
	return out
}

// Record implements TailSink: tenant's outcomes r are kept for the tails opened later.
func (t *Tails) Record(tenant string, r *RequestOutcomes) {
	if t.limits.History > 0 {
		t.history.record(tenant, r)
	}
}

// Recent implements TailSource: tenant's recent outcomes recorded on this instance.
func (t *Tails) Recent(_ context.Context, tenant string) []*TailOutcome {
	if t.limits.History <= 0 {
		return nil
	}
	return t.history.recent(tenant, t.now())
}

// Recent answers what tl sends before the live outcomes: its tenant's recent outcomes on
// every instance (src.Recent), merged by time, only those of the last HistoryAge, without the
// accepted events of a subject suppressed since (checked now, through the Privacy port),
// the last History of them, oldest first. tl then skips the live outcomes among them
// (Tail.Repeats): an outcome decided as the tail opened may come both ways.
func (s *Service) Recent(ctx context.Context, src TailSource, tl *Tail) []*TailOutcome {
	limits := src.Limits()
	if limits.History <= 0 {
		return nil
	}
	tenant := tl.Tenant()
	raw := src.Recent(ctx, tenant)
	since := s.now().Add(-limits.HistoryAge)
	kept := make([]*TailOutcome, 0, len(raw))
	var accepted []*ingestv1.AcceptedEvent
	for _, o := range raw {
		switch {
		case o.GetOutcome() == ingestv1.EventOutcome_EVENT_OUTCOME_DROPPED || o.GetOutcome() == ingestv1.EventOutcome_EVENT_OUTCOME_UNSPECIFIED:
			continue
		case o.GetTime() == nil || o.GetTime().AsTime().Before(since):
			continue
		case o.GetOutcome() == ingestv1.EventOutcome_EVENT_OUTCOME_ACCEPTED:
			accepted = append(accepted, &ingestv1.AcceptedEvent{Event: o.GetEvent()})
		}
		kept = append(kept, o)
	}
	if stillAccepted, n := s.privacy.Suppress(tenant, accepted); n > 0 {
		allowed := make(map[*ingestv1.Event]bool, len(stillAccepted))
		for _, a := range stillAccepted {
			allowed[a.GetEvent()] = true
		}
		kept = slices.DeleteFunc(kept, func(o *TailOutcome) bool {
			return o.GetOutcome() == ingestv1.EventOutcome_EVENT_OUTCOME_ACCEPTED && !allowed[o.GetEvent()]
		})
	}
	// Stable: the outcomes of one request keep their order.
	slices.SortStableFunc(kept, func(a, b *TailOutcome) int { return a.GetTime().AsTime().Compare(b.GetTime().AsTime()) })
	if len(kept) > limits.History {
		kept = kept[len(kept)-limits.History:]
	}
	tl.recent = make(map[string]struct{}, len(kept))
	for _, o := range kept {
		tl.recent[outcomeKey(o)] = struct{}{}
	}
	return kept
}

// Repeats reports whether o was already sent among the recent outcomes (Service.Recent); each
// is reported once. Only the goroutine that reads tl calls it.
func (tl *Tail) Repeats(o *TailOutcome) bool {
	if len(tl.recent) == 0 {
		return false
	}
	k := outcomeKey(o)
	if _, ok := tl.recent[k]; ok {
		delete(tl.recent, k)
		return true
	}
	return false
}

// outcomeKey tells outcomes apart: a request's outcomes share their time and source, and
// differ by event id (and, for rejections, index; a rejected event may have no id).
func outcomeKey(o *TailOutcome) string {
	t := o.GetTime()
	return strconv.Itoa(int(o.GetOutcome())) + "|" + strconv.FormatInt(t.GetSeconds(), 10) + "." + strconv.Itoa(int(t.GetNanos())) + "|" +
		o.GetSource() + "|" + strconv.Itoa(int(o.GetRejection().GetIndex())) + "|" + o.GetEventId()
}
