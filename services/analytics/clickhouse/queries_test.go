package clickhouse_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// ts is a request time.
func ts(s string) analytics.RequestTime { return analytics.At(at(s)) }

type ev struct {
	tenant, id, typ, name, user, anon, campaign, variant, when string
	value                                                      int64
	device, country                                            string
}

var types = map[string]ingestv1.EventType{"impression": ingestv1.EventType_EVENT_TYPE_IMPRESSION,
	"click": ingestv1.EventType_EVENT_TYPE_CLICK, "conversion": ingestv1.EventType_EVENT_TYPE_CONVERSION}

// The known data set: tenant t1 around the Europe/Berlin switch to summer time
// (2026-03-29 01:00 UTC), and one event of tenant t2 that t1 must never see.
var dataset = []ev{
	{"t1", "e1", "impression", "view", "u1", "", "c1", "a", "2026-03-28T10:00:00Z", 1000, "", ""},
	{"t1", "e2", "click", "tap", "u1", "", "c1", "a", "2026-03-28T10:05:00Z", 500, "", ""},
	{"t1", "e3", "conversion", "purchase", "u1", "", "c1", "a", "2026-03-28T10:30:00Z", 20_000_000, "", ""},
	{"t1", "e4", "impression", "view", "u2", "", "c1", "b", "2026-03-28T23:30:00Z", 0, "", ""},
	{"t1", "e5", "click", "tap", "u2", "", "c1", "b", "2026-03-29T00:10:00Z", 700, "", ""},
	{"t1", "e6", "impression", "view", "", "anon-3", "c1", "a", "2026-03-29T01:30:00Z", 0, "", ""},
	{"t1", "e7", "impression", "view", "u1", "", "c1", "a", "2026-03-29T22:30:00Z", 0, "", ""},
	{"t1", "e8", "impression", "view", "u4", "", "c2", "", "2026-03-28T12:00:00Z", 0, "ios", "DE"},
	// u5 buys before viewing: not a funnel conversion in order.
	{"t1", "e9", "conversion", "purchase", "u5", "", "c3", "", "2026-03-28T09:00:00Z", 0, "", ""},
	{"t1", "e10", "impression", "view", "u5", "", "c3", "", "2026-03-28T09:10:00Z", 0, "", ""},
	{"t2", "x1", "impression", "view", "u1", "", "c1", "a", "2026-03-28T10:00:00Z", 99, "", ""},
}

func load(t *testing.T, events []ev, seq uint64) *analytics.Service {
	t.Helper()
	return analytics.NewService(newQueries(t, open(t, events, seq), clickhouse.DefaultQueryLimits), analytics.DefaultLimits)
}

// newQueries is the query store as analytics runs it: queries on a connection of the read-only
// reader user to writer's database, deletions on writer.
func newQueries(t *testing.T, writer driver.Conn, limits clickhouse.QueryLimits) *clickhouse.Queries {
	t.Helper()
	var db string
	if err := writer.QueryRow(context.Background(), `SELECT currentDatabase()`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	reader, err := clickhouse.OpenReader(context.Background(), chtest.Addr(), db, clickhouse.User(chtest.Reader(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reader.Close() })
	return clickhouse.NewQueries(reader, writer, limits)
}

func open(t *testing.T, events []ev, seq uint64) driver.Conn {
	t.Helper()
	conn, err := clickhouse.Open(context.Background(), chtest.Addr(), chtest.NewDatabase(t), clickhouse.User(chtest.Writer(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if len(events) > 0 {
		insert(t, conn, events, seq)
	}
	return conn
}

func insert(t *testing.T, conn driver.Conn, events []ev, seq uint64) {
	t.Helper()
	if err := clickhouse.NewEventSink(conn).InsertAll(context.Background(), rowsOf(events, seq)); err != nil {
		t.Fatal(err)
	}
}

// rowsOf is events as the writer's rows of the batch of sequence seq.
func rowsOf(events []ev, seq uint64) []writer.Row {
	var rows []writer.Row
	for _, e := range events {
		when := at(e.when)
		ae := &ingestv1.AcceptedEvent{TenantId: e.tenant, ReceivedAt: timestamppb.New(when), CorrectedTime: timestamppb.New(when),
			Event: &ingestv1.Event{EventId: e.id, Type: types[e.typ], Name: e.name, UserId: e.user, AnonymousId: e.anon,
				CampaignId: e.campaign, Variant: e.variant, Timestamp: timestamppb.New(when),
				Context: &ingestv1.EventContext{Device: e.device}}}
		if e.value != 0 {
			ae.Event.Value = &ingestv1.Money{AmountMicros: e.value, Currency: "USD"}
		}
		if e.country != "" {
			ae.Event.Properties, _ = structpb.NewStruct(map[string]any{"country": e.country})
		}
		rows = append(rows, writer.Row{Event: ae, Seq: seq})
	}
	return rows
}

func usd(m int64) []analytics.Money {
	return []analytics.Money{{AmountMicros: m, Currency: "USD"}}
}

var (
	c1Total = analytics.Metrics{Events: 7, Impressions: 4, Clicks: 2, Conversions: 1, UniqueUsers: 3, CTR: 0.5, CVR: 0.5,
		ConversionValue: usd(20_000_000), Spend: usd(2200), CostPerConversion: &analytics.Money{AmountMicros: 2200, Currency: "USD"}}
	c1a = analytics.Metrics{Events: 5, Impressions: 3, Clicks: 1, Conversions: 1, UniqueUsers: 2, CTR: 1.0 / 3, CVR: 1,
		ConversionValue: usd(20_000_000), Spend: usd(1500), CostPerConversion: &analytics.Money{AmountMicros: 1500, Currency: "USD"}}
	c1b = analytics.Metrics{Events: 2, Impressions: 1, Clicks: 1, UniqueUsers: 1, CTR: 1, Spend: usd(700)}
	// A campaign without events.
	zero = analytics.Metrics{}
)

// sourceName names a source in subtest names and messages.
var sourceName = map[analytics.Source]string{analytics.SourceAuto: "auto", analytics.SourceRaw: "raw", analytics.SourceRollup: "rollup"}

func TestSummaryEveryMetricFromRawAndRollup(t *testing.T) {
	svc := load(t, dataset, 1)
	for _, source := range []analytics.Source{analytics.SourceRaw, analytics.SourceRollup} {
		t.Run(sourceName[source], func(t *testing.T) {
			resp, err := svc.Summary(context.Background(), "t1", analytics.SummaryRequest{
				CampaignIDs: []string{"c1", "nope"}, Start: ts("2026-03-28T00:00:00Z"), End: ts("2026-03-31T00:00:00Z"), Source: source})
			if err != nil {
				t.Fatal(err)
			}
			want := analytics.SummaryResult{Source: source, Total: c1Total, Campaigns: []analytics.CampaignMetrics{
				{CampaignID: "c1", Metrics: c1Total}, {CampaignID: "nope", Metrics: zero}}}
			if d := cmp.Diff(want, resp, cmpopts.EquateEmpty()); d != "" {
				t.Fatalf("summary (-want +got):\n%s", d)
			}
			resp, err = svc.Summary(context.Background(), "t1", analytics.SummaryRequest{
				CampaignIDs: []string{"c1"}, Start: ts("2026-03-28T00:00:00Z"), End: ts("2026-03-31T00:00:00Z"), ByVariant: true, Source: source})
			if err != nil {
				t.Fatal(err)
			}
			want = analytics.SummaryResult{Source: source, Total: c1Total, Campaigns: []analytics.CampaignMetrics{
				{CampaignID: "c1", Variant: "a", Metrics: c1a}, {CampaignID: "c1", Variant: "b", Metrics: c1b}}}
			if d := cmp.Diff(want, resp, cmpopts.EquateEmpty()); d != "" {
				t.Fatalf("summary by variant (-want +got):\n%s", d)
			}
		})
	}
}

func TestSummaryChoosesRollupsOnlyForWholeHours(t *testing.T) {
	svc := load(t, dataset, 1)
	for _, tc := range []struct {
		start string
		want  analytics.Source
	}{{"2026-03-28T10:00:00Z", analytics.SourceRollup}, {"2026-03-28T10:01:00Z", analytics.SourceRaw}} {
		resp, err := svc.Summary(context.Background(), "t1", analytics.SummaryRequest{CampaignIDs: []string{"c1"},
			Start: ts(tc.start), End: ts("2026-03-29T00:00:00Z")})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Source != tc.want {
			t.Errorf("from %s answered by %s, want %s", tc.start, sourceName[resp.Source], sourceName[tc.want])
		}
		// From 10:01 the impression at 10:00 is out: the raw answer must be exact.
		wantImpressions := map[string]int64{"2026-03-28T10:00:00Z": 2, "2026-03-28T10:01:00Z": 1}[tc.start]
		if got := resp.Total.Impressions; got != wantImpressions {
			t.Errorf("from %s: %d impressions, want %d", tc.start, got, wantImpressions)
		}
	}
}

func TestSeriesDayBucketsFollowMidnightAcrossDST(t *testing.T) {
	svc := load(t, dataset, 1)
	for _, source := range []analytics.Source{analytics.SourceRaw, analytics.SourceRollup} {
		resp, err := svc.Series(context.Background(), "t1", analytics.SeriesRequest{CampaignID: "c1",
			Granularity: analytics.Day, TimeZone: "Europe/Berlin", Source: source,
			Start: ts("2026-03-28T05:00:00Z"), End: ts("2026-03-30T22:00:00Z")})
		if err != nil {
			t.Fatal(err)
		}
		// Midnight in Berlin: 23:00Z in winter, 22:00Z from the 29th (a 23-hour day).
		want := []struct {
			start  string
			events int64
		}{{"2026-03-27T23:00:00Z", 3}, {"2026-03-28T23:00:00Z", 3}, {"2026-03-29T22:00:00Z", 1}}
		if len(resp.Buckets) != len(want) {
			t.Fatalf("%s: %d buckets, want %d: %v", sourceName[source], len(resp.Buckets), len(want), resp.Buckets)
		}
		for i, w := range want {
			b := resp.Buckets[i]
			if !b.Start.Equal(at(w.start)) || b.Metrics.Events != w.events {
				t.Errorf("%s bucket %d: %s with %d events, want %s with %d", sourceName[source], i, b.Start, b.Metrics.Events, w.start, w.events)
			}
		}
	}
}

func TestSeriesHalfHourZoneUsesRawAndFillsEmptyBuckets(t *testing.T) {
	svc := load(t, dataset, 1)
	// Asia/Kolkata is UTC+5:30: its hours start at :30 UTC, which hourly rollups cannot split.
	resp, err := svc.Series(context.Background(), "t1", analytics.SeriesRequest{CampaignID: "c1",
		Granularity: analytics.Hour, TimeZone: "Asia/Kolkata",
		Start: ts("2026-03-28T09:30:00Z"), End: ts("2026-03-28T12:30:00Z")})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Source != analytics.SourceRaw {
		t.Errorf("answered by %s, want raw", sourceName[resp.Source])
	}
	var got []int64
	for _, b := range resp.Buckets {
		got = append(got, b.Metrics.Events)
	}
	// 09:30–10:30Z holds e1, e2 and… e3 is at 10:30, the next bucket.
	if d := cmp.Diff([]int64{2, 1, 0}, got); d != "" {
		t.Errorf("hour buckets in Asia/Kolkata (-want +got):\n%s", d)
	}
	// An empty range: every minute bucket present, all zero.
	resp, err = svc.Series(context.Background(), "t1", analytics.SeriesRequest{
		Granularity: analytics.Minute, Start: ts("2026-01-01T00:00:00Z"), End: ts("2026-01-01T01:00:00Z")})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.Buckets); n != 60 {
		t.Fatalf("%d minute buckets in an hour, want 60", n)
	}
	for _, b := range resp.Buckets {
		if b.Metrics.Events != 0 {
			t.Fatalf("empty range has events: %v", b)
		}
	}
}

func TestBreakdownTopNBreaksTiesByValue(t *testing.T) {
	svc := load(t, dataset, 1)
	// rows also checks which table answered: the rollups for the dimensions they hold.
	rows := func(req analytics.BreakdownRequest, from analytics.Source) []string {
		t.Helper()
		req.Start, req.End = ts("2026-03-28T00:00:00Z"), ts("2026-03-31T00:00:00Z")
		resp, err := svc.Breakdown(context.Background(), "t1", req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Source != from {
			t.Errorf("breakdown by dimension %d answered from %s, want %s", req.Dimension, sourceName[resp.Source], sourceName[from])
		}
		var out []string
		for _, r := range resp.Rows {
			out = append(out, r.Value)
		}
		return out
	}
	const raw, rollup = analytics.SourceRaw, analytics.SourceRollup
	// Impressions by variant: a 3, then "" (c2, c3) 2… and b 1; the raw table agrees.
	byVariant := func() analytics.BreakdownRequest {
		return analytics.BreakdownRequest{Dimension: analytics.Variant, Metric: analytics.MetricImpressions, Limit: 2}
	}
	if d := cmp.Diff([]string{"a", ""}, rows(byVariant(), rollup)); d != "" {
		t.Errorf("variants (-want +got):\n%s", d)
	}
	forcedRaw := byVariant()
	forcedRaw.Source = raw
	if d := cmp.Diff([]string{"a", ""}, rows(forcedRaw, raw)); d != "" {
		t.Errorf("variants from raw (-want +got):\n%s", d)
	}
	// Clicks by campaign: c1 2, then c2 and c3 tie at 0: ascending value.
	if d := cmp.Diff([]string{"c1", "c2", "c3"}, rows(analytics.BreakdownRequest{Dimension: analytics.Campaign,
		Metric: analytics.MetricClicks}, rollup)); d != "" {
		t.Errorf("campaigns (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"", "DE"}, rows(analytics.BreakdownRequest{Dimension: analytics.Property, PropertyKey: "country"}, raw)); d != "" {
		t.Errorf("property country (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"view", "purchase", "tap"}, rows(analytics.BreakdownRequest{Dimension: analytics.EventName,
		Metric: analytics.MetricUniqueUsers}, raw)); d != "" {
		t.Errorf("names by users (-want +got):\n%s", d)
	}
	// The rollups hold no property values: forcing them is refused.
	if _, err := svc.Breakdown(context.Background(), "t1", analytics.BreakdownRequest{Dimension: analytics.Property,
		PropertyKey: "country", Source: rollup, Start: ts("2026-03-28T00:00:00Z"), End: ts("2026-03-31T00:00:00Z")}); !apperr.HasCode(err, apperr.Invalid) {
		t.Errorf("property breakdown forced to the rollups: %v", err)
	}
}

func TestFunnelOrderAndWindowEdges(t *testing.T) {
	svc := load(t, dataset, 1)
	funnel := func(window int64, campaign string) []int64 {
		t.Helper()
		resp, err := svc.Funnel(context.Background(), "t1", analytics.FunnelRequest{WindowSeconds: window,
			Start: ts("2026-03-28T00:00:00Z"), End: ts("2026-03-31T00:00:00Z"),
			Steps: []analytics.FunnelStep{{EventName: "view", CampaignID: campaign}, {EventName: "tap"}, {EventName: "purchase"}}})
		if err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, s := range resp.Steps {
			out = append(out, s.Users)
		}
		return out
	}
	// u1 view→tap→purchase in 30 min; u2 view→tap in 40 min; anon-3 and u4 (c2) view; u5 bought
	// before viewing.
	for _, tc := range []struct {
		window   int64
		campaign string
		want     []int64
	}{
		{3600, "", []int64{5, 2, 1}},
		{3600, "c1", []int64{3, 2, 1}},
		{1800, "c1", []int64{3, 1, 1}}, // the purchase exactly at the window's end counts
		{1799, "c1", []int64{3, 1, 0}},
	} {
		if d := cmp.Diff(tc.want, funnel(tc.window, tc.campaign)); d != "" {
			t.Errorf("window %d s, campaign %q (-want +got):\n%s", tc.window, tc.campaign, d)
		}
	}
}

func TestTenantsNeverSeeEachOther(t *testing.T) {
	svc := load(t, dataset, 1)
	resp, err := svc.Summary(context.Background(), "t2", analytics.SummaryRequest{CampaignIDs: []string{"c1"},
		Start: ts("2026-03-28T00:00:00Z"), End: ts("2026-03-31T00:00:00Z")})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Total; got.Events != 1 || got.Spend[0].AmountMicros != 99 {
		t.Errorf("tenant t2 sees %v, want its one event", got)
	}
	resp2, err := svc.Spend(context.Background(), analytics.SpendRequest{TenantID: "t1", CampaignIDs: []string{"c1"},
		Start: ts("2026-03-28T00:00:00Z"), End: ts("2026-03-31T00:00:00Z")})
	if err != nil {
		t.Fatal(err)
	}
	want := []analytics.CampaignSpend{{CampaignID: "c1", SpendMicros: 2200, Currency: "USD"}}
	if d := cmp.Diff(want, resp2); d != "" {
		t.Errorf("spend (-want +got):\n%s", d)
	}
}

func TestGuards(t *testing.T) {
	svc := load(t, dataset, 1)
	ctx := context.Background()
	_, err := svc.Series(ctx, "t1", analytics.SeriesRequest{Granularity: analytics.Minute,
		Start: ts("2026-03-01T00:00:00Z"), End: ts("2026-03-03T00:00:00Z")})
	if code(err) != codes.InvalidArgument {
		t.Errorf("two days of minutes: %v, want INVALID_ARGUMENT", err)
	}
	_, err = svc.Series(ctx, "t1", analytics.SeriesRequest{Granularity: analytics.Day, TimeZone: "Mars/Olympus"})
	if code(err) != codes.InvalidArgument {
		t.Errorf("unknown zone: %v, want INVALID_ARGUMENT", err)
	}
	_, err = svc.Summary(ctx, "t1", analytics.SummaryRequest{CampaignIDs: []string{"c1"}, Source: analytics.SourceRollup,
		Start: ts("2026-03-28T00:00:30Z")})
	if code(err) != codes.InvalidArgument {
		t.Errorf("rollup forced on a partial hour: %v, want INVALID_ARGUMENT", err)
	}
	// A result over the row cap.
	capped := analytics.NewService(newQueries(t, open(t, dataset, 1), clickhouse.QueryLimits{MaxExecutionTime: 10 * time.Second, MaxResultRows: 1, MaxMemory: 1 << 30}), analytics.DefaultLimits)
	_, err = capped.Breakdown(ctx, "t1", analytics.BreakdownRequest{Dimension: analytics.Campaign,
		Start: ts("2026-03-28T00:00:00Z"), End: ts("2026-03-31T00:00:00Z")})
	if code(err) != codes.ResourceExhausted {
		t.Errorf("over the row cap: %v, want RESOURCE_EXHAUSTED", err)
	}
}

// TestSlowQueriesAreStoppedAndLimitedPerTenant fills a table big enough that a raw query runs
// past a 1 s max_execution_time, then checks the timeout's code and the concurrency limit.
func TestSlowQueriesAreStoppedAndLimitedPerTenant(t *testing.T) {
	ctx := context.Background()
	conn := open(t, nil, 1)
	// Every row carries properties, so the breakdown below looks up a key in each row's arrays
	// and counts unique users exactly in many groups: well past a second on any machine.
	if err := conn.Exec(ctx, `INSERT INTO events (tenant_id, event_id, type, campaign_id, user_id, event_date, event_time, stream_seq,
		prop_keys, prop_values)
		SELECT 'big', toString(number), 'impression', 'c', toString(number % 100000), today(), now() - number % 86400, 1,
		['a', 'b', 'c', 'd', 'e', 'f', 'g', 'k'], arrayMap(i -> toString((number * i) % 200003), [1, 2, 3, 4, 5, 6, 7, 8])
		FROM system.numbers LIMIT 5000000`); err != nil {
		t.Fatal(err)
	}
	limits := analytics.DefaultLimits
	limits.ConcurrentPerTenant = 1
	svc := analytics.NewService(newQueries(t, conn, clickhouse.QueryLimits{MaxExecutionTime: time.Second, MaxResultRows: 100000, MaxMemory: 1 << 30}), limits)
	slow := analytics.BreakdownRequest{Dimension: analytics.Property, PropertyKey: "k",
		Metric: analytics.MetricUniqueUsers, Start: analytics.At(time.Now().Add(-48 * time.Hour)), ExactUniqueUsers: true}
	// The slow query alone: stopped at max_execution_time.
	_, err := svc.Breakdown(ctx, "big", slow)
	if st, _ := apperr.ToStatus(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "time or size limit") {
		t.Fatalf("query past max_execution_time: %v, want RESOURCE_EXHAUSTED", err)
	}
	// While it runs, a second query of the tenant is refused.
	refused := false
	for attempt := 0; attempt < 5 && !refused; attempt++ {
		done := make(chan error, 1)
		go func() {
			_, err := svc.Breakdown(ctx, "big", slow)
			done <- err
		}()
		meshtest.Eventually(t, 5*time.Second, func() bool { // the slow query runs (for a second), holding the slot
			var n uint64
			return conn.QueryRow(ctx, `SELECT count() FROM system.processes WHERE query LIKE '%prop_keys%' AND query LIKE '%''big''%'
				AND query NOT LIKE '%system.processes%'`).Scan(&n) == nil && n > 0
		}, "the slow query never ran")
		_, err := svc.Summary(ctx, "big", analytics.SummaryRequest{CampaignIDs: []string{"c"}})
		st, _ := apperr.ToStatus(err)
		refused = st.Code() == codes.ResourceExhausted && strings.Contains(st.Message(), "too many")
		<-done
	}
	if !refused {
		t.Error("a second query while one ran was never refused")
	}
	// Another tenant is not held up by this one's limit.
	if _, err := svc.Summary(ctx, "small", analytics.SummaryRequest{CampaignIDs: []string{"c"}}); err != nil {
		t.Errorf("another tenant: %v", err)
	}
}

func code(err error) codes.Code {
	st, _ := apperr.ToStatus(err)
	return status.Code(st.Err())
}

func TestDeleteEventsOfASubjectAndOfARange(t *testing.T) {
	conn := open(t, dataset, 1)
	svc := analytics.NewService(newQueries(t, conn, clickhouse.DefaultQueryLimits), analytics.DefaultLimits)
	ctx := context.Background()
	count := func(where string) uint64 {
		t.Helper()
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM events WHERE "+where).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	deleteUntilDone := func(req analytics.DeleteRequest) analytics.DeletionStatus {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := svc.Delete(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Done {
				return resp
			}
			if time.Now().After(deadline) {
				t.Fatalf("deletion not done: %v", resp)
			}
			time.Sleep(100 * time.Millisecond) // polling the mutation under a deadline
		}
	}
	// Subject u1 of t1: its 4 events go; t2's u1 stays.
	first, err := svc.Delete(ctx, analytics.DeleteRequest{TenantID: "t1", SubjectID: "u1"})
	if err != nil || first.RemainingRows != 4 || first.MutationID == "" {
		t.Fatalf("first call: %v %v, want 4 remaining rows and a mutation", first, err)
	}
	if resp := deleteUntilDone(analytics.DeleteRequest{TenantID: "t1", SubjectID: "u1"}); resp.RemainingRows != 0 {
		t.Fatalf("done with %d rows left", resp.RemainingRows)
	}
	if n := count("tenant_id = 't1' AND user_id = 'u1'"); n != 0 {
		t.Errorf("%d events of t1's u1 left", n)
	}
	if n := count("tenant_id = 't2'"); n != 1 {
		t.Errorf("t2 has %d events, want its 1 untouched", n)
	}
	// A range of t1 holding e4, e5 and e6 (2026-03-28 23:00 to 2026-03-29 02:00), whole hours:
	// their rollup hours go too.
	deleteUntilDone(analytics.DeleteRequest{TenantID: "t1", Start: ts("2026-03-28T23:00:00Z"), End: ts("2026-03-29T02:00:00Z")})
	if n := count("tenant_id = 't1'"); n != 6-3 {
		t.Errorf("t1 has %d events after both deletions, want 3", n)
	}
	var rolled uint64
	if err := conn.QueryRow(ctx, `SELECT countMerge(events) FROM events_hourly WHERE tenant_id = 't1' AND hour >= toDateTime('2026-03-28 23:00:00', 'UTC') AND hour < toDateTime('2026-03-29 02:00:00', 'UTC')`).Scan(&rolled); err != nil {
		t.Fatal(err)
	}
	if rolled != 0 {
		t.Errorf("rollup still counts %d events in the deleted hours", rolled)
	}
	if _, err := svc.Delete(ctx, analytics.DeleteRequest{TenantID: "t1"}); code(err) != codes.InvalidArgument {
		t.Errorf("neither subject nor range: %v, want INVALID_ARGUMENT", err)
	}
}

// Raw queries read the events table without FINAL (the writer stores each event once) and only
// the rows of their ranges of the sort key: a campaign's time range, or the tenant's time range
// in every campaign — not the tenant's whole history. They still count every row, over many
// parts that have not been merged.
func TestRawQueriesReadOnlyTheirRangesWithoutFinal(t *testing.T) {
	for _, d := range []analytics.Dimension{analytics.NoDimension, analytics.Campaign, analytics.CampaignVariant, analytics.Bucket,
		analytics.EventName, analytics.EventType, analytics.Variant, analytics.App, analytics.Device, analytics.Locale, analytics.Property} {
		for _, rollup := range []bool{false, true} {
			sql, _, err := clickhouse.AggregateSQL(analytics.Query{Dimension: d, Granularity: analytics.Hour, Location: time.UTC, Rollup: rollup}, clickhouse.Distributed)
			if err != nil || strings.Contains(sql, "FINAL") {
				t.Errorf("dimension %d (rollup %v): %v, FINAL in %s", d, rollup, err, sql)
			}
		}
	}
	if sql, _ := clickhouse.FunnelSQL(analytics.FunnelQuery{Steps: []analytics.FunnelStep{{EventName: "a"}, {EventName: "b"}}}, clickhouse.Distributed); strings.Contains(sql, "FINAL") {
		t.Errorf("FINAL in the funnel: %s", sql)
	}

	ctx := context.Background()
	conn := open(t, nil, 0)
	// 20 inserts (parts) of 10,000 events: c1 and c2 alternate, one event a minute each from
	// 2026-03-20 00:00 UTC over 100,000 minutes (69 days, three months), plus tenant t2.
	for part := range 20 {
		if err := conn.Exec(ctx, fmt.Sprintf(`INSERT INTO events (tenant_id, event_id, type, name, user_id, campaign_id, event_date, event_time, received_ms, stream_seq)
			SELECT if(n %% 10 = 9, 't2', 't1'), toString(n), 'impression', 'view', concat('u', toString(n %% 1000)), if(n %% 2 = 0, 'c1', 'c2'),
				toDate(toDateTime(1773964800 + 60 * intDiv(n, 2), 'UTC')), toDateTime(1773964800 + 60 * intDiv(n, 2)), 0, 1
			FROM (SELECT number + %d AS n FROM system.numbers LIMIT 10000)`, part*10000)); err != nil {
			t.Fatal(err)
		}
	}
	q := newQueries(t, conn, clickhouse.DefaultQueryLimits)
	// A day of t1: 1,440 events of c1 and 1,152 of c2 (every fifth c2 event is t2's), as
	// counted by plain SQL below.
	start, end := at("2026-04-10T00:00:00Z"), at("2026-04-11T00:00:00Z")
	want := func(where string) int64 {
		t.Helper()
		return int64(scalar(t, conn, `SELECT count() FROM events WHERE tenant_id = 't1' AND event_time >= toDateTime('2026-04-10 00:00:00', 'UTC')
			AND event_time < toDateTime('2026-04-11 00:00:00', 'UTC')`+where))
	}
	const granule = 8192
	for _, tc := range []struct {
		name    string
		query   analytics.Query
		want    int64
		maxRead uint64 // rows of the range, plus a granule at each end of each campaign's range
	}{
		{"one campaign", analytics.Query{TenantID: "t1", CampaignIDs: []string{"c1"}, Start: start, End: end}, want(" AND campaign_id = 'c1'"), 1440 + 2*granule},
		{"every campaign", analytics.Query{TenantID: "t1", Start: start, End: end}, want(""), 2*1440 + 4*granule},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var read atomic.Uint64
			ctx := ch.Context(ctx, ch.WithProgress(func(p *ch.Progress) { read.Add(p.Rows) }))
			rows, err := q.Aggregate(ctx, tc.query)
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != 1 || rows[0].Events != tc.want || rows[0].Impressions != tc.want {
				t.Errorf("rows %+v, want one with %d events", rows, tc.want)
			}
			if n := read.Load(); n == 0 || n > tc.maxRead {
				t.Errorf("read %d rows, want at most %d of the 200,000", n, tc.maxRead)
			}
			f := analytics.FunnelQuery{TenantID: tc.query.TenantID, Start: start, End: end, Window: time.Hour,
				Steps: []analytics.FunnelStep{{EventName: "view"}, {EventName: "view"}}}
			read.Store(0)
			if _, err := q.Funnel(ctx, f); err != nil {
				t.Fatal(err)
			}
			if n := read.Load(); n == 0 || n > 2*(1440+60)+4*granule {
				t.Errorf("the funnel read %d rows, want at most the range and its window", n)
			}
		})
	}
}

// Unique users are approximate (uniqCombined) unless the request asks for exact counts, from
// the raw table and from the rollups alike; the approximation stays within 1% here.
func TestUniqueUsersApproximateUnlessExactAsked(t *testing.T) {
	ctx := context.Background()
	conn := open(t, nil, 0)
	// 300,000 events of 150,000 users in campaign c1 on 2026-03-28.
	if err := conn.Exec(ctx, `INSERT INTO events (tenant_id, event_id, type, user_id, campaign_id, event_date, event_time, received_ms, stream_seq)
		SELECT 't1', toString(number), 'click', concat('user-', toString(number % 150000)), 'c1',
			toDate('2026-03-28'), toDateTime(1774656000 + number % 86400), 0, 1
		FROM system.numbers LIMIT 300000`); err != nil {
		t.Fatal(err)
	}
	svc := analytics.NewService(newQueries(t, conn, clickhouse.DefaultQueryLimits), analytics.DefaultLimits)
	for _, src := range []analytics.Source{analytics.SourceRaw, analytics.SourceRollup} {
		users := map[bool]int64{}
		for _, exact := range []bool{false, true} {
			resp, err := svc.Summary(ctx, "t1", analytics.SummaryRequest{CampaignIDs: []string{"c1"}, Start: ts("2026-03-28T00:00:00Z"),
				End: ts("2026-03-29T00:00:00Z"), Source: src, ExactUniqueUsers: exact})
			if err != nil {
				t.Fatal(err)
			}
			users[exact] = resp.Total.UniqueUsers
		}
		if users[true] != 150000 {
			t.Errorf("%s: exact unique users %d, want 150000", sourceName[src], users[true])
		}
		if e := users[false] - 150000; e == 0 || e < -1500 || e > 1500 {
			t.Errorf("%s: approximate unique users %d: want an estimate (not exactly 150000) within 1%%", sourceName[src], users[false])
		}
	}
}

// A summary's total comes with its rows from one query: amounts added up per currency across
// the campaigns, and a user of several campaigns counted once — also from the rollups when a
// campaign has amounts in two currencies.
func TestSummaryTotalAddsUpCurrenciesAndCountsUsersOnce(t *testing.T) {
	conn := open(t, dataset, 1)
	insert(t, conn, []ev{{"t1", "e20", "conversion", "purchase", "u1", "", "c3", "", "2026-03-28T11:00:00Z", 7, "", ""}}, 2)
	eur := []ev{{"t1", "e21", "conversion", "purchase", "u1", "", "c3", "", "2026-03-28T11:00:00Z", 5, "", ""}}
	var rows []writer.Row
	for _, e := range eur {
		when := timestamppb.New(at(e.when))
		rows = append(rows, writer.Row{Seq: 3, Event: &ingestv1.AcceptedEvent{TenantId: e.tenant, ReceivedAt: when, CorrectedTime: when,
			Event: &ingestv1.Event{EventId: e.id, Type: types[e.typ], Name: e.name, UserId: e.user, CampaignId: e.campaign,
				Value: &ingestv1.Money{AmountMicros: e.value, Currency: "EUR"}}}})
	}
	if err := clickhouse.NewEventSink(conn).InsertAll(context.Background(), rows); err != nil {
		t.Fatal(err)
	}
	// The rollup's one pass sees that c3 has amounts in two currencies (so Aggregate adds up per
	// currency first), and c1 in one (USD; its events without a value have none).
	sql, args, err := clickhouse.OnePassSQL(analytics.Query{TenantID: "t1", Start: at("2026-03-28T00:00:00Z"), End: at("2026-03-31T00:00:00Z"),
		Dimension: analytics.Campaign, CampaignIDs: []string{"c1", "c3"}, Rollup: true}, clickhouse.Local)
	if err != nil {
		t.Fatal(err)
	}
	counts, err := conn.Query(context.Background(), `SELECT k1, currency_count FROM (`+sql+`) ORDER BY k1`, args...)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for counts.Next() {
		var k string
		var n uint64
		if err := counts.Scan(&k, &n); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %d", k, n))
	}
	counts.Close()
	if d := cmp.Diff([]string{"c1 1", "c3 2"}, got); d != "" {
		t.Errorf("currencies per campaign in one pass (-want +got):\n%s", d)
	}
	svc := analytics.NewService(newQueries(t, conn, clickhouse.DefaultQueryLimits), analytics.DefaultLimits)
	for _, src := range []analytics.Source{analytics.SourceRaw, analytics.SourceRollup} {
		resp, err := svc.Summary(context.Background(), "t1", analytics.SummaryRequest{CampaignIDs: []string{"c1", "c3"},
			Start: ts("2026-03-28T00:00:00Z"), End: ts("2026-03-31T00:00:00Z"), Source: src})
		if err != nil {
			t.Fatal(err)
		}
		// c1: u1, u2, anon-3; c3: u5 and u1 again.
		got := resp.Total
		if got.Events != 11 || got.UniqueUsers != 4 || !cmp.Equal(got.ConversionValue, []analytics.Money{{AmountMicros: 5, Currency: "EUR"},
			{AmountMicros: 20_000_007, Currency: "USD"}}) {
			t.Errorf("%s: total %+v, want 11 events, 4 users, 5 EUR and 20.000007 USD", sourceName[src], got)
		}
		if len(resp.Campaigns) != 2 || resp.Campaigns[0].Metrics.UniqueUsers != 3 || resp.Campaigns[1].Metrics.UniqueUsers != 2 {
			t.Errorf("%s: rows %+v, want c1 with 3 users and c3 with 2", sourceName[src], resp.Campaigns)
		}
	}
}

// The writer's commit rows (tenant_id ”) never reach an answer: a request without a tenant is
// refused before it reads anything (also a deletion, which would delete them), and a tenant's
// answers, raw or from the rollup, count its events only.
func TestCommitRowsNeverReachAnAnswer(t *testing.T) {
	conn := open(t, dataset, 1)
	if n := scalar(t, conn, `SELECT count() FROM events WHERE tenant_id = ''`); n == 0 {
		t.Fatal("the inserts wrote no commit row")
	}
	q := newQueries(t, conn, clickhouse.DefaultQueryLimits)
	ctx := context.Background()
	start, end := at("2026-03-01T00:00:00Z"), at("2026-05-01T00:00:00Z")
	for _, rollup := range []bool{false, true} {
		if _, err := q.Aggregate(ctx, analytics.Query{Start: start, End: end, Dimension: analytics.Campaign, Rollup: rollup}); code(err) != codes.InvalidArgument {
			t.Errorf("aggregate without a tenant (rollup %v): %v, want INVALID_ARGUMENT", rollup, err)
		}
	}
	if _, err := q.Funnel(ctx, analytics.FunnelQuery{Start: start, End: end, Window: time.Minute, Steps: []analytics.FunnelStep{{EventName: "view"}}}); code(err) != codes.InvalidArgument {
		t.Errorf("funnel without a tenant: %v, want INVALID_ARGUMENT", err)
	}
	if _, err := q.Delete(ctx, analytics.Deletion{Start: start, End: end}); code(err) != codes.InvalidArgument {
		t.Errorf("deletion without a tenant: %v, want INVALID_ARGUMENT", err)
	}
	svc := analytics.NewService(q, analytics.DefaultLimits)
	for _, src := range []analytics.Source{analytics.SourceRaw, analytics.SourceRollup} {
		r, err := svc.Breakdown(ctx, "t1", analytics.BreakdownRequest{Dimension: analytics.Campaign, Metric: analytics.MetricEvents,
			Start: ts("2026-03-28T00:00:00Z"), End: ts("2026-03-31T00:00:00Z"), Source: src})
		if err != nil {
			t.Fatal(err)
		}
		var events int64
		for _, row := range r.Rows {
			events += row.Metrics.Events
		}
		if events != 10 {
			t.Errorf("%s: t1 has %d events, want its 10", sourceName[src], events)
		}
	}
	if n := scalar(t, conn, `SELECT countMerge(events) FROM events_hourly WHERE tenant_id = ''`); n != 0 {
		t.Errorf("the rollup holds %d rows of commit rows", n)
	}
}
