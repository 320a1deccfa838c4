package quota

import (
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// View is a live copy of the bucket (every tenant's Snapshot) plus the units this process let
// through since each snapshot's AsOf, in one-second buckets: a bucket that straddles AsOf counts
// whole (conservative), and buckets that end before the newest AsOf are dropped when that
// snapshot arrives. Only the units of tenants that have a quota on the meter are kept. A tenant
// without a snapshot has no quotas: everything is allowed. It is safe for concurrent use.
type View struct {
	mu     sync.RWMutex
	snaps  map[string]Snapshot
	local  map[localKey]map[int64]int64 // (tenant, meter) -> unix second -> units
	logger *slog.Logger
	reload chan struct{}
}

type localKey struct{ tenant, meter string }

// NewView returns an empty View (no quotas); Watch fills one from the bucket, Apply by hand.
func NewView(logger *slog.Logger) *View {
	return &View{snaps: map[string]Snapshot{}, local: map[localKey]map[int64]int64{}, logger: logger, reload: make(chan struct{}, 1)}
}

// Apply records one entry of the bucket (deleted: the key was deleted or purged: the tenant has
// no quotas any more). An entry that does not decode is logged and the previous one kept.
func (v *View) Apply(key string, value []byte, deleted bool) {
	tenant, ok := strings.CutPrefix(key, keyPrefix)
	if !ok {
		return
	}
	if deleted {
		v.mu.Lock()
		defer v.mu.Unlock()
		v.forget(tenant)
		return
	}
	var s Snapshot
	if err := json.Unmarshal(value, &s); err != nil {
		if v.logger != nil {
			v.logger.Error("quota entry does not decode; keeping the previous one", "tenant", tenant, "error", err)
		}
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.set(tenant, s)
}

// set installs a tenant's snapshot and drops the units it already covers.
func (v *View) set(tenant string, s Snapshot) {
	v.snaps[tenant] = s
	for k, buckets := range v.local {
		if k.tenant != tenant {
			continue
		}
		if !s.hasMeter(k.meter) {
			delete(v.local, k)
			continue
		}
		for sec := range buckets {
			if !time.Unix(sec+1, 0).After(s.AsOf) { // the second ended by AsOf: billing counted it
				delete(buckets, sec)
			}
		}
	}
}

// forget drops a tenant's snapshot and units.
func (v *View) forget(tenant string) {
	delete(v.snaps, tenant)
	for k := range v.local {
		if k.tenant == tenant {
			delete(v.local, k)
		}
	}
}

// replace swaps in a whole new set of snapshots (a fresh load of the bucket): tenants gone
// from it lose their quotas.
func (v *View) replace(snaps map[string]Snapshot) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for tenant := range v.snaps {
		if _, ok := snaps[tenant]; !ok {
			v.forget(tenant)
		}
	}
	for tenant, s := range snaps {
		v.set(tenant, s)
	}
}

func (s Snapshot) hasMeter(meter string) bool {
	for _, q := range s.Quotas {
		if q.Meter == meter {
			return true
		}
	}
	return false
}

// Snapshot returns a tenant's snapshot, and whether it has one.
func (v *View) Snapshot(tenant string) (Snapshot, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	s, ok := v.snaps[tenant]
	return s, ok
}

// Check says whether n more units of meter for tenant at now fit its hard quotas and which soft
// ones they go past, counting nothing. Callers that go on to do the work use Reserve, which
// checks and counts at once.
func (v *View) Check(tenant, meter string, n int64, now time.Time) Decision {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.decide(tenant, meter, n, now)
}

// limited reports whether the tenant has a quota on meter: the others (most requests) are
// answered under the read lock, without contending for the write lock.
func (v *View) limited(tenant, meter string) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	s, ok := v.snaps[tenant]
	return ok && s.hasMeter(meter)
}

// Record counts n units of meter that tenant used at now through this process (work done
// whatever the quotas, e.g. the platform's own events).
func (v *View) Record(tenant, meter string, n int64, now time.Time) {
	if !v.limited(tenant, meter) {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.count(tenant, meter, now.Unix(), n)
}

// Reserve checks n more units as Check does and, when they are allowed, counts them in the same
// step, so concurrent requests never pass together what only one of them fits. The caller
// releases the Reservation when it then does not do the work.
func (v *View) Reserve(tenant, meter string, n int64, now time.Time) (Decision, *Reservation) {
	if !v.limited(tenant, meter) {
		return Decision{Allow: true}, nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	d := v.decide(tenant, meter, n, now)
	if !d.Allow || !v.count(tenant, meter, now.Unix(), n) {
		return d, nil
	}
	return d, &Reservation{v: v, tenant: tenant, meter: meter, second: now.Unix(), n: n}
}

// count adds n units at second sec when the tenant has a quota on meter, and reports whether it
// did. Callers hold mu.
func (v *View) count(tenant, meter string, sec, n int64) bool {
	s, ok := v.snaps[tenant]
	if !ok || n == 0 || !s.hasMeter(meter) {
		return false
	}
	k := localKey{tenant, meter}
	buckets := v.local[k]
	if buckets == nil {
		buckets = map[int64]int64{}
		v.local[k] = buckets
	}
	buckets[sec] += n
	return true
}

func (v *View) uncount(tenant, meter string, sec, n int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	buckets := v.local[localKey{tenant, meter}]
	if buckets == nil {
		return // the tenant's quotas changed meanwhile: nothing of it is left to take back
	}
	if _, ok := buckets[sec]; !ok {
		return // a newer snapshot covers that second already
	}
	if buckets[sec] -= n; buckets[sec] <= 0 {
		delete(buckets, sec)
	}
}

// decide is Check's answer. Callers hold mu.
func (v *View) decide(tenant, meter string, n int64, now time.Time) Decision {
	d := Decision{Allow: true}
	s, ok := v.snaps[tenant]
	if !ok || n <= 0 {
		return d
	}
	for _, q := range s.Quotas {
		if q.Meter != meter {
			continue
		}
		used, resets := v.usage(tenant, s.AsOf, q, now)
		if used+n <= q.Limit {
			continue
		}
		e := Exceeded{Meter: q.Meter, Limit: q.Limit, Hard: q.Hard, Period: q.Period, Used: used + n, ResetsAt: resets, RetryAfter: resets.Sub(now)}
		if q.Hard {
			if d.Hard == nil {
				e.Used = used
				d.Hard = &e
			}
			continue
		}
		d.Soft = append(d.Soft, e)
	}
	d.Allow = d.Hard == nil
	return d
}

// usage returns a quota's usage at now, billing's plus this process's since asOf, and the end
// of its period. When the snapshot's period has ended (billing has not published the new one
// yet), the period starts over at zero at its resets_at and only this process's units since
// then count.
func (v *View) usage(tenant string, asOf time.Time, q Quota, now time.Time) (int64, time.Time) {
	from, used, resets := asOf, q.Used, q.ResetsAt
	if resets.IsZero() {
		resets = PeriodEnd(q.Period, now)
	}
	for !now.Before(resets) {
		if resets.After(from) {
			from = resets
		}
		used, resets = 0, PeriodEnd(q.Period, resets)
	}
	for sec, n := range v.local[localKey{tenant, q.Meter}] {
		if time.Unix(sec+1, 0).After(from) {
			used += n
		}
	}
	return used, resets
}
