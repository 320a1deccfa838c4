package writer_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
)

// An event (tenant and event id) already stored is not stored again when a copy comes in another
// batch — seconds, minutes or an hour later (within the dedup window), from the same writer or
// after a restart, whose filter is rebuilt from the sink — while the new events of the same
// batches are stored, once.
func TestWriterStoresAnEventOnceAcrossBatches(t *testing.T) {
	key := func(tenant, id string) writer.EventKey { return writer.EventKey{Tenant: tenant, EventID: id} }
	type step struct {
		after   time.Duration // the clock moves this far first
		restart bool          // then a new writer replaces the running one
		publish func(t *testing.T, s *streams)
		stored  []writer.EventKey // stored once this step is written (besides earlier ones)
	}
	retryOf := func(after time.Duration, restart bool) []step {
		return []step{{
			publish: func(t *testing.T, s *streams) { s.publish(t, "b1", "e1", "e2") },
			stored:  []writer.EventKey{key("t1", "e1"), key("t1", "e2")},
		}, {
			after: after, restart: restart,
			publish: func(t *testing.T, s *streams) { s.publish(t, "b2", "e1", "e3") }, // a client retry of e1 with a new event
			stored:  []writer.EventKey{key("t1", "e3")},
		}}
	}
	type testCase struct {
		name  string
		cfg   writer.Config
		steps []step
		want  []writer.EventKey // stored, each once
		check func(t *testing.T, m *memSink)
	}
	var cases []testCase
	for _, after := range []time.Duration{time.Second, 5 * time.Minute, time.Hour} {
		for _, restart := range []bool{false, true} {
			how := "the same writer"
			if restart {
				how = "a restarted writer"
			}
			cases = append(cases, testCase{
				name:  fmt.Sprintf("a copy %s later, %s", after, how),
				steps: retryOf(after, restart),
				want:  []writer.EventKey{key("t1", "e1"), key("t1", "e2"), key("t1", "e3")},
			})
		}
	}
	cases = append(cases, testCase{
		// Both batches are in the stream before the writer starts: one set, one insert.
		name: "a copy in another batch of the same insert",
		steps: []step{{publish: func(t *testing.T, s *streams) {
			s.publish(t, "b1", "e1", "e2")
			s.publish(t, "b2", "e1", "e3")
		}, stored: []writer.EventKey{key("t1", "e1"), key("t1", "e2"), key("t1", "e3")}}},
		want: []writer.EventKey{key("t1", "e1"), key("t1", "e2"), key("t1", "e3")},
	}, testCase{
		name: "the same event id of another tenant is another event",
		steps: []step{{
			publish: func(t *testing.T, s *streams) { s.publish(t, "b1", "e1") },
			stored:  []writer.EventKey{key("t1", "e1")},
		}, {
			after:   time.Minute,
			publish: func(t *testing.T, s *streams) { s.publishRaw(t, "t2", "b2", batchOf("t2", "e1")) },
			stored:  []writer.EventKey{key("t2", "e1")},
		}},
		want: []writer.EventKey{key("t1", "e1"), key("t2", "e1")},
	}, testCase{
		// A filter sized for one event holds every bit after 500: almost every new event is a
		// false positive of it, which the sink does not confirm.
		name: "a false positive of the filter does not drop a new event",
		cfg:  writer.Config{BatchRows: 10000, MaxWait: 100 * time.Millisecond, DedupCapacity: 1},
		steps: []step{{
			publish: func(t *testing.T, s *streams) { s.publish(t, "b1", ids("a", 500)...) },
			stored:  keys("t1", ids("a", 500)),
		}, {
			after:   time.Second,
			publish: func(t *testing.T, s *streams) { s.publish(t, "b2", slices.Concat(ids("n", 50), ids("a", 10))...) },
			stored:  keys("t1", ids("n", 50)),
		}},
		want: keys("t1", slices.Concat(ids("a", 500), ids("n", 50))),
		check: func(t *testing.T, m *memSink) {
			m.mu.Lock()
			defer m.mu.Unlock()
			if m.seenKeys < 35 { // the 10 copies and about 49 of the 50 new events
				t.Errorf("%d keys looked up in the sink, want most of the 60 of the second batch (the filter is full)", m.seenKeys)
			}
		},
	})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newStreams(t)
			m := newMemSink(s)
			cfg := tc.cfg
			if cfg == (writer.Config{}) {
				cfg = quick
			}
			clock := meshtest.NewClock(time.Now())
			cancel, result := s.run(t, m, cfg, writer.WithClock(clock.Now))
			var want []writer.EventKey
			for i, st := range tc.steps {
				clock.Advance(st.after)
				if st.restart {
					stopped(t, cancel, result)
					cancel, result = s.run(t, m, cfg, writer.WithClock(clock.Now))
				}
				st.publish(t, s)
				want = append(want, st.stored...)
				meshtest.Eventually(t, 20*time.Second, func() bool {
					counts, _ := m.keyCounts()
					return s.inStream(t) == 0 && !slices.ContainsFunc(want, func(k writer.EventKey) bool { return counts[k] == 0 })
				}, "step %d: the writer did not store and acknowledge every batch", i)
			}
			stopped(t, cancel, result)

			counts, rows := m.keyCounts()
			for _, k := range tc.want {
				if counts[k] != 1 {
					t.Errorf("event %s of %s stored %d times, want once", k.EventID, k.Tenant, counts[k])
				}
			}
			if len(counts) != len(tc.want) || rows != len(tc.want) {
				t.Errorf("%d events in %d rows stored, want %d in as many rows", len(counts), rows, len(tc.want))
			}
			if _, _, problems := m.stats(); len(problems) > 0 {
				t.Errorf("exactly-once breaches:\n%s", strings.Join(problems, "\n"))
			}
			if tc.check != nil {
				tc.check(t, m)
			}
		})
	}
}

// The writer lets the sink drop the keys older than the dedup window, about hourly by its clock.
func TestWriterDropsKeysOlderThanTheWindow(t *testing.T) {
	s := newStreams(t)
	m := newMemSink(s)
	start := time.Now()
	clock := meshtest.NewClock(start)
	cfg := quick
	cfg.DedupWindow = 24 * time.Hour
	cancel, result := s.run(t, m, cfg, writer.WithClock(clock.Now))
	defer stopped(t, cancel, result)
	forgets := func(want time.Time) func() bool {
		return func() bool {
			m.mu.Lock()
			defer m.mu.Unlock()
			return m.forgetBefore.Equal(want)
		}
	}
	meshtest.Eventually(t, 20*time.Second, forgets(start.Add(-24*time.Hour)), "the writer did not drop old keys at start")
	clock.Advance(61 * time.Minute)
	meshtest.Eventually(t, 20*time.Second, forgets(start.Add(61*time.Minute-24*time.Hour)), "the writer did not drop old keys an hour later")
}

func keys(tenant string, ids []string) []writer.EventKey {
	out := make([]writer.EventKey, len(ids))
	for i, id := range ids {
		out[i] = writer.EventKey{Tenant: tenant, EventID: id}
	}
	return out
}
