// Package benchdata generates the synthetic event data set the benchmarks share (bench-analytics,
// bench-dsr) inside ClickHouse, reproducibly from a seed, and reuses a loaded one.
package benchdata

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
)

// The data set is generated inside ClickHouse: INSERT INTO events_local … SELECT … FROM numbers(),
// every column a function of the row number and a per-tenant seed (cityHash64), so it is the
// same on every run with the same flags, apart from the time it ends at. The per-campaign
// parameters (weights, variants, type mix, prices) come from a PCG generator seeded with -seed.
// The insert goes through the real schema, so the materialized view fills events_hourly as it
// does for the writer's inserts.
//
// Model: a tenant has sessions; a session belongs to one user (session mod users, so every
// user appears), one campaign (by weight) and starts at a random time in the range. Its events
// are impressions ("view") in its first 10 minutes, clicks ("tap") in the next 10, and
// conversions (signup, add_to_cart, purchase) in the 30 after: funnels find users who went
// view → tap → purchase. A user has a fixed device, app, locale, country and, per campaign,
// variant; 5% of users are anonymous (anonymous_id only).

// Slots is the size of the lookup arrays that pick a campaign or a country by weight.
const Slots = 4096

// SessionEvents and UserEvents are the mean events per session and per user.
const (
	SessionEvents = 20
	UserEvents    = 50
)

// SmallEvents and SmallCampaigns size each small tenant.
const (
	SmallEvents    = 10_000
	SmallCampaigns = 5
)

// Loaders is how many inserts run at once.
func Loaders() int { return max(runtime.NumCPU(), 2) }

// ChunkRows is the rows of one INSERT … SELECT: one block, one part (min_insert_block_size_rows).
const ChunkRows = 1 << 20

// Dataset is a planned data set: its tenants, each with its campaigns, over Days days ending at End.
type Dataset struct {
	Seed    uint64
	Days    int
	End     time.Time // exclusive, a whole UTC hour
	Tenants []Tenant
}

// Tenant is one tenant of a data set.
type Tenant struct {
	ID                      string
	Events, Users, Sessions int64
	Hash                    uint64 // seed of the tenant's hashes
	Campaigns               []Campaign
}

// Campaign is one campaign of a tenant, with the parameters its events are drawn with.
type Campaign struct {
	ID               string
	Weight           float64
	Variants         int
	ClickBP, ConvBP  int   // share of clicks and conversions in basis points; the rest impressions
	CPMMicros        int64 // cost of 1,000 impressions
	CPCMicros        int64 // cost of a click
	Slots            int   // of the campaign lookup array
	firstSlot, index int
}

var countries = []struct {
	code, locale string
	weight       int // slots of 100
}{
	{"US", "en-US", 22}, {"DE", "de-DE", 10}, {"GB", "en-GB", 9}, {"FR", "fr-FR", 7}, {"BR", "pt-BR", 6},
	{"IN", "en-IN", 6}, {"JP", "ja-JP", 5}, {"CA", "en-CA", 4}, {"ES", "es-ES", 4}, {"IT", "it-IT", 4},
	{"MX", "es-MX", 3}, {"NL", "nl-NL", 3}, {"AU", "en-AU", 3}, {"PL", "pl-PL", 2}, {"SE", "sv-SE", 2},
	{"KR", "ko-KR", 2}, {"TR", "tr-TR", 2}, {"CH", "de-CH", 2}, {"AT", "de-AT", 2}, {"NO", "nb-NO", 2},
}

var devices = []struct{ device, app, userAgent string }{
	{"ios", "shop-ios", "CampaignMesh-iOS/5.2 (iPhone; iOS 17.4)"},
	{"android", "shop-android", "CampaignMesh-Android/5.2 (Pixel 8; Android 14)"},
	{"web", "shop-web", "Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0"},
}

// BigTenant is the id of the big tenant unless Config.BigTenant names another.
const BigTenant = "t-big"

// Config is what a data set is planned from: the same Config (and end hour) gives the same data.
type Config struct {
	Events       int64  // events of the big tenant
	SmallTenants int    // small tenants, SmallEvents events and SmallCampaigns campaigns each
	Campaigns    int    // campaigns of the big tenant
	Days         int    // days the events span, ending at the load time's hour
	Seed         uint64 // seed of every parameter and hash
	// BigTenant is the big tenant's id (empty: BigTenant). bench-dsr names a tenant of its auth
	// service, so that the tokens auth issues reach the data.
	BigTenant string
}

// Plan derives the data set from the flags: everything but End comes from the seed.
func Plan(cfg Config, end time.Time) Dataset {
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x9e3779b97f4a7c15))
	d := Dataset{Seed: cfg.Seed, Days: cfg.Days, End: end.UTC().Truncate(time.Hour)}
	add := func(id string, events int64, campaigns int) {
		t := Tenant{ID: id, Events: events, Users: max(events/UserEvents, 1), Sessions: max(events/SessionEvents, 1), Hash: rng.Uint64()}
		for i := range campaigns {
			t.Campaigns = append(t.Campaigns, Campaign{
				ID:        fmt.Sprintf("cmp-%03d", i+1),
				Weight:    math.Pow(float64(i+1), -0.7) * (0.8 + 0.4*rng.Float64()),
				Variants:  2 + rng.IntN(2),
				ClickBP:   500 + rng.IntN(601), // 5–11%
				ConvBP:    120 + rng.IntN(161), // 1.2–2.8%
				CPMMicros: int64(2_000_000 + rng.IntN(10_000_001)),
				CPCMicros: int64(200_000 + rng.IntN(1_800_001)),
				index:     i + 1,
			})
		}
		assignSlots(t.Campaigns)
		d.Tenants = append(d.Tenants, t)
	}
	big := cfg.BigTenant
	if big == "" {
		big = BigTenant
	}
	add(big, cfg.Events, cfg.Campaigns)
	for i := range cfg.SmallTenants {
		add(fmt.Sprintf("t-small-%d", i+1), SmallEvents, SmallCampaigns)
	}
	return d
}

// assignSlots gives each campaign at least one slot of the lookup array and the rest by weight.
func assignSlots(cs []Campaign) {
	var total float64
	for _, c := range cs {
		total += c.Weight
	}
	used := 0
	for i := range cs {
		cs[i].Slots = 1 + int(cs[i].Weight/total*float64(Slots-len(cs)))
		used += cs[i].Slots
	}
	for i := 0; used < Slots; i, used = (i+1)%len(cs), used+1 {
		cs[i].Slots++
	}
	next := 0
	for i := range cs {
		cs[i].firstSlot = next
		next += cs[i].Slots
	}
}

// Rows is the number of events of the data set.
func (d Dataset) Rows() int64 {
	var n int64
	for _, t := range d.Tenants {
		n += t.Events
	}
	return n
}

// Begin is the start of the range the events span.
func (d Dataset) Begin() time.Time { return d.End.Add(-time.Duration(d.Days) * 24 * time.Hour) }

// CampaignIDs are the ids of the tenant's first n campaigns.
func (t Tenant) CampaignIDs(n int) []string {
	var ids []string
	for _, c := range t.Campaigns[:min(n, len(t.Campaigns))] {
		ids = append(ids, c.ID)
	}
	return ids
}

func intList[T int | int64 | uint64](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.FormatInt(int64(x), 10)
	}
	return "[" + strings.Join(s, ",") + "]"
}

func strList(xs []string) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = "'" + x + "'" // identifiers of our own making: no quotes inside
	}
	return "[" + strings.Join(s, ",") + "]"
}

// InsertSQL is the INSERT … SELECT of rows [from, from+n) of tenant t.
func (d Dataset) InsertSQL(t Tenant, from, n int64) string {
	lookup := make([]int, 0, Slots)
	var ids, variants []string
	var nvar, clk, clkConv []int
	var cpm, cpc []int64
	for _, c := range t.Campaigns {
		for range c.Slots {
			lookup = append(lookup, c.index)
		}
		ids = append(ids, c.ID)
		nvar = append(nvar, c.Variants)
		clk = append(clk, c.ClickBP)
		clkConv = append(clkConv, c.ClickBP+c.ConvBP)
		cpm = append(cpm, c.CPMMicros)
		cpc = append(cpc, c.CPCMicros)
	}
	variants = []string{"a", "b", "c"}
	var countryLookup []int
	var codes, locales []string
	for i, c := range countries {
		for range c.weight {
			countryLookup = append(countryLookup, i+1)
		}
		codes = append(codes, c.code)
		locales = append(locales, c.locale)
	}
	var devs, apps, uas []string
	for _, x := range devices {
		devs, apps, uas = append(devs, x.device), append(apps, x.app), append(uas, x.userAgent)
	}
	span := int64(d.Days)*86400 - 3000 // session starts; its events follow within 3000 s
	r := strings.NewReplacer(
		"{S}", strconv.FormatUint(t.Hash, 10),
		"{TENANT}", "'"+t.ID+"'",
		"{SESSIONS}", strconv.FormatInt(t.Sessions, 10),
		"{USERS}", strconv.FormatInt(t.Users, 10),
		"{LOOKUP}", intList(lookup),
		"{SLOTS}", strconv.Itoa(len(lookup)),
		"{NVAR}", intList(nvar),
		"{CLKCONV}", intList(clkConv),
		"{CLK}", intList(clk),
		"{CPM}", intList(cpm),
		"{CPC}", intList(cpc),
		"{IDS}", strList(ids),
		"{VARIANTS}", strList(variants),
		"{COUNTRYLOOKUP}", intList(countryLookup),
		"{NCOUNTRYSLOTS}", strconv.Itoa(len(countryLookup)),
		"{COUNTRIES}", strList(codes),
		"{LOCALES}", strList(locales),
		"{DEVICES}", strList(devs),
		"{APPS}", strList(apps),
		"{UAS}", strList(uas),
		"{BEGIN}", strconv.FormatInt(d.Begin().Unix(), 10),
		"{SPAN}", strconv.FormatInt(span, 10),
		"{FROM}", strconv.FormatInt(from, 10),
		"{N}", strconv.FormatInt(n, 10),
	)
	return r.Replace(`INSERT INTO events_local (tenant_id, event_id, type, name, user_id, anonymous_id, campaign_id, variant,
	value_micros, currency, event_date, event_time, event_ms, client_ms, received_ms, prop_keys, prop_values,
	ip, user_agent, locale, app, device, source, stream_seq, stream_part)
SELECT {TENANT}, concat('ev-', toString(n)),
	['impression', 'click', 'conversion'][t],
	['view', 'tap', 'signup', 'add_to_cart', 'purchase'][if(t < 3, t, 3 + cn)],
	if(anon, '', concat('u-', toString(u))), if(anon, concat('anon-', toString(u)), ''),
	{IDS}[c], {VARIANTS}[v + 1],
	toInt64(multiIf(t = 1, intDiv({CPM}[c] * (800 + hv % 400), 1000000), t = 2, intDiv({CPC}[c] * (800 + hv % 400), 1000),
		cn = 0, 1000000 + hv % 4000000, cn = 1, 5000000 + hv % 45000000, 10000000 + hv % 290000000)),
	'USD', toDate(toDateTime(sec)), toDateTime(sec), ems, ems - hv % 300, ems + 20 + intDiv(hv, 1000) % 480,
	['country'], [{COUNTRIES}[ci]],
	IPv4NumToString(toUInt32(167772160 + u % 16777216)), {UAS}[dv], {LOCALES}[ci], {APPS}[dv], {DEVICES}[dv],
	'bench-loader', toUInt64(0),
	toUInt16(cityHash64(concat({TENANT}, '\0', if(anon, concat('anon-', toString(u)), concat('u-', toString(u))))) % 8)
FROM (
	SELECT number AS n,
		cityHash64({S}, 1, n) % {SESSIONS} AS s,
		s % {USERS} AS u,
		cityHash64({S}, 2, s) AS hs,
		cityHash64({S}, 3, n) AS hr,
		cityHash64({S}, 4, n) AS hv,
		cityHash64({S}, 5, u) AS hu,
		{LOOKUP}[hs % {SLOTS} + 1] AS c,
		cityHash64({S}, 6, u, c) % {NVAR}[c] AS v,
		hr % 10000 AS r,
		multiIf(r < {CLK}[c], 2, r < {CLKCONV}[c], 3, 1) AS t,
		multiIf(intDiv(hr, 10000) % 100 < 40, 0, intDiv(hr, 10000) % 100 < 75, 1, 2) AS cn,
		hu % 100 < 5 AS anon,
		multiIf(intDiv(hu, 100) % 100 < 45, 1, intDiv(hu, 100) % 100 < 85, 2, 3) AS dv,
		{COUNTRYLOOKUP}[intDiv(hu, 10000) % {NCOUNTRYSLOTS} + 1] AS ci,
		{BEGIN} + intDiv(hs, {SLOTS}) % {SPAN} AS start,
		start + multiIf(t = 1, intDiv(hr, 1000000) % 600, t = 2, 600 + intDiv(hr, 1000000) % 600, 1200 + intDiv(hr, 1000000) % 1800) AS sec,
		sec * 1000 + intDiv(hr, 1000000000) % 1000 AS ems
	FROM numbers({FROM}, {N}))`)
}

// MetaTable records the data set a database holds, written once its load has completed.
const MetaTable = `CREATE TABLE IF NOT EXISTS bench_dataset (
	seed UInt64, events Int64, small_tenants Int32, campaigns Int32, days Int32, end_time DateTime, row_count UInt64
) ENGINE = TinyLog`

// Reusable reports whether db holds exactly the data set of cfg (recorded and counted), and
// the end time it was loaded with.
func Reusable(ctx context.Context, conn driver.Conn, cfg Config, want int64) (time.Time, bool, error) {
	var exists uint8
	if err := conn.QueryRow(ctx, "SELECT count() > 0 FROM system.tables WHERE database = currentDatabase() AND name = 'bench_dataset'").Scan(&exists); err != nil {
		return time.Time{}, false, err
	}
	if exists == 0 {
		return time.Time{}, false, nil
	}
	var seed, rowCount uint64
	var events int64
	var small, campaigns, days int32
	var end time.Time
	err := conn.QueryRow(ctx, "SELECT seed, events, small_tenants, campaigns, days, end_time, row_count FROM bench_dataset LIMIT 1").
		Scan(&seed, &events, &small, &campaigns, &days, &end, &rowCount)
	if err != nil {
		return time.Time{}, false, nil // empty: a load that did not finish
	}
	if seed != cfg.Seed || events != cfg.Events || int(small) != cfg.SmallTenants || int(campaigns) != cfg.Campaigns || int(days) != cfg.Days || int64(rowCount) != want {
		return time.Time{}, false, nil
	}
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM events WHERE stream_seq = 0").Scan(&n); err != nil {
		return time.Time{}, false, err
	}
	return end.UTC(), int64(n) == want, nil
}

// Load inserts the data set with one INSERT … SELECT per chunk, as many at once as there are
// cores, printing progress every few seconds, then its commit rows (commitRows); it returns the
// time the inserts took.
func Load(ctx context.Context, conn driver.Conn, d Dataset) (time.Duration, error) {
	type chunk struct {
		t       Tenant
		from, n int64
	}
	var chunks []chunk
	for _, t := range d.Tenants {
		for from := int64(0); from < t.Events; from += ChunkRows {
			chunks = append(chunks, chunk{t, from, min(ChunkRows, t.Events-from)})
		}
	}
	total := d.Rows()
	start := time.Now()
	var generated atomic.Int64 // rows read from numbers(), from the server's progress packets
	done := make(chan struct{})
	var wg sync.WaitGroup
	go func() {
		tick := time.NewTicker(3 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				var stored uint64
				_ = conn.QueryRow(ctx, "SELECT count() FROM events WHERE tenant_id != ''").Scan(&stored)
				el := time.Since(start).Seconds()
				Progress("loading: %5.1f%% generated (%d of %d rows), %d stored, %.0f rows/s stored",
					float64(generated.Load())*100/float64(total), generated.Load(), total, stored, float64(stored)/el)
			}
		}
	}()
	work := make(chan chunk)
	errs := make(chan error, len(chunks))
	for range Loaders() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				cctx := ch.Context(ctx, ch.WithProgress(func(p *ch.Progress) { generated.Add(int64(p.Rows)) }))
				if err := conn.Exec(cctx, d.InsertSQL(c.t, c.from, c.n)); err != nil {
					errs <- fmt.Errorf("load %s rows %d-%d: %w", c.t.ID, c.from, c.from+c.n, err)
				}
			}
		}()
	}
	for _, c := range chunks {
		work <- c
	}
	close(work)
	wg.Wait()
	close(done)
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	if err := commitRows(ctx, conn); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// BatchRows is the writer's default batch: the size of the blocks commitRows counts in.
func BatchRows() int { return writer.DefaultConfig.BatchRows }

// commitRows adds the commit rows the writer would have written with the loaded events, so
// that events_local holds them as in a store the writer filled: per block of a tenant's events
// (in load order) as large as the writer's default batch, one row per stream partition and
// month of the block's events — an empty tenant_id, event_id 'commit', event_date the month's
// first day, stream_part the partition, stream_seq its sequence, commit_seqs [stream_seq]. The
// loaded events themselves have no sequence (stream_seq 0); the commit rows' sequences are
// 1, 2, … in (tenant, block, partition, month) order, so every load of a data set writes the
// same rows. A writer started on the database later takes their highest as its stream's
// offset (writer_epochs).
func commitRows(ctx context.Context, conn driver.Conn) error {
	rows, err := conn.Query(ctx, `SELECT tenant_id, intDiv(toUInt64(substring(event_id, 4)), `+strconv.Itoa(BatchRows())+`) AS block,
		stream_part, toStartOfMonth(event_date) AS month
	FROM events_local WHERE tenant_id != '' AND source = 'bench-loader'
	GROUP BY tenant_id, block, stream_part, month ORDER BY tenant_id, block, stream_part, month`)
	if err != nil {
		return fmt.Errorf("commit rows: read the loaded blocks: %w", err)
	}
	type commit struct {
		part  uint16
		month time.Time
	}
	var commits []commit
	for rows.Next() {
		var tenant string
		var block uint64
		var c commit
		if err := rows.Scan(&tenant, &block, &c.part, &c.month); err != nil {
			rows.Close()
			return fmt.Errorf("commit rows: read the loaded blocks: %w", err)
		}
		commits = append(commits, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("commit rows: read the loaded blocks: %w", err)
	}
	batch, err := conn.PrepareBatch(ctx, `INSERT INTO events_local (tenant_id, event_id, event_date, event_time, stream_part, stream_seq, commit_seqs)`)
	if err != nil {
		return fmt.Errorf("commit rows: %w", err)
	}
	for i, c := range commits {
		seq := uint64(i + 1)
		month := time.Date(c.month.Year(), c.month.Month(), 1, 0, 0, 0, 0, time.UTC)
		if err := batch.Append("", "commit", month, month, c.part, seq, []uint64{seq}); err != nil {
			return fmt.Errorf("commit rows: %w", err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("commit rows: %w", err)
	}
	return nil
}
