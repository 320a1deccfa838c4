package writer

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
)

// WithSuppression makes the writer drop the rows of suppressed data subjects before anything
// else decides about them (see the package doc, "Suppressed subjects"): a row whose user id or
// anonymous id has, under hasher, a SubjectHash that view lists as suppressed for its tenant.
// view is kept current by privacy.Watch, which the caller has run to its first load before
// Run, so the writer never starts on an empty list by mistake.
func WithSuppression(view *privacy.View, hasher *privacy.Hasher) Option {
	return func(w *Writer) { w.suppression = &suppression{view: view, hasher: hasher} }
}

// suppression is what WithSuppression sets.
type suppression struct {
	view   *privacy.View
	hasher *privacy.Hasher
}

func newSuppressedCounter() prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: "writer_suppressed_rows_total",
		Help: "Event rows not inserted because their subject (user or anonymous id) is suppressed: accepted before the suppression, dropped by the writer."})
}

// withoutSuppressed returns rows less those of suppressed subjects. It reads the view as it is
// now: a suppression only ever grows while its erasure runs, so a row dropped once is dropped
// again when its batch is redelivered. Tenants with no suppression cost a map look-up a row.
func (w *Writer) withoutSuppressed(rows []Row) []Row {
	s := w.suppression
	if s == nil {
		return rows
	}
	// A set holds many rows of each subject: each identifier is hashed once a set.
	known := map[[2]string]bool{}
	isSuppressed := func(tenant, id string) bool {
		if id == "" {
			return false
		}
		k := [2]string{tenant, id}
		v, ok := known[k]
		if !ok {
			v = s.view.Suppressed(tenant, s.hasher.SubjectHash(tenant, id))
			known[k] = v
		}
		return v
	}
	suppressed := func(r Row) bool {
		tenant := r.Event.GetTenantId()
		if s.view.Suppressions(tenant) == 0 {
			return false
		}
		return isSuppressed(tenant, r.Event.GetEvent().GetUserId()) || isSuppressed(tenant, r.Event.GetEvent().GetAnonymousId())
	}
	// One pass, hashing each row once; rows is the set's own slice, built by collect for this
	// write, so the rows kept are moved down in place.
	out := rows[:0]
	for _, r := range rows {
		if !suppressed(r) {
			out = append(out, r)
		}
	}
	if len(out) == len(rows) {
		return rows
	}
	n := len(rows) - len(out)
	w.suppressed.Add(float64(n))
	w.logger.Info("rows of suppressed subjects dropped before insert", "rows", n)
	return out
}

// StreamSeq returns the event stream's last sequence: the newest batch accepted so far. An
// erasure reads it once its suppression is in force (see Drained).
func StreamSeq(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	info, err := streamInfo(ctx, js)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}

// Drained reports whether no batch of the event stream at or below seq is left to write: the
// stream is a work queue, so it holds exactly the batches not acknowledged yet. An erasure
// that completes only once Drained(its StreamSeq) holds leaves no row of its subject in the
// stream that could land later — after an UNSUPPRESS, say (see the package doc).
func Drained(ctx context.Context, js jetstream.JetStream, seq uint64) (bool, error) {
	info, err := streamInfo(ctx, js)
	if err != nil {
		return false, err
	}
	return info.State.Msgs == 0 || info.State.FirstSeq > seq, nil
}

func streamInfo(ctx context.Context, js jetstream.JetStream) (*jetstream.StreamInfo, error) {
	s, err := js.Stream(ctx, natsjs.StreamName)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", natsjs.StreamName, err)
	}
	return s.CachedInfo(), nil // js.Stream has just asked the server
}
