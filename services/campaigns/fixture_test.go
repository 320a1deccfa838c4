package campaigns_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	auditpg "github.com/campaignmesh/campaignmesh/internal/platform/audit/postgres"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/campaigns"
	"github.com/campaignmesh/campaignmesh/services/campaigns/postgres"
)

// clock is a settable clock shared by the service and the schedulers of a test.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// memSpend is an in-memory SpendSource: spend rows with the time they happened. The real one
// is the analytics service (see analyticsclient); the domain's budget rules are tested here.
type memSpend struct {
	mu    sync.Mutex
	rows  []spendRow
	fail  error
	calls int
}

type spendRow struct {
	tenant, campaign string
	at               time.Time
	micros           int64
	currency         string
}

func (m *memSpend) add(tenant, campaign string, at time.Time, micros int64, currency string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rows = append(m.rows, spendRow{tenant, campaign, at, micros, currency})
}

func (m *memSpend) Spend(_ context.Context, tenant string, ids []string, from, to time.Time) ([]campaigns.Spend, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	if m.fail != nil {
		return nil, m.fail
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	sums := map[[2]string]int64{}
	for _, r := range m.rows {
		if r.tenant == tenant && want[r.campaign] && !r.at.Before(from) && r.at.Before(to) {
			sums[[2]string{r.campaign, r.currency}] += r.micros
		}
	}
	var out []campaigns.Spend
	for k, v := range sums {
		out = append(out, campaigns.Spend{CampaignID: k[0], Currency: k[1], Micros: v})
	}
	return out, nil
}

// env is the domain on a real PostgreSQL database with a settable clock.
type env struct {
	url    string
	store  *postgres.Store
	svc    *campaigns.Service
	clock  *clock
	spend  *memSpend
	outbox *auditpg.Outbox
}

// start is when every test begins: a week before the schedules of draft start.
var start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newEnv(t *testing.T) *env {
	t.Helper()
	url := pgtest.NewDatabase(t)
	e := &env{url: url, clock: &clock{now: start}, spend: &memSpend{}}
	e.store = e.openStore(t)
	e.svc = campaigns.NewService(e.store, e.spend).WithClock(e.clock.Now).WithLogger(slog.New(slog.DiscardHandler))
	// The real audit outbox in the service's database; nothing delivers it to auth here, so
	// the records stay for the test to count.
	ob, err := auditpg.NewOutbox(context.Background(), e.store.Pool(), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	e.outbox = ob
	return e
}

// openStore opens another connection pool on the test's database (another replica).
func (e *env) openStore(t *testing.T) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), e.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// scheduler returns a scheduler on its own connection pool, as another replica would run.
func (e *env) scheduler(t *testing.T, opts ...campaigns.SchedulerOption) *campaigns.Scheduler {
	t.Helper()
	opts = append([]campaigns.SchedulerOption{campaigns.WithSchedulerClock(e.clock.Now)}, opts...)
	return campaigns.NewScheduler(e.openStore(t), e.spend, e.outbox, slog.New(slog.DiscardHandler), opts...)
}

func manager(tenant string) *authn.Principal {
	return &authn.Principal{TenantID: tenant, Subject: "manager-" + tenant, Role: rbac.Manager, Permissions: rbac.Manager.Permissions()}
}

func wall(t *testing.T, s string) campaigns.WallClock {
	t.Helper()
	w, err := campaigns.ParseWallClock(s)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// draft is a schedulable campaign in New York: 09:00 on the day clocks spring forward to
// 01:30 (the first one) on the night they fall back.
func draft(t *testing.T) campaigns.Campaign {
	t.Helper()
	return campaigns.Campaign{
		Name: "Spring", Channel: campaigns.ChannelEmail,
		Schedule: campaigns.Schedule{Start: wall(t, "2026-03-08T09:00"), End: wall(t, "2026-11-01T01:30"), TimeZone: "America/New_York"},
		Budget:   campaigns.Budget{TotalMicros: 100_000_000, DailyMicros: 10_000_000, Currency: "USD", Pacing: campaigns.PacingEven},
		Goal:     "purchase",
		Variants: []campaigns.Variant{{Name: "a", Weight: 50}, {Name: "b", Weight: 50}},
	}
}

func (e *env) create(t *testing.T, tenant string, c campaigns.Campaign) campaigns.Campaign {
	t.Helper()
	out, err := e.svc.CreateCampaign(context.Background(), manager(tenant), c)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (e *env) act(t *testing.T, tenant, id string, actions ...campaigns.Action) campaigns.Campaign {
	t.Helper()
	var c campaigns.Campaign
	for _, a := range actions {
		var err error
		if c, err = e.svc.Transition(context.Background(), manager(tenant), id, a, ""); err != nil {
			t.Fatalf("%s: %v", a, err)
		}
	}
	return c
}

// inState makes a campaign in state the way users and the scheduler would.
func (e *env) inState(t *testing.T, tenant string, state campaigns.State) campaigns.Campaign {
	t.Helper()
	c := e.create(t, tenant, draft(t))
	path := map[campaigns.State][]campaigns.Action{
		campaigns.Draft:           nil,
		campaigns.Scheduled:       {campaigns.ActSchedule},
		campaigns.Active:          {campaigns.ActSchedule, campaigns.ActActivate},
		campaigns.Paused:          {campaigns.ActSchedule, campaigns.ActActivate, campaigns.ActPause},
		campaigns.BudgetExhausted: {campaigns.ActSchedule, campaigns.ActActivate},
		campaigns.Completed:       {campaigns.ActSchedule, campaigns.ActActivate, campaigns.ActComplete},
		campaigns.Cancelled:       {campaigns.ActSchedule, campaigns.ActCancel},
		campaigns.Archived:        {campaigns.ActSchedule, campaigns.ActCancel, campaigns.ActArchive},
	}[state]
	if len(path) > 0 {
		c = e.act(t, tenant, c.ID, path...)
	}
	if state == campaigns.BudgetExhausted {
		e.spend.add(tenant, c.ID, e.clock.Now(), c.Budget.TotalMicros, c.Budget.Currency)
		if _, err := e.scheduler(t).CheckBudgets(context.Background(), e.clock.Now()); err != nil {
			t.Fatal(err)
		}
		c = e.get(t, tenant, c.ID)
	}
	if c.State != state {
		t.Fatalf("made a %s campaign, want %s", c.State, state)
	}
	return c
}

func (e *env) get(t *testing.T, tenant, id string) campaigns.Campaign {
	t.Helper()
	c, err := e.svc.GetCampaign(context.Background(), manager(tenant), id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *env) transitions(t *testing.T, tenant, id string) []campaigns.Transition {
	t.Helper()
	ts, _, err := e.svc.ListTransitions(context.Background(), manager(tenant), id, 1000, "")
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// auditIDs returns the ids of the audit records waiting in the outbox, by method.
func (e *env) auditIDs(t *testing.T) map[string][]string {
	t.Helper()
	rows, err := e.store.Pool().Query(context.Background(), `SELECT id::text, record FROM audit_outbox ORDER BY create_time, id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var id string
		var data []byte
		if err := rows.Scan(&id, &data); err != nil {
			t.Fatal(err)
		}
		rec := decodeAudit(t, data)
		if rec.ID != id {
			t.Fatalf("outbox row %s holds record %s", id, rec.ID)
		}
		out[rec.Method] = append(out[rec.Method], id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func reason(err error) string {
	var de *apperr.Error
	if errors.As(err, &de) {
		return de.Reason
	}
	return ""
}

func code(err error) apperr.Code {
	var de *apperr.Error
	if errors.As(err, &de) {
		return de.Code
	}
	return 0
}
