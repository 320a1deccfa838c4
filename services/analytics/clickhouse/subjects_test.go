package clickhouse_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/chtest"
	"github.com/campaignmesh/campaignmesh/services/analytics"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
)

// subjectRows is the data set of the subject tests: tenants t1, t2 and t3 with users u00–u59,
// every third of them also seen with an anonymous id (anon-<user>) in some events and in some
// events only with it, over campaigns c1–c3 and a dozen hours of two days; t3's users have
// the same ids as t1's and t2's. One user id holds a quote and a backslash, another is its
// prefix.
func subjectRows() []writer.Row {
	base := at("2026-05-31T20:00:00Z") // two days, two months
	var rows []writer.Row
	add := func(tenant, user, anon, campaign string, when time.Time) {
		e := &ingestv1.AcceptedEvent{TenantId: tenant, ReceivedAt: timestamppb.New(when), CorrectedTime: timestamppb.New(when),
			Event: &ingestv1.Event{EventId: fmt.Sprintf("%s-%d", tenant, len(rows)), Type: ingestv1.EventType_EVENT_TYPE_IMPRESSION,
				Name: "view", UserId: user, AnonymousId: anon, CampaignId: campaign, Variant: "a", Timestamp: timestamppb.New(when),
				Value:   &ingestv1.Money{AmountMicros: int64(len(rows)), Currency: "USD"},
				Context: &ingestv1.EventContext{Ip: "192.0.2.1", Device: "ios", App: "shop", Locale: "de-DE", UserAgent: "ua"}}}
		e.Event.Properties, _ = structpb.NewStruct(map[string]any{"plan": "pro", "n": float64(len(rows))})
		rows = append(rows, writer.Row{Event: e, Part: writer.PartOf(e), Seq: uint64(1 + len(rows)/100)})
	}
	for _, tenant := range []string{"t1", "t2", "t3"} {
		users := []string{`o'brien\`, `o'brien`}
		for u := range 60 {
			users = append(users, fmt.Sprintf("u%02d", u))
		}
		for i, user := range users {
			for k := range 4 {
				when := base.Add(time.Duration((i*7+k*5)%12)*time.Hour + time.Duration(k*13)*time.Minute)
				campaign := fmt.Sprintf("c%d", 1+(i+k)%3)
				switch {
				case i%3 == 0 && k == 1:
					add(tenant, user, "anon-"+user, campaign, when) // linked
				case i%3 == 0 && k == 2:
					add(tenant, "", "anon-"+user, campaign, when) // before sign-in
				default:
					add(tenant, user, "", campaign, when)
				}
			}
		}
	}
	return rows
}

// hourStats are, per (tenant, campaign, hour), the events and distinct users (exact and
// approximate) of one shard.
type hourStats map[string][3]uint64

func statsOf(t *testing.T, conn driver.Conn, q string) hourStats {
	t.Helper()
	rows, err := conn.Query(context.Background(), q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	out := hourStats{}
	for rows.Next() {
		var tenant, campaign string
		var hour time.Time
		var n [3]uint64
		if err := rows.Scan(&tenant, &campaign, &hour, &n[0], &n[1], &n[2]); err != nil {
			t.Fatal(err)
		}
		out[tenant+"/"+campaign+"/"+hour.UTC().Format(time.RFC3339)] = n
	}
	return out
}

// rollupStats reads the rollup of a shard; rawStats computes the same from its raw events.
func rollupStats(t *testing.T, conn driver.Conn) hourStats {
	return statsOf(t, conn, `SELECT tenant_id, campaign_id, hour, countMerge(events), uniqExactMerge(users), uniqCombinedMerge(users_approx)
		FROM events_hourly_local GROUP BY tenant_id, campaign_id, hour`)
}

func rawStats(t *testing.T, conn driver.Conn) hourStats {
	return statsOf(t, conn, `SELECT tenant_id, campaign_id, toStartOfHour(event_time) AS hour, count(),
		uniqExact(if(user_id != '', user_id, anonymous_id)), uniqCombined(if(user_id != '', user_id, anonymous_id))
		FROM events_local WHERE tenant_id != '' GROUP BY tenant_id, campaign_id, hour`)
}

// subjectCounts are the raw rows per tenant and user (or anonymous) id, on every shard.
func subjectCounts(t *testing.T, conns []driver.Conn) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, conn := range conns {
		rows, err := conn.Query(context.Background(), `SELECT tenant_id, user_id, anonymous_id, count() FROM events_local
			WHERE tenant_id != '' GROUP BY tenant_id, user_id, anonymous_id`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var tenant, user, anon string
			var n uint64
			if err := rows.Scan(&tenant, &user, &anon, &n); err != nil {
				t.Fatal(err)
			}
			out[tenant+"|"+user+"|"+anon] += n
		}
		rows.Close()
	}
	return out
}

// counterValue is the value of counter name with label table = table in reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name, table string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "table" && l.GetValue() == table {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// runEraser runs an Eraser over store (no writers: no fence) until the test ends.
func runEraser(t *testing.T, store analytics.SubjectStore, window time.Duration) (*analytics.Participant, *analytics.Eraser, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	e := analytics.NewEraser(store, nil, nil, analytics.ErasureConfig{Window: window}, slog.New(slog.DiscardHandler), reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return analytics.NewParticipant(store, e), e, reg
}

// A batch of 50 erasures of two tenants, started within the window, runs one deletion
// mutation per shard; afterwards none of their events is left on any shard, every other
// subject's events are all there, each erasure counts the events it erased, and the rollup
// equals what the remaining raw events make: in every hour the distinct users dropped by
// exactly the erased subjects that were in it, and no event is counted twice or lost. On one
// server and on a cluster of two shards.
func TestErasureBatchesIntoOneMutationPerShard(t *testing.T) {
	for _, shards := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d shards", shards), func(t *testing.T) {
			var store *clickhouse.Queries
			var conns []driver.Conn
			if shards == 1 {
				var conn driver.Conn
				store, conn = oneNodeStore(t, subjectRows())
				conns = []driver.Conn{conn}
			} else {
				s := newShardedStore(t, subjectRows())
				store, conns = s.viaShard[0], s.writers
			}
			beforeCounts := subjectCounts(t, conns)
			var beforeRaw []hourStats
			for _, conn := range conns {
				if got, want := rollupStats(t, conn), rawStats(t, conn); !maps.Equal(got, want) {
					t.Fatal("the rollup does not match the raw events before the erasure")
				}
				beforeRaw = append(beforeRaw, rawStats(t, conn))
			}

			p, _, reg := runEraser(t, store, time.Second)
			ctx := context.Background()
			type request struct {
				tenant, id string
				ids        []analytics.Identifier
			}
			var requests []request
			erased := map[string]bool{} // tenant|subject key
			for i := range 50 {
				tenant := []string{"t1", "t2"}[i%2]
				user := fmt.Sprintf("u%02d", i/2*2) // u00, u02, … each in both tenants
				if i == 48 {
					user = `o'brien\`
				}
				ids := []analytics.Identifier{{Kind: analytics.KindUserID, Value: user}, {Kind: analytics.KindEmail, Value: user + "@example.com"}}
				erased[tenant+"|"+user] = true
				// Linked anonymous ids, as dsr passes them after ResolveSubject.
				linked, err := p.Resolve(ctx, tenant, fmt.Sprintf("dsr-%d", i), ids)
				if err != nil {
					t.Fatal(err)
				}
				for _, l := range linked {
					erased[tenant+"|"+l.Value] = true
				}
				requests = append(requests, request{tenant, fmt.Sprintf("dsr-%d", i), append(ids, linked...)})
			}
			var drops []map[string]uint64
			for _, conn := range conns {
				drops = append(drops, erasedPerHour(t, conn, erased))
			}
			for _, r := range requests {
				st, err := p.StartErasure(ctx, r.tenant, r.id, r.ids)
				if err != nil {
					t.Fatal(err)
				}
				if st.Done {
					t.Fatalf("%s is done before the batch ran", r.id)
				}
			}
			for _, r := range requests {
				meshtest.Eventually(t, time.Minute, func() bool {
					st, err := p.GetErasure(ctx, r.tenant, r.id)
					return err == nil && st.Done
				}, "erasure %s not done", r.id)
			}
			if got := counterValue(t, reg, "cm_analytics_erasure_mutations_total", analytics.TableEvents); got != float64(shards) {
				t.Fatalf("deletion mutations = %v, want one per shard (%d)", got, shards)
			}

			after := subjectCounts(t, conns)
			for key, n := range beforeCounts {
				parts := splitKey(key)
				tenant, user, anon := parts[0], parts[1], parts[2]
				gone := erased[tenant+"|"+user] || erased[tenant+"|"+anon]
				if gone && after[key] != 0 {
					t.Errorf("%s: %d events left after the erasure", key, after[key])
				}
				if !gone && after[key] != n {
					t.Errorf("%s: %d events, want %d (not erased)", key, after[key], n)
				}
			}
			for _, r := range requests {
				st, _ := p.GetErasure(ctx, r.tenant, r.id)
				var want uint64
				for key, n := range beforeCounts {
					parts := splitKey(key)
					for _, id := range r.ids {
						if parts[0] == r.tenant && id.Kind != analytics.KindEmail && (parts[1] == id.Value || parts[2] == id.Value) {
							want += n
							break
						}
					}
				}
				if st.Counts["events"] != int64(want) || st.Remaining != 0 || want == 0 {
					t.Errorf("%s: status %+v, want %d events erased", r.id, st, want)
				}
			}
			for k, conn := range conns {
				raw, rollup := rawStats(t, conn), rollupStats(t, conn)
				if !maps.Equal(rollup, raw) {
					for key := range rollup {
						if rollup[key] != raw[key] {
							t.Errorf("shard %d %s: rollup %v, raw events %v", k, key, rollup[key], raw[key])
						}
					}
					t.Fatalf("shard %d: the rollup does not match the raw events after the erasure", k)
				}
				// The distinct users of each hour dropped by the erased subjects it held.
				affected := 0
				for key, before := range beforeRaw[k] {
					drop := drops[k][key]
					if drop > 0 {
						affected++
					}
					if got, want := raw[key][1], before[1]-drop; got != want {
						t.Errorf("shard %d %s: %d distinct users, want %d (%d erased of %d)", k, key, got, want, drop, before[1])
					}
				}
				if affected == 0 {
					t.Fatalf("shard %d: no hour held an erased subject", k)
				}
			}
		})
	}
}

func splitKey(key string) []string {
	var parts []string
	start := 0
	for i := range len(key) {
		if key[i] == '|' {
			parts = append(parts, key[start:i])
			start = i + 1
		}
	}
	return append(parts, key[start:])
}

// erasedPerHour counts, per hour key of one shard, the distinct subjects (the rollup's user
// key: the user id, else the anonymous id) of its events that erased names by tenant and
// user or anonymous id.
func erasedPerHour(t *testing.T, conn driver.Conn, erased map[string]bool) map[string]uint64 {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT DISTINCT tenant_id, campaign_id, toStartOfHour(event_time), user_id, anonymous_id
		FROM events_local WHERE tenant_id != ''`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	subjects := map[string]map[string]bool{}
	for rows.Next() {
		var tenant, campaign, user, anon string
		var hour time.Time
		if err := rows.Scan(&tenant, &campaign, &hour, &user, &anon); err != nil {
			t.Fatal(err)
		}
		if !erased[tenant+"|"+user] && !erased[tenant+"|"+anon] {
			continue
		}
		key := tenant + "/" + campaign + "/" + hour.UTC().Format(time.RFC3339)
		if subjects[key] == nil {
			subjects[key] = map[string]bool{}
		}
		subject := user
		if subject == "" {
			subject = anon
		}
		subjects[key][subject] = true
	}
	out := map[string]uint64{}
	for key, set := range subjects {
		out[key] = uint64(len(set))
	}
	return out
}

// ResolveSubject links one hop within the tenant: a user's anonymous ids, an anonymous id's
// users, never the given ones again, never another tenant's. ExportSubject streams exactly the
// subject's events — those whose user or anonymous id is one of the identifiers — with every
// column; emails match nothing.
func TestParticipantResolvesAndExports(t *testing.T) {
	store, conn := oneNodeStore(t, subjectRows())
	p := analytics.NewParticipant(store, nil)
	ctx := context.Background()
	user := func(v string) analytics.Identifier { return analytics.Identifier{Kind: analytics.KindUserID, Value: v} }
	anon := func(v string) analytics.Identifier {
		return analytics.Identifier{Kind: analytics.KindAnonymousID, Value: v}
	}

	for _, tc := range []struct {
		name string
		ids  []analytics.Identifier
		want []analytics.Identifier
	}{
		{"user to its anonymous id", []analytics.Identifier{user("u01")}, []analytics.Identifier{anon("anon-u01")}},
		{"anonymous id to its user", []analytics.Identifier{anon("anon-u01")}, []analytics.Identifier{user("u01")}},
		{"nothing new", []analytics.Identifier{user("u01"), anon("anon-u01")}, nil},
		{"a user never seen with one", []analytics.Identifier{user("u00")}, nil},
		{"a quote and a backslash", []analytics.Identifier{user(`o'brien\`)}, []analytics.Identifier{anon(`anon-o'brien\`)}},
		{"emails link nothing", []analytics.Identifier{{Kind: analytics.KindEmail, Value: "u01"}}, nil},
	} {
		got, err := p.Resolve(ctx, "t1", "dsr-1", tc.ids)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: linked %v, want %v", tc.name, got, tc.want)
		}
	}
	if got, err := p.Resolve(ctx, "t9", "dsr-1", []analytics.Identifier{user("u01")}); err != nil || len(got) != 0 {
		t.Fatalf("another tenant's links: %v, %v", got, err)
	}

	ids := []analytics.Identifier{user("u01"), anon("anon-u01"), {Kind: analytics.KindEmail, Value: "x@example.com"}}
	var events []analytics.SubjectEvent
	if err := p.Export(ctx, "t1", "dsr-1", ids, func(e analytics.SubjectEvent) error { events = append(events, e); return nil }); err != nil {
		t.Fatal(err)
	}
	want := scalar(t, conn, `SELECT count() FROM events_local WHERE tenant_id = 't1' AND (user_id = 'u01' OR anonymous_id = 'anon-u01')`)
	if uint64(len(events)) != want || want != 4 {
		t.Fatalf("exported %d events, want %d (4)", len(events), want)
	}
	for _, e := range events {
		if e.UserID != "u01" && e.AnonymousID != "anon-u01" {
			t.Fatalf("exported another subject's event %+v", e)
		}
		if e.Type != "impression" || e.Name != "view" || e.Currency != "USD" || e.IP != "192.0.2.1" || e.Device != "ios" ||
			e.UserAgent != "ua" || e.App != "shop" || e.Locale != "de-DE" || e.Time.IsZero() || e.ClientTime.IsZero() ||
			e.ReceivedTime.IsZero() || !slices.Equal(e.PropKeys, []string{"n", "plan"}) || e.PropValues[1] != "pro" {
			t.Fatalf("exported event lacks columns: %+v", e)
		}
	}
	// A failing stream stops the export.
	stop := fmt.Errorf("stream broken")
	n := 0
	if err := p.Export(ctx, "t1", "dsr-1", ids, func(analytics.SubjectEvent) error { n++; return stop }); err != stop || n != 1 {
		t.Fatalf("export after the stream broke: %v after %d events", err, n)
	}
}

// deadLetters stands for the dead-letter cleanup (another package's adapter over the
// dead-letter stream): it records its calls and fails the first.
type deadLetters struct {
	mu    sync.Mutex
	calls []string
}

func (d *deadLetters) DeleteSubject(_ context.Context, tenant string, ids []string) (int64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, tenant+":"+strings.Join(ids, ","))
	if len(d.calls) == 1 {
		return 0, fmt.Errorf("dead-letter stream unavailable")
	}
	return 3, nil
}

// While ClickHouse cannot be reached an erasure stays not done, saying it tries again; once
// the store answers it completes, and a failed dead-letter cleanup is tried again too, its
// count added as "dead_letters".
func TestErasureRetriesUntilItCompletes(t *testing.T) {
	_, conn := oneNodeStore(t, subjectRows())
	var db string
	if err := conn.QueryRow(context.Background(), `SELECT currentDatabase()`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	proxy := chtest.NewProxy(t)
	viaProxy, err := clickhouse.OpenReader(context.Background(), proxy.Addr(), db, clickhouse.User(chtest.Writer(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { viaProxy.Close() })
	store := clickhouse.NewQueries(viaProxy, viaProxy, clickhouse.DefaultQueryLimits)
	dead := &deadLetters{}
	e := analytics.NewEraser(store, nil, dead, analytics.ErasureConfig{Window: 50 * time.Millisecond}, slog.New(slog.DiscardHandler), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = e.Run(ctx) }()

	proxy.Cut()
	e.Start("t1", "r1", []string{"u05"})
	meshtest.Eventually(t, 10*time.Second, func() bool {
		st, err := e.Status("t1", "r1")
		return err == nil && !st.Done && strings.HasSuffix(st.Message, "; trying again")
	}, "the erasure does not say it tries again while the store is away")
	proxy.Restore()
	meshtest.Eventually(t, 30*time.Second, func() bool {
		st, err := e.Status("t1", "r1")
		return err == nil && st.Done
	}, "the erasure did not complete once the store came back")
	st, _ := e.Status("t1", "r1")
	if st.Counts["events"] != 4 || st.Counts["dead_letters"] != 3 || st.Remaining != 0 {
		t.Fatalf("status %+v, want 4 events and 3 dead letters", st)
	}
	dead.mu.Lock()
	defer dead.mu.Unlock()
	if len(dead.calls) != 2 || dead.calls[1] != "t1:u05" {
		t.Fatalf("dead-letter cleanups %v, want two for t1:u05", dead.calls)
	}
	if n := scalar(t, conn, `SELECT count() FROM events_local WHERE tenant_id = 't1' AND user_id = 'u05'`); n != 0 {
		t.Fatalf("%d events of u05 left", n)
	}
}

// A process that dies in the middle of an erasure — here between a rebuilt hour's rollup
// delete and its insert, the worst point: the rollup lacks those hours — loses its in-memory
// state; dsr then starts the erasure again in the restarted process (GetErasure answers
// NOT_FOUND), which finds the subject's raw events still there (they are deleted only after
// the rebuild), rebuilds the same hours and completes: the rollup equals the raw events again.
func TestErasureRestartedAfterAnInterruptedRebuild(t *testing.T) {
	store, conn := oneNodeStore(t, subjectRows())
	ctx, crash := context.WithCancel(context.Background())
	dying := clickhouse.NewQueries(conn, conn, clickhouse.DefaultQueryLimits).WithRebuildPause(func(context.Context, int) { crash() })
	first := analytics.NewEraser(dying, nil, nil, analytics.ErasureConfig{Window: 10 * time.Millisecond}, slog.New(slog.DiscardHandler), nil)
	stopped := make(chan struct{})
	go func() { defer close(stopped); _ = first.Run(ctx) }()
	first.Start("t1", "r1", []string{"u04", "anon-u04"})
	<-stopped
	if maps.Equal(rollupStats(t, conn), rawStats(t, conn)) {
		t.Fatal("the interrupted rebuild left the rollup whole: it did not stop between delete and insert")
	}
	if n := scalar(t, conn, `SELECT count() FROM events_local WHERE tenant_id = 't1' AND (user_id = 'u04' OR anonymous_id = 'anon-u04')`); n != 4 {
		t.Fatalf("%d events of u04 after the crash, want its 4 (deleted only after the rebuild)", n)
	}

	p, _, _ := runEraser(t, store, 10*time.Millisecond)
	if _, err := p.GetErasure(context.Background(), "t1", "r1"); !apperr.HasCode(err, apperr.NotFound) {
		t.Fatalf("the restarted process knows the erasure: %v", err)
	}
	ids := []analytics.Identifier{{Kind: analytics.KindUserID, Value: "u04"}, {Kind: analytics.KindAnonymousID, Value: "anon-u04"}}
	if _, err := p.StartErasure(context.Background(), "t1", "r1", ids); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 30*time.Second, func() bool {
		st, err := p.GetErasure(context.Background(), "t1", "r1")
		return err == nil && st.Done && st.Counts["events"] == 4
	}, "the erasure started again did not complete")
	if got, want := rollupStats(t, conn), rawStats(t, conn); !maps.Equal(got, want) {
		t.Fatalf("the rollup %v does not match the raw events %v after the erasure", got, want)
	}
}

// An erasure with nothing to delete — a subject never seen, or one erased already (dsr starts
// it again after a restart) — completes, verified, without a mutation: a mutation rewrites
// whole parts.
func TestErasureOfNothingRunsNoMutation(t *testing.T) {
	store, _ := oneNodeStore(t, subjectRows())
	p, _, reg := runEraser(t, store, 10*time.Millisecond)
	ctx := context.Background()
	// Never seen at all; seen in other tenants only.
	for _, subject := range []analytics.Subject{{Tenant: "t1", Value: "nobody"}, {Tenant: "t9", Value: "u01"}} {
		ids := []analytics.Identifier{{Kind: analytics.KindUserID, Value: subject.Value}}
		if _, err := p.StartErasure(ctx, subject.Tenant, "r1", ids); err != nil {
			t.Fatal(err)
		}
		meshtest.Eventually(t, 30*time.Second, func() bool {
			st, err := p.GetErasure(ctx, subject.Tenant, "r1")
			return err == nil && st.Done && st.Counts["events"] == 0
		}, "the erasure of %v did not complete", subject)
	}
	for _, table := range []string{analytics.TableEvents, analytics.TableRollup} {
		if n := counterValue(t, reg, "cm_analytics_erasure_mutations_total", table); n != 0 {
			t.Errorf("%v mutations of %s for nothing to erase", n, table)
		}
	}
}

// countingLinks counts the look-ups of links the participant makes on the real store.
type countingLinks struct {
	analytics.SubjectStore
	calls atomic.Int32
}

func (c *countingLinks) Links(ctx context.Context, tenant string, users, anons []string, limit int) ([]analytics.Link, error) {
	c.calls.Add(1)
	return c.SubjectStore.Links(ctx, tenant, users, anons, limit)
}

// ResolveSubject calls arriving together share one look-up (each scans the tenant's events):
// 30 concurrent resolves of different subjects cost at most two scans (one may start before
// the others arrive), and each caller gets exactly its own links.
func TestConcurrentResolvesShareOneLookUp(t *testing.T) {
	store, _ := oneNodeStore(t, subjectRows())
	counting := &countingLinks{SubjectStore: store}
	p := analytics.NewParticipant(counting, nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 30)
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := fmt.Sprintf("u%02d", i)
			got, err := p.Resolve(ctx, "t1", fmt.Sprintf("dsr-%d", i), []analytics.Identifier{{Kind: analytics.KindUserID, Value: u}})
			var want []analytics.Identifier
			if i%3 == 1 { // subjectRows links the user of every third index (its list starts with two others)
				want = []analytics.Identifier{{Kind: analytics.KindAnonymousID, Value: "anon-" + u}}
			}
			if err != nil || !slices.Equal(got, want) {
				errs <- fmt.Errorf("resolve %s: %v %v, want %v", u, got, err, want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := counting.calls.Load(); n < 1 || n > 2 {
		t.Errorf("%d look-ups for 30 concurrent resolves, want 1 or 2", n)
	}
}
