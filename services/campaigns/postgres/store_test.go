package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit/auditpb"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/services/campaigns"
	"github.com/campaignmesh/campaignmesh/services/campaigns/postgres"
)

func openStore(t *testing.T) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func code(err error) apperr.Code {
	var de *apperr.Error
	if errors.As(err, &de) {
		return de.Code
	}
	return 0
}

func wall(t *testing.T, s string) campaigns.WallClock {
	t.Helper()
	w, err := campaigns.ParseWallClock(s)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// draft is a full campaign definition as a user would create it.
func draft(t *testing.T, name string) campaigns.Campaign {
	t.Helper()
	return campaigns.Campaign{
		Name: name, Description: "spring sale", Channel: campaigns.ChannelEmail,
		Schedule: campaigns.Schedule{Start: wall(t, "2026-03-08T09:00"), End: wall(t, "2026-11-01T01:30"), TimeZone: "America/New_York"},
		Budget:   campaigns.Budget{TotalMicros: 5_000_000_000, DailyMicros: 100_000_000, Currency: "USD", Pacing: campaigns.PacingEven},
		Goal:     "purchase",
		Variants: []campaigns.Variant{{Name: "a", Weight: 60}, {Name: "b", Weight: 40}},
		Tags:     []string{"spring", "sale"},
		Labels:   map[string]string{"team": "growth"},
	}
}

func principal(tenant string) *authn.Principal {
	return &authn.Principal{TenantID: tenant, Subject: "user-" + tenant, Permissions: []string{"campaigns.read", "campaigns.write"}}
}

func TestCampaignRoundTripAndTenantScope(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	svc := campaigns.NewService(s, nil)
	in := draft(t, "Spring")
	c, err := svc.CreateCampaign(ctx, principal("t1"), in)
	if err != nil {
		t.Fatal(err)
	}
	if c.ID == "" || c.State != campaigns.Draft || c.Revision != 1 || c.Creator != "user-t1" || c.CreateTime.IsZero() {
		t.Fatalf("created %+v", c)
	}
	// 09:00 EDT and 01:30 EDT (first of the two 01:30s on the fall-back night).
	if !c.Schedule.StartTime.Equal(time.Date(2026, 3, 8, 13, 0, 0, 0, time.UTC)) || !c.Schedule.EndTime.Equal(time.Date(2026, 11, 1, 5, 30, 0, 0, time.UTC)) {
		t.Errorf("resolved schedule %v .. %v", c.Schedule.StartTime, c.Schedule.EndTime)
	}
	got, err := s.GetCampaign(ctx, "t1", c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, got) {
		t.Errorf("read back differs:\ncreated %+v\nread    %+v", c, got)
	}
	want := in
	want.Tags = []string{"sale", "spring"} // sorted
	for _, d := range []struct{ got, want any }{
		{got.Name, want.Name}, {got.Description, want.Description}, {got.Channel, want.Channel}, {got.Budget, want.Budget},
		{got.Goal, want.Goal}, {got.Tags, want.Tags}, {got.Labels, want.Labels}, {got.Variants, want.Variants},
		{got.Schedule.Start, want.Schedule.Start}, {got.Schedule.End, want.Schedule.End}, {got.Schedule.TimeZone, want.Schedule.TimeZone},
	} {
		if !reflect.DeepEqual(d.want, d.got) {
			t.Errorf("field is %+v, want %+v", d.got, d.want)
		}
	}
	if _, err := s.GetCampaign(ctx, "t2", c.ID); code(err) != apperr.NotFound {
		t.Fatalf("another tenant reads the campaign: %v", err)
	}
	if _, _, err := s.UpdateCampaign(ctx, "t2", c.ID, func(*campaigns.Campaign) (*campaigns.Transition, *audit.Record, error) { return nil, nil, nil }); code(err) != apperr.NotFound {
		t.Fatalf("another tenant updates the campaign: %v", err)
	}
	if err := s.DeleteCampaign(ctx, "t2", c.ID, func(campaigns.Campaign) error { return nil }, nil); code(err) != apperr.NotFound {
		t.Fatalf("another tenant deletes the campaign: %v", err)
	}
	if list, err := s.ListCampaigns(ctx, "t2", campaigns.ListQuery{Size: 10}); err != nil || len(list) != 0 {
		t.Fatalf("another tenant lists %d campaigns (%v)", len(list), err)
	}
}

func TestUpdateCampaignIsAtomicWithItsTransition(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	c, err := campaigns.NewService(s, nil).CreateCampaign(ctx, principal("t1"), draft(t, "Atomic"))
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if _, _, err := s.UpdateCampaign(ctx, "t1", c.ID, func(cur *campaigns.Campaign) (*campaigns.Transition, *audit.Record, error) {
		cur.Name = "changed"
		return nil, nil, boom
	}); !errors.Is(err, boom) {
		t.Fatalf("failing change: %v", err)
	}
	if got, _ := s.GetCampaign(ctx, "t1", c.ID); got.Name != "Atomic" || got.Revision != 1 {
		t.Fatalf("a failed change was stored: %+v", got)
	}
	if _, _, err := s.UpdateCampaign(ctx, "t1", c.ID, func(cur *campaigns.Campaign) (*campaigns.Transition, *audit.Record, error) {
		cur.State = campaigns.Scheduled // a state change without its transition is refused
		return nil, nil, nil
	}); err == nil {
		t.Fatal("state change without a transition was stored")
	}
	updated, tr, err := s.UpdateCampaign(ctx, "t1", c.ID, func(cur *campaigns.Campaign) (*campaigns.Transition, *audit.Record, error) {
		cur.State = campaigns.Scheduled
		return &campaigns.Transition{From: campaigns.Draft, To: campaigns.Scheduled, Trigger: "test", Actor: "me", EffectiveTime: time.Now()}, nil, nil
	})
	if err != nil || updated.State != campaigns.Scheduled || updated.Revision != 2 || tr.ID == "" || tr.Seq == 0 || !updated.UpdateTime.After(c.UpdateTime) {
		t.Fatalf("update = %+v, %+v, %v", updated, tr, err)
	}
	ts, err := s.ListTransitions(ctx, "t1", c.ID, 0, 10)
	if err != nil || len(ts) != 1 || ts[0].ID != tr.ID || ts[0].From != campaigns.Draft || ts[0].To != campaigns.Scheduled {
		t.Fatalf("transitions %+v %v", ts, err)
	}
	if ts, err := s.ListTransitions(ctx, "t2", c.ID, 0, 10); err != nil || len(ts) != 0 {
		t.Fatalf("another tenant sees transitions: %+v %v", ts, err)
	}
}

// In audited work, every change writes its audit record into the outbox in its own
// transaction: a change is stored with its record or not at all, so a crash right after the
// commit cannot lose the record.
func TestChangesCommitWithTheirAuditRecord(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	ctx := audit.WithWork(context.Background(), func() audit.Record {
		return audit.Record{Method: "test/Change", Actor: "me", ActorKind: "user", Outcome: codes.OK, Service: "campaigns"}
	})
	svc := campaigns.NewService(s, nil)
	// Without the outbox table the record cannot be stored, so neither is the change.
	if _, err := s.Pool().Exec(context.Background(), `ALTER TABLE audit_outbox RENAME TO audit_outbox_away`); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateCampaign(ctx, principal("t1"), draft(t, "Unaudited")); err == nil {
		t.Fatal("a campaign was created without its audit record")
	}
	if cs, err := s.ListCampaigns(context.Background(), "t1", campaigns.ListQuery{Size: 10}); err != nil || len(cs) != 0 {
		t.Fatalf("campaigns after the failed create: %d (%v)", len(cs), err)
	}
	if _, err := s.Pool().Exec(context.Background(), `ALTER TABLE audit_outbox_away RENAME TO audit_outbox`); err != nil {
		t.Fatal(err)
	}
	c, err := svc.CreateCampaign(ctx, principal("t1"), draft(t, "Audited"))
	if err != nil {
		t.Fatal(err)
	}
	// The store writes the record its caller took and handed it, with the transition's id.
	_, tr, err := s.UpdateCampaign(ctx, "t1", c.ID, func(cur *campaigns.Campaign) (*campaigns.Transition, *audit.Record, error) {
		cur.State = campaigns.Scheduled
		rec, _ := audit.Take(ctx, "t1", cur.ID)
		return &campaigns.Transition{From: campaigns.Draft, To: campaigns.Scheduled, Trigger: "test", Actor: "me", EffectiveTime: time.Now()}, &rec, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A change that fails writes no record, even one it was handed.
	if _, _, err := s.UpdateCampaign(ctx, "t1", c.ID, func(cur *campaigns.Campaign) (*campaigns.Transition, *audit.Record, error) {
		rec, _ := audit.Take(ctx, "t1", cur.ID)
		return nil, &rec, errors.New("boom")
	}); err == nil {
		t.Fatal("failing change succeeded")
	}
	// A change handed no record writes none, even in audited work: the store never takes one
	// from the context itself.
	if _, _, err := s.UpdateCampaign(ctx, "t1", c.ID, func(cur *campaigns.Campaign) (*campaigns.Transition, *audit.Record, error) {
		cur.Description = "unaudited"
		return nil, nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	rows, err := s.Pool().Query(context.Background(), `SELECT record FROM audit_outbox ORDER BY create_time`)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (audit.Record, error) {
		var data []byte
		var p authv1.AuditRecord
		if err := row.Scan(&data); err != nil {
			return audit.Record{}, err
		}
		if err := proto.Unmarshal(data, &p); err != nil {
			return audit.Record{}, err
		}
		return auditpb.FromProto(&p), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 {
		t.Fatalf("outbox holds %d records, want 2 (create, transition): %+v", len(recs), recs)
	}
	for _, r := range recs {
		if r.Method != "test/Change" || r.TenantID != "t1" || r.Resource != c.ID || r.Outcome != codes.OK {
			t.Errorf("record %+v", r)
		}
	}
	if recs[1].ID != tr.ID {
		t.Errorf("the transition's record has id %s, want the transition's %s", recs[1].ID, tr.ID)
	}
}

func TestListFiltersAndOrders(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	svc := campaigns.NewService(s, nil)
	p := principal("t1")
	mk := func(name string, ch campaigns.Channel, tags []string, start, end string) campaigns.Campaign {
		c := campaigns.Campaign{Name: name, Channel: ch, Tags: tags}
		if start != "" {
			c.Schedule = campaigns.Schedule{Start: wall(t, start), TimeZone: "UTC"}
			if end != "" {
				c.Schedule.End = wall(t, end)
			}
		}
		out, err := svc.CreateCampaign(ctx, p, c)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	alpha := mk("Alpha", campaigns.ChannelEmail, []string{"q1"}, "2026-01-01T00:00", "2026-02-01T00:00")
	beta := mk("beta", campaigns.ChannelSMS, []string{"q1", "q2"}, "2026-01-15T00:00", "")
	gamma := mk("Gamma", campaigns.ChannelEmail, nil, "2026-03-01T00:00", "2026-04-01T00:00")
	alpine := mk("alpine", campaigns.ChannelPush, []string{"q2"}, "", "")
	if _, err := svc.CreateCampaign(ctx, principal("t2"), campaigns.Campaign{Name: "Alpha", Channel: campaigns.ChannelEmail}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Transition(ctx, p, gamma.ID, campaigns.ActArchive, ""); err != nil {
		t.Fatal(err)
	}
	ts := func(s string) *time.Time { v, _ := time.Parse(time.RFC3339, s); return &v }
	tests := []struct {
		name string
		req  campaigns.ListRequest
		want []campaigns.Campaign
	}{
		{"all, oldest first", campaigns.ListRequest{}, []campaigns.Campaign{alpha, beta, gamma, alpine}},
		{"newest first", campaigns.ListRequest{OrderBy: "create_time desc"}, []campaigns.Campaign{alpine, gamma, beta, alpha}},
		{"by name (bytes: upper case first)", campaigns.ListRequest{OrderBy: "name"}, []campaigns.Campaign{alpha, gamma, alpine, beta}},
		{"by name desc", campaigns.ListRequest{OrderBy: "name desc"}, []campaigns.Campaign{beta, alpine, gamma, alpha}},
		{"state", campaigns.ListRequest{States: []campaigns.State{campaigns.Archived}}, []campaigns.Campaign{gamma}},
		{"states", campaigns.ListRequest{States: []campaigns.State{campaigns.Archived, campaigns.Draft}}, []campaigns.Campaign{alpha, beta, gamma, alpine}},
		{"channel", campaigns.ListRequest{Channels: []campaigns.Channel{campaigns.ChannelEmail}}, []campaigns.Campaign{alpha, gamma}},
		{"tag", campaigns.ListRequest{Tag: "q2"}, []campaigns.Campaign{beta, alpine}},
		{"name prefix ignores case", campaigns.ListRequest{NamePrefix: "AL"}, []campaigns.Campaign{alpha, alpine}},
		{"name prefix with LIKE characters", campaigns.ListRequest{NamePrefix: "a%"}, nil},
		{"window overlaps", campaigns.ListRequest{WindowStart: ts("2026-01-20T00:00:00Z"), WindowEnd: ts("2026-03-02T00:00:00Z")}, []campaigns.Campaign{alpha, beta, gamma}},
		{"window after alpha's end", campaigns.ListRequest{WindowStart: ts("2026-02-01T00:00:00Z")}, []campaigns.Campaign{beta, gamma}},
		{"window before everything", campaigns.ListRequest{WindowEnd: ts("2026-01-01T00:00:00Z")}, nil},
		{"filters combine", campaigns.ListRequest{Channels: []campaigns.Channel{campaigns.ChannelEmail, campaigns.ChannelSMS}, Tag: "q1", NamePrefix: "b"}, []campaigns.Campaign{beta}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			req := tt.req
			req.PageSize = 1 // every filter and order also pages
			for range 10 {
				page, next, err := svc.ListCampaigns(ctx, p, req)
				if err != nil {
					t.Fatal(err)
				}
				for _, c := range page {
					got = append(got, c.Name)
				}
				if next == "" {
					break
				}
				req.PageToken = next
			}
			var want []string
			for _, c := range tt.want {
				want = append(want, c.Name)
			}
			if !slices.Equal(want, got) {
				t.Errorf("names %q, want %q", got, want)
			}
		})
	}
	// A token belongs to its list: other filters or another order refuse it.
	_, next, err := svc.ListCampaigns(ctx, p, campaigns.ListRequest{PageSize: 1})
	if err != nil || next == "" {
		t.Fatal(next, err)
	}
	for _, other := range []campaigns.ListRequest{{PageToken: next, OrderBy: "name"}, {PageToken: next, Tag: "q1"}, {PageToken: next + "x"}} {
		if _, _, err := svc.ListCampaigns(ctx, p, other); code(err) != apperr.Invalid {
			t.Errorf("token reused with %+v: %v", other, err)
		}
	}
}

// Paging while other requests create campaigns: every campaign that existed when the listing
// began is listed exactly once, and none is listed twice, in every order.
func TestPaginationIsStableUnderConcurrentInserts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	svc := campaigns.NewService(s, nil)
	p := principal("t1")
	var before []string
	for i := range 60 {
		c, err := svc.CreateCampaign(ctx, p, campaigns.Campaign{Name: fmt.Sprintf("c-%03d", (i*37)%60), Channel: campaigns.ChannelWeb})
		if err != nil {
			t.Fatal(err)
		}
		before = append(before, c.ID)
	}
	for _, order := range []string{"create_time", "create_time desc", "name", "name desc"} {
		t.Run(order, func(t *testing.T) {
			seen := map[string]int{}
			req := campaigns.ListRequest{PageSize: 7, OrderBy: order}
			for pages := 0; ; pages++ {
				if pages > 100 {
					t.Fatal("paging does not end")
				}
				// While the first pages are read, other requests create campaigns whose names
				// sort before, between and after the listed ones.
				var wg sync.WaitGroup
				if pages < 10 {
					for _, name := range []string{"a-new", "c-030x", "z-new"} {
						wg.Go(func() {
							if _, err := svc.CreateCampaign(ctx, p, campaigns.Campaign{Name: name, Channel: campaigns.ChannelWeb}); err != nil {
								t.Error(err)
							}
						})
					}
				}
				page, next, err := svc.ListCampaigns(ctx, p, req)
				wg.Wait()
				if err != nil {
					t.Fatal(err)
				}
				for _, c := range page {
					seen[c.ID]++
				}
				if next == "" {
					break
				}
				req.PageToken = next
			}
			for _, id := range before {
				if seen[id] != 1 {
					t.Errorf("campaign %s listed %d times, want once", id, seen[id])
				}
			}
			for id, n := range seen {
				if n > 1 {
					t.Errorf("campaign %s listed %d times", id, n)
				}
			}
		})
	}
}

func TestDeleteRemovesDraftAndItsTransitions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	svc := campaigns.NewService(s, nil)
	p := principal("t1")
	c, err := svc.CreateCampaign(ctx, p, draft(t, "Doomed"))
	if err != nil {
		t.Fatal(err)
	}
	refuse := errors.New("no")
	if err := s.DeleteCampaign(ctx, "t1", c.ID, func(campaigns.Campaign) error { return refuse }, nil); !errors.Is(err, refuse) {
		t.Fatalf("refused delete: %v", err)
	}
	if err := svc.DeleteCampaign(ctx, p, c.ID, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetCampaign(ctx, "t1", c.ID); code(err) != apperr.NotFound {
		t.Fatalf("deleted campaign still readable: %v", err)
	}
	if err := svc.DeleteCampaign(ctx, p, c.ID, ""); code(err) != apperr.NotFound {
		t.Fatalf("second delete: %v", err)
	}
}

func TestBudgetCandidatesAcrossTenants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openStore(t)
	svc := campaigns.NewService(s, nil).WithClock(func() time.Time { return time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC) })
	var want []string
	for i, tenant := range []string{"t1", "t2", "t1"} {
		c, err := svc.CreateCampaign(ctx, principal(tenant), draft(t, fmt.Sprint("c", i)))
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range []campaigns.Action{campaigns.ActSchedule, campaigns.ActActivate} {
			if _, err := svc.Transition(ctx, principal(tenant), c.ID, a, ""); err != nil {
				t.Fatal(err)
			}
		}
		want = append(want, c.ID)
	}
	if _, err := svc.CreateCampaign(ctx, principal("t1"), draft(t, "draft")); err != nil { // not running: no candidate
		t.Fatal(err)
	}
	slices.Sort(want)
	var got []string
	after := ""
	for {
		cs, err := s.BudgetCandidates(ctx, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			got = append(got, c.ID)
		}
		if len(cs) < 2 {
			break
		}
		after = cs[len(cs)-1].ID
	}
	if !slices.Equal(want, got) {
		t.Errorf("candidates %v, want %v", got, want)
	}
}
