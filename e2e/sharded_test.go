package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/chtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/services/analytics"
	chstore "github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
	"github.com/campaignmesh/campaignmesh/services/analytics/grpcapi"
)

// startShardedMesh starts the mesh over two throw-away ClickHouse servers, the two shards of
// cluster cm_analytics, with two writers: analytics is writer 0 of 2 (and the query API),
// analytics-writer-1 writer 1 alone. Writer i owns the stream partitions p % 2 == i, which are
// the rows of shard i.
func startShardedMesh(t *testing.T) *mesh {
	t.Helper()
	return startMeshWith(t, meshConfig{cluster: chtest.StartCluster(t, "cm_analytics", 2), writers: 2})
}

// chConn is a connection as the ClickHouse admin to shard i's database of the mesh, on the
// server itself (not through a fault test's proxy); it is closed when the test ends.
func (m *mesh) chConn(t *testing.T, shard int) driver.Conn {
	t.Helper()
	if m.cluster != nil {
		return m.cluster.Conn(t, shard, m.clickhouseDB, m.cluster.Admin)
	}
	admin := chtest.Admin(t)
	conn, err := ch.Open(&ch.Options{Addr: []string{chtest.Addr()}, Auth: ch.Auth{Database: m.clickhouseDB, Username: admin.Name, Password: admin.Password}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// shards is the number of ClickHouse shards of the mesh.
func (m *mesh) shards() int {
	if m.cluster != nil {
		return len(m.cluster.Addrs)
	}
	return 1
}

// loadEvent is event j of batch i of sender s of a load (ids prefixed tag): its content is a
// function of these, so a resent event is the same event. 400 subjects (every tenth known only
// by a device id), so every stream partition is used; three campaigns, variants a and b; per
// subject and batch 5 views, 3 taps and 2 purchases (2 more taps for every fourth subject) in
// that order over 10 minutes, at one of the 24 hours before base; property country on 4 of 5
// subjects.
func loadEvent(tag string, base time.Time, s, i, j int) *ingestv1.Event {
	u, k := (s*37+i*10+j/10)%400, j%10
	e := &ingestv1.Event{
		EventId: fmt.Sprintf("%s-%d-%d-%d", tag, s, i, j), UserId: fmt.Sprintf("user-%d", u),
		CampaignId: fmt.Sprintf("c%d", u%3), Variant: []string{"a", "b"}[u%2],
		Timestamp: timestamppb.New(base.Add(-time.Duration((i+s)%24+1)*time.Hour + time.Duration(k)*time.Minute)),
	}
	if u%10 == 9 {
		e.UserId, e.AnonymousId = "", fmt.Sprintf("device-%d", u)
	}
	switch {
	case k < 5:
		e.Type, e.Name = ingestv1.EventType_EVENT_TYPE_IMPRESSION, "view"
	case k < 8:
		e.Type, e.Name = ingestv1.EventType_EVENT_TYPE_CLICK, "tap"
	case u%4 == 0: // a quarter of the subjects never buy
		e.Type, e.Name = ingestv1.EventType_EVENT_TYPE_CLICK, "tap"
	default:
		e.Type, e.Name = ingestv1.EventType_EVENT_TYPE_CONVERSION, "purchase"
		e.Value = &ingestv1.Money{AmountMicros: int64(1000 * (u + 1)), Currency: "EUR"}
	}
	if c := []string{"DE", "FR", "US", "JP", ""}[u%5]; c != "" {
		e.Properties, _ = structpb.NewStruct(map[string]any{"country": c})
	}
	return e
}

// load is a bounded load of loadEvents sent through the gateway; only acknowledged ids count.
type load struct {
	tag  string
	base time.Time
	wg   sync.WaitGroup
	mu   sync.Mutex
	// acked are the ids of the events of acknowledged batches, subjects their users and devices.
	acked, subjects         map[string]bool
	batches, failed, resent int
}

// startLoad sends batches of 100 loadEvents from senders goroutines over gRPC through the
// gateway with token, each sender until it has sent batches batches and more() is false. Every
// fourth batch carries the first 10 events of its sender's batch before it again (a client
// retry inside another batch, which the stream does not recognise as a duplicate).
func startLoad(t *testing.T, m *mesh, token, tag string, senders, batches int, more func() bool) *load {
	t.Helper()
	l := &load{tag: tag, base: time.Now().UTC().Truncate(time.Hour), acked: map[string]bool{}, subjects: map[string]bool{}}
	client := ingestv1.NewIngestServiceClient(m.grpcConn(t))
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
	for s := 0; s < senders; s++ {
		l.wg.Add(1)
		go func(s int) {
			defer l.wg.Done()
			for i := 0; i < batches || (more() && i < 50*batches); i++ {
				req := &ingestv1.IngestEventsRequest{}
				for j := 0; j < 100; j++ {
					req.Events = append(req.Events, loadEvent(tag, l.base, s, i, j))
				}
				resend := i%4 == 3
				if resend {
					for j := 0; j < 10; j++ {
						req.Events[90+j] = loadEvent(tag, l.base, s, i-1, j)
					}
				}
				callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
				resp, err := client.IngestEvents(callCtx, req)
				cancel()
				l.mu.Lock()
				l.batches++
				if err == nil && resp.GetAccepted() == 100 {
					for _, e := range req.Events {
						l.acked[e.GetEventId()] = true
						l.subjects[e.GetUserId()+e.GetAnonymousId()] = true
					}
					if resend {
						l.resent += 10
					}
				} else {
					l.failed++
				}
				l.mu.Unlock()
				if err != nil {
					backOff(ctx)
				}
			}
		}(s)
	}
	return l
}

// ackedCount is the number of acknowledged event ids so far.
func (l *load) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// wait waits for every sender to end.
func (l *load) wait() { l.wg.Wait() }

// awaitLanded waits until every id in acked is in the mesh's events (read through the
// Distributed table on shard 0; commit rows left out), then until the writer inserts running
// then on each shard have ended (an insert's rows show in events before its materialized view
// has written the rollup). It returns how many times each stored event id is stored.
func awaitLanded(t *testing.T, m *mesh, acked map[string]bool) map[string]uint64 {
	t.Helper()
	conn := m.chConn(t, 0)
	var found map[string]uint64
	all := func() bool {
		var ok bool
		found, ok = storedIDs(conn, acked)
		return ok
	}
	waitFor(t, fmt.Sprintf("%d acknowledged events in ClickHouse", len(acked)), 2*time.Minute, func() bool {
		var n uint64
		return conn.QueryRow(context.Background(), `SELECT count() FROM events WHERE tenant_id != ''`).Scan(&n) == nil &&
			n >= uint64(len(acked)) && all()
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < m.shards(); i++ {
		if _, err := chstore.NewEventSink(m.chConn(t, i)).Settle(ctx, nil); err != nil {
			t.Fatalf("settle shard %d: %v", i, err)
		}
	}
	return found
}

// storedIDs returns how many times each event id is stored in events (commit rows left out), and
// whether every id of acked is among them; ok is false also when the query fails.
func storedIDs(conn driver.Conn, acked map[string]bool) (found map[string]uint64, ok bool) {
	found = map[string]uint64{}
	rows, err := conn.Query(context.Background(), `SELECT event_id, count() FROM events WHERE tenant_id != '' GROUP BY event_id`)
	if err != nil {
		return found, false
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var n uint64
		if rows.Scan(&id, &n) == nil {
			found[id] = n
		}
	}
	for id := range acked {
		if found[id] == 0 {
			return found, false
		}
	}
	return found, true
}

// counts runs a query of rows (key…, count) and returns the counts by the keys joined with "/".
func counts(t *testing.T, conn driver.Conn, query string, args ...any) map[string]uint64 {
	t.Helper()
	rows, err := conn.Query(context.Background(), query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	out := map[string]uint64{}
	cols := len(rows.Columns())
	for rows.Next() {
		keys := make([]string, cols-1)
		var n uint64
		dest := []any{}
		for i := range keys {
			dest = append(dest, &keys[i])
		}
		if err := rows.Scan(append(dest, &n)...); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		out[strings.Join(keys, "/")] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return out
}

// question is one query asked of the two-shard mesh and of one node.
type question struct {
	what       string
	mesh, node func() (proto.Message, error)
}

// ask is the question req, asked of the mesh through its gRPC client and of one node through
// its handler.
func ask[Req any, Resp proto.Message](what string, req Req,
	meshCtx context.Context, mesh func(context.Context, Req, ...grpc.CallOption) (Resp, error),
	nodeCtx context.Context, node func(context.Context, Req) (Resp, error)) question {
	return question{what: what,
		mesh: func() (proto.Message, error) { return mesh(meshCtx, req) },
		node: func() (proto.Message, error) { return node(nodeCtx, req) }}
}

// tenantOf is the tenant of the credential token.
func tenantOf(t *testing.T, m *mesh, token string) string {
	t.Helper()
	_, who, _ := m.rest(t, "GET", "/v1/auth/whoami", token, nil)
	tenant, _ := who["tenantId"].(string)
	if tenant == "" {
		t.Fatalf("whoami: %v", who)
	}
	return tenant
}

// Two writers over two ClickHouse shards; writer 1 is killed with kill -9 in the middle of the
// load, then crashes between an insert and its acks (the chaos build), and is started again
// each time (same admin address: it takes its lease back at once) while writer 0 keeps running.
// Then every acknowledged event is stored exactly once, in raw (through the Distributed events)
// and in the rollup, events resent in other batches included; each shard holds exactly the rows
// of its partitions, and one subject's events are all on one shard, in its partition.
func TestExactlyOncePerPartitionUnderKillOfOneOfTwoWriters(t *testing.T) {
	t.Parallel()
	m := startShardedMesh(t)
	_, login, _ := m.rest(t, "POST", "/v1/auth/login", "", m.bootstrapFile(t, "admin.json"))
	token, _ := login["accessToken"].(string)
	tenant := tenantOf(t, m, token)
	writer0, writer1 := m.procs["analytics"], m.procs["analytics-writer-1"]
	chaos := buildChaosAnalytics(t, m.dir)

	var faultsDone atomic.Bool
	l := startLoad(t, m, token, "k", 4, 20, func() bool { return !faultsDone.Load() })
	waitFor(t, "a first part of the load acknowledged", 30*time.Second, func() bool { return l.ackedCount() >= 2000 })
	t.Log("kill -9 writer 1")
	writer1.kill9()
	writer1.bin = chaos
	writer1.start("CM_ANALYTICS_FAULT_EXIT_AFTER_INSERTS=2")
	if !writer1.wait(30 * time.Second) { // it exits between its second insert and the acks
		t.Fatal("writer 1 did not reach the injected crash after an insert")
	}
	t.Log("writer 1 crashed between an insert and its acks")
	writer1.start()
	acked := l.ackedCount()
	waitFor(t, "more of the load acknowledged", 30*time.Second, func() bool { return l.ackedCount() >= acked+1000 })
	faultsDone.Store(true)
	l.wait()
	if !writer0.alive() || !writer1.alive() {
		t.Fatalf("writer 0 alive %v, writer 1 alive %v; want both running", writer0.alive(), writer1.alive())
	}

	found := awaitLanded(t, m, l.acked)
	var lost, doubled int
	for id := range l.acked {
		if found[id] == 0 {
			lost++
		}
	}
	for id, n := range found {
		if n != 1 {
			doubled++
			t.Errorf("event %s stored %d times", id, n)
		}
	}
	conn := m.chConn(t, 0)
	raw := counts(t, conn, `SELECT campaign_id, variant, type, count() FROM events WHERE tenant_id = ? GROUP BY campaign_id, variant, type`, tenant)
	rollup := counts(t, conn, `SELECT campaign_id, variant, type, countMerge(events) FROM events_hourly WHERE tenant_id = ? GROUP BY campaign_id, variant, type`, tenant)
	var rolledUp uint64
	for _, n := range rollup {
		rolledUp += n
	}
	t.Logf("batches %d (failed %d), events acked %d (resent in another batch %d), stored %d, rollup %d, lost %d, stored twice %d",
		l.batches, l.failed, len(l.acked), l.resent, len(found), rolledUp, lost, doubled)
	if lost != 0 || doubled != 0 || l.resent == 0 {
		t.Fatalf("lost %d, stored twice %d, resent %d; want 0, 0 and some", lost, doubled, l.resent)
	}
	if d := cmp.Diff(raw, rollup); d != "" || rolledUp != uint64(len(found)) {
		t.Errorf("rollup counts by campaign, variant and type differ from raw (-raw +rollup):\n%s", d)
	}

	// Each shard: only the partitions p % 2 == shard, all of them, its rollup matching its raw
	// rows; each subject in one partition (natsjs.Partition's) and on no other shard.
	subjectShard := map[string]int{}
	for shard := 0; shard < 2; shard++ {
		local := m.chConn(t, shard)
		parts := counts(t, local, `SELECT toString(stream_part), count() FROM events_local WHERE tenant_id != '' GROUP BY stream_part`)
		var rows uint64
		for p, n := range parts {
			var part int
			fmt.Sscan(p, &part)
			if part%2 != shard {
				t.Errorf("shard %d holds %d rows of partition %d", shard, n, part)
			}
			rows += n
		}
		if len(parts) != natsjs.Partitions/2 {
			t.Errorf("shard %d holds rows of partitions %v, want the %d with p %% 2 == %d", shard, parts, natsjs.Partitions/2, shard)
		}
		var rolled uint64
		if err := local.QueryRow(context.Background(), `SELECT countMerge(events) FROM events_hourly_local`).Scan(&rolled); err != nil {
			t.Fatal(err)
		}
		t.Logf("shard %d: %d rows in partitions %v, rollup %d", shard, rows, parts, rolled)
		if rolled != rows {
			t.Errorf("shard %d: rollup counts %d events, raw rows %d", shard, rolled, rows)
		}
		subjects := counts(t, local, `SELECT if(user_id != '', user_id, anonymous_id) AS subject, toString(any(stream_part)), uniqExact(stream_part)
			FROM events_local WHERE tenant_id = ? GROUP BY subject`, tenant)
		for key, n := range subjects {
			subject, p, _ := strings.Cut(key, "/")
			if other, ok := subjectShard[subject]; ok {
				t.Errorf("subject %s has events on shards %d and %d", subject, other, shard)
			}
			subjectShard[subject] = shard
			if n != 1 || p != fmt.Sprint(natsjs.Partition(tenant, subject)) {
				t.Errorf("subject %s: %d partitions on shard %d (one: %s), want only partition %d", subject, n, shard, p, natsjs.Partition(tenant, subject))
			}
		}
	}
	if len(subjectShard) != len(l.subjects) {
		t.Errorf("%d subjects stored, want the %d of the acknowledged events", len(subjectShard), len(l.subjects))
	}
}

// Two shards and two writers give the same answers as one node: after a load, the query API of
// the two-shard mesh (summary by variant, hourly series, breakdown by property, funnel; from the
// rollup and from raw events) answers exactly as the same service over one ClickHouse server
// holding the same events (copied from the shards into a database of the dev server, whose
// rollup its own materialized view builds).
func TestTwoShardsAnswerAsOneNode(t *testing.T) {
	t.Parallel()
	m := startShardedMesh(t)
	_, login, _ := m.rest(t, "POST", "/v1/auth/login", "", m.bootstrapFile(t, "admin.json"))
	token, _ := login["accessToken"].(string)
	tenant := tenantOf(t, m, token)
	l := startLoad(t, m, token, "q", 2, 12, func() bool { return false })
	l.wait()
	found := awaitLanded(t, m, l.acked)
	if l.failed != 0 || len(found) != len(l.acked) {
		t.Fatalf("%d batches failed, %d events stored of %d acknowledged", l.failed, len(found), len(l.acked))
	}

	// One node: the dev server, the schema migrated as analytics does it, the shards' events
	// copied in (the rollup and event ids filled by the materialized views as the rows arrive).
	ctx := context.Background()
	db := chtest.NewDatabase(t)
	if err := chstore.Migrate(ctx, chtest.Addr(), db, chstore.User(chtest.Writer(t))); err != nil {
		t.Fatal(err)
	}
	one := m.chConn(t, 0) // for the figures below
	node := chtest.Admin(t)
	nodeConn, err := ch.Open(&ch.Options{Addr: []string{chtest.Addr()}, Auth: ch.Auth{Database: db, Username: node.Name, Password: node.Password}})
	if err != nil {
		t.Fatal(err)
	}
	defer nodeConn.Close()
	r := m.cluster.Reader
	copySQL := fmt.Sprintf(`INSERT INTO events_local SELECT * FROM remote('%s', '%s', 'events_local', '%s', '%s') WHERE tenant_id != ''`,
		strings.Join(m.cluster.Addrs, ","), m.clickhouseDB, r.Name, r.Password)
	if err := nodeConn.Exec(ctx, copySQL); err != nil {
		t.Fatalf("copy the shards' events into one node: %v", err)
	}
	var copied, onShards uint64
	if err := nodeConn.QueryRow(ctx, `SELECT count() FROM events_local`).Scan(&copied); err != nil {
		t.Fatal(err)
	}
	if err := one.QueryRow(ctx, `SELECT count() FROM events WHERE tenant_id != ''`).Scan(&onShards); err != nil {
		t.Fatal(err)
	}
	if copied != onShards || copied != uint64(len(found)) {
		t.Fatalf("one node holds %d events, the shards %d, acknowledged %d", copied, onShards, len(found))
	}
	reader, err := chstore.OpenReader(ctx, chtest.Addr(), db, chstore.User(chtest.Reader(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	oneNode := grpcapi.NewServer(analytics.NewService(chstore.NewQueries(reader, nodeConn, chstore.DefaultQueryLimits), analytics.DefaultLimits))
	nodeCtx := authn.WithPrincipal(ctx, &authn.Principal{TenantID: tenant})

	sharded := analyticsv1.NewAnalyticsServiceClient(m.grpcConn(t))
	meshCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	start, end := timestamppb.New(l.base.Add(-26*time.Hour)), timestamppb.New(l.base.Add(time.Hour))
	const raw, rollup = analyticsv1.DataSource_DATA_SOURCE_RAW, analyticsv1.DataSource_DATA_SOURCE_ROLLUP
	campaigns := []string{"c0", "c1", "c2"}
	funnel := []*analyticsv1.FunnelStep{{EventName: "view"}, {EventName: "tap"}, {EventName: "purchase"}}
	var questions []question
	both := func(q question) { questions = append(questions, q) }
	summary := func(what string, req *analyticsv1.GetCampaignSummaryRequest) {
		both(ask(what, req, meshCtx, sharded.GetCampaignSummary, nodeCtx, oneNode.GetCampaignSummary))
	}
	series := func(what string, req *analyticsv1.GetMetricSeriesRequest) {
		both(ask(what, req, meshCtx, sharded.GetMetricSeries, nodeCtx, oneNode.GetMetricSeries))
	}
	breakdown := func(what string, req *analyticsv1.GetBreakdownRequest) {
		both(ask(what, req, meshCtx, sharded.GetBreakdown, nodeCtx, oneNode.GetBreakdown))
	}
	funnelOf := func(what string, req *analyticsv1.GetFunnelRequest) {
		both(ask(what, req, meshCtx, sharded.GetFunnel, nodeCtx, oneNode.GetFunnel))
	}
	for _, source := range []analyticsv1.DataSource{rollup, raw} {
		summary("summary by variant, "+source.String(), &analyticsv1.GetCampaignSummaryRequest{CampaignIds: campaigns, ByVariant: true, StartTime: start, EndTime: end, Source: source})
		summary("summary by variant, exact unique users, "+source.String(), &analyticsv1.GetCampaignSummaryRequest{CampaignIds: campaigns, ByVariant: true,
			StartTime: start, EndTime: end, Source: source, ExactUniqueUsers: true})
		series("hourly series, "+source.String(), &analyticsv1.GetMetricSeriesRequest{CampaignId: "c1", Granularity: analyticsv1.Granularity_GRANULARITY_HOUR,
			TimeZone: "UTC", StartTime: start, EndTime: end, Source: source})
	}
	series("hourly series in Asia/Kolkata, exact unique users", &analyticsv1.GetMetricSeriesRequest{CampaignId: "c2", Granularity: analyticsv1.Granularity_GRANULARITY_HOUR,
		TimeZone: "Asia/Kolkata", StartTime: start, EndTime: end, ExactUniqueUsers: true})
	breakdown("breakdown by property country", &analyticsv1.GetBreakdownRequest{Dimension: analyticsv1.Dimension_DIMENSION_PROPERTY, PropertyKey: "country",
		Metric: analyticsv1.Metric_METRIC_IMPRESSIONS, StartTime: start, EndTime: end})
	breakdown("breakdown of a campaign by property country, unique users", &analyticsv1.GetBreakdownRequest{CampaignId: "c0", Dimension: analyticsv1.Dimension_DIMENSION_PROPERTY,
		PropertyKey: "country", Metric: analyticsv1.Metric_METRIC_UNIQUE_USERS, StartTime: start, EndTime: end, ExactUniqueUsers: true})
	breakdown("breakdown by event name", &analyticsv1.GetBreakdownRequest{Dimension: analyticsv1.Dimension_DIMENSION_EVENT_NAME, StartTime: start, EndTime: end})
	funnelOf("funnel view, tap, purchase within 1 h", &analyticsv1.GetFunnelRequest{Steps: funnel, StartTime: start, EndTime: end, WindowSeconds: 3600})
	funnelOf("funnel view, tap, purchase within 5 min", &analyticsv1.GetFunnelRequest{Steps: funnel, StartTime: start, EndTime: end, WindowSeconds: 300})
	funnelOf("funnel of one campaign", &analyticsv1.GetFunnelRequest{Steps: []*analyticsv1.FunnelStep{{EventName: "view", CampaignId: "c1"}, {EventName: "purchase", CampaignId: "c1"}},
		StartTime: start, EndTime: end, WindowSeconds: 86400})

	var differ []string
	for _, q := range questions {
		got, err := q.mesh()
		if err != nil {
			t.Errorf("%s, two shards: %v", q.what, err)
			continue
		}
		want, err := q.node()
		if err != nil {
			t.Errorf("%s, one node: %v", q.what, err)
			continue
		}
		if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
			differ = append(differ, q.what)
			t.Errorf("%s: two shards differ from one node (-one node +two shards):\n%s", q.what, d)
		}
	}
	// The answers are not empty: every event is in the summary, and some users went the
	// whole funnel.
	s, err := sharded.GetCampaignSummary(meshCtx, &analyticsv1.GetCampaignSummaryRequest{CampaignIds: campaigns, StartTime: start, EndTime: end})
	if err != nil || s.GetTotal().GetEvents() != int64(len(found)) {
		t.Errorf("summary total %d events, want %d (%v)", s.GetTotal().GetEvents(), len(found), err)
	}
	f, err := sharded.GetFunnel(meshCtx, &analyticsv1.GetFunnelRequest{Steps: funnel, StartTime: start, EndTime: end, WindowSeconds: 3600})
	if steps := f.GetSteps(); err != nil || len(steps) != 3 || steps[2].GetUsers() == 0 {
		t.Errorf("funnel: %v %v, want users through all three steps", f, err)
	}
	sort.Strings(differ)
	t.Logf("%d events (%d resent in another batch); %d questions, %d answered differently %v; funnel %v",
		len(found), l.resent, len(questions), len(differ), differ, f.GetSteps())
}
