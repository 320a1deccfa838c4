package writer

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
)

// fenceRetry is how long a fenced tenant's message waits before it is delivered again: about
// the time an erasure's rollup rebuild takes on a small set of hours.
const fenceRetry = time.Second

// fenceState is the writer's side of the tenant write fences (package doc, "Write fences").
type fenceState struct {
	kv    jetstream.KeyValue
	view  *natsjs.FenceView
	acked map[string]string // tenant -> the fence id acknowledged
	stale map[string]string // tenant -> the stale fence id already logged
}

// openFences opens the fence bucket (created when missing) and loads the raised fences before
// the writer consumes anything, so a fence raised before this writer started is honoured from
// its first insert.
func (w *Writer) openFences(ctx context.Context) error {
	return w.retry(ctx, nil, "read the write fences", func() error {
		kv, err := natsjs.OpenFenceBucket(ctx, w.js)
		if err != nil {
			return err
		}
		view, err := natsjs.WatchFences(ctx, kv, w.logger)
		if err != nil {
			return err
		}
		w.fences = &fenceState{kv: kv, view: view, acked: map[string]string{}, stale: map[string]string{}}
		return nil
	})
}

// activeFences returns the fences this writer honours: those raised and refreshed within
// natsjs.FenceMaxAge. A stale one is ignored, and logged once as an error: the erasure that
// raised it died or is stuck, and a tenant's events must not wait forever.
func (w *Writer) activeFences() map[string]natsjs.Fence {
	if w.fences == nil {
		return nil
	}
	all := w.fences.view.Fences()
	now := time.Now()
	for tenant, f := range all {
		if !f.Stale(now) {
			continue
		}
		delete(all, tenant)
		if w.fences.stale[tenant] != f.ID {
			w.fences.stale[tenant] = f.ID
			w.logger.Error("ignoring a stale write fence: its erasure stopped refreshing it; the tenant's events are written again",
				"tenant", tenant, "fence", f.ID, "refreshed", time.UnixMilli(f.TimeMS).UTC().Format(time.RFC3339), "max_age", natsjs.FenceMaxAge.String())
		}
	}
	return all
}

// ackFences acknowledges every fence not yet acknowledged. The writer calls it between two
// writes, when none of its inserts is in flight, and every later write leaves the fenced
// tenants' messages out (deferFenced) until the fence is lifted: the acknowledgement tells the
// erasure that no insert of the tenant's events by this writer runs or will run. A failed
// acknowledgement is tried again before the next write.
func (w *Writer) ackFences(ctx context.Context) {
	if w.fences == nil {
		return
	}
	active := w.activeFences()
	for tenant, f := range active {
		if w.fences.acked[tenant] == f.ID {
			continue
		}
		if err := natsjs.AckFence(ctx, w.fences.kv, tenant, w.cfg.Index, f.ID); err != nil {
			w.logger.Warn("acknowledge a write fence; trying again before the next write", "tenant", tenant, "err", err)
			continue
		}
		w.fences.acked[tenant] = f.ID
		w.logger.Info("write fence acknowledged: the tenant's events wait until it is lifted", "tenant", tenant, "fence", f.ID)
	}
	for tenant := range w.fences.acked {
		if _, ok := active[tenant]; !ok {
			delete(w.fences.acked, tenant) // lifted
		}
	}
}

// deferFenced takes the messages of fenced tenants (one message holds one tenant's events:
// its subject names the tenant) out of a set, with their rows, and has the stream deliver them
// again after fenceRetry, neither inserted nor acknowledged. Delivered again after the fence
// is lifted, their sequences may be below a watermark that newer sets raised: Stored tells
// they are not stored and they are inserted then, as any late batch (package doc).
func (w *Writer) deferFenced(msgs []fetched, rows []Row) ([]fetched, []Row) {
	active := w.activeFences()
	if len(active) == 0 {
		return msgs, rows
	}
	keep := msgs[:0:0]
	deferred := 0
	for _, m := range msgs {
		tenant, _, _ := natsjs.ParseSubject(m.msg.Subject())
		if _, fenced := active[tenant]; fenced {
			_ = m.msg.NakWithDelay(fenceRetry)
			deferred++
			continue
		}
		keep = append(keep, m)
	}
	if deferred == 0 {
		return msgs, rows
	}
	keptRows := rows[:0:0]
	for _, r := range rows {
		if _, fenced := active[r.Event.GetTenantId()]; !fenced {
			keptRows = append(keptRows, r)
		}
	}
	w.fenceDeferred.Add(float64(deferred))
	w.logger.Debug("messages of fenced tenants deferred", "messages", deferred, "rows", len(rows)-len(keptRows))
	return keep, keptRows
}
