package writer

import (
	"fmt"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/usage"
)

// WithAcceptedUsage makes the writer record the events ingest accepted as units of the
// events_accepted meter on the USAGE stream (internal/platform/usage), which billing counts.
// The event stream is a work queue that only the writers read, so the writers are the ones to
// count what it accepted.
//
// Exactly once, by the same argument as the rows': the units of a set are published before any
// of its messages is acknowledged (and retried until they are), so a unit is never missed; a
// batch delivered again (a crash before the ack, a late redelivery, a fenced tenant's deferred
// message) yields the same units with the same ids (AcceptedUnits), which the stream drops
// within its duplicate window and billing keys its rows on past it, so none counts twice. Every
// event of a batch counts, the rows the writer then drops too (repeats of stored events,
// suppressed subjects): ingest accepted them. Dead-lettered messages are not counted.
func WithAcceptedUsage() Option {
	return func(w *Writer) { w.acceptedUsage = true }
}

// AcceptedUnits returns the events_accepted units of rows: one per batch (a stream sequence)
// and UTC day of receipt, with the id "ea-<sequence>-<yyyymmdd>" (the sequence with the
// stream incarnation's offset, so unique across incarnations) and as its time the receipt time
// of the first of its events. now stands in for an event without a receipt time.
func AcceptedUnits(rows []Row, now time.Time) []usage.Unit {
	type key struct {
		seq uint64
		day string
	}
	index := map[key]int{}
	var units []usage.Unit
	for _, r := range rows {
		at := now.UTC()
		if ts := r.Event.GetReceivedAt(); ts != nil && ts.IsValid() {
			at = ts.AsTime().UTC()
		}
		k := key{r.Seq, at.Format("20060102")}
		i, ok := index[k]
		if !ok {
			i = len(units)
			index[k] = i
			units = append(units, usage.Unit{ID: fmt.Sprintf("ea-%d-%s", r.Seq, k.day), Tenant: r.Event.GetTenantId(),
				Meter: usage.MeterEventsAccepted, Time: at})
		}
		units[i].Units++
	}
	return units
}
