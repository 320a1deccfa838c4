package postgres_test

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

// evaluate returns the user ids (or emails, for contacts without one) a filter selects.
func evaluate(t *testing.T, a *delivery.Audiences, tenant string, f delivery.Filter) []string {
	t.Helper()
	var out []string
	err := a.EvaluateFilter(context.Background(), tenant, f, func(page []delivery.Contact) error {
		if len(page) > delivery.EvaluationPageSize {
			t.Errorf("page of %d contacts, want at most %d", len(page), delivery.EvaluationPageSize)
		}
		for _, c := range page {
			key := c.UserID
			if key == "" {
				key = c.Email
			}
			out = append(out, key)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("evaluate %+v: %v", f, err)
	}
	sort.Strings(out)
	return out
}

type event struct {
	typ, campaign string
	at            time.Time
}

// behaviour is an in-memory BehaviourSource: the users' events, and the candidates it was
// asked about.
type behaviour struct {
	mu     sync.Mutex
	events map[string][]event
	asked  []string
	calls  int
}

func (b *behaviour) MatchingUsers(_ context.Context, tenantID string, q delivery.BehaviourQuery, userIDs []string) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(userIDs) > delivery.MaxBehaviourCandidates {
		return nil, fmt.Errorf("asked about %d users", len(userIDs))
	}
	b.calls++
	b.asked = append(b.asked, userIDs...)
	var out []string
	for _, u := range userIDs {
		for _, e := range b.events[tenantID+"/"+u] {
			if e.typ == q.EventType && (q.CampaignID == "" || e.campaign == q.CampaignID) && !e.at.Before(q.Since) {
				out = append(out, u)
				break
			}
		}
	}
	return out, nil
}

const campaignX = "0b8e9c7e-51a4-4b4e-9d0e-6f1f8a4c2d10"

func TestSegmentEvaluation(t *testing.T) {
	s := openStore(t)
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	b := &behaviour{events: map[string][]event{
		"t1/u-ann":   {{"click", campaignX, now.Add(-24 * time.Hour)}},
		"t1/u-bob":   {{"click", campaignX, now.AddDate(0, 0, -40)}}, // too long ago
		"t1/u-carol": {{"click", "other", now.Add(-time.Hour)}, {"open", campaignX, now.Add(-time.Hour)}},
		"t1/u-dan":   {{"click", campaignX, now.Add(-time.Hour)}}, // not on the pro plan
	}}
	a := delivery.NewAudiences(s, b).WithClock(func() time.Time { return now })
	ctx := context.Background()
	granted := delivery.Consents{Email: delivery.Consent{State: delivery.ConsentGranted, Source: "form"}}
	ids := map[string]string{} // label → contact id
	for _, c := range []delivery.Contact{
		{UserID: "u-ann", Email: "ann@example.com", Attributes: map[string]string{"plan": "pro", "city": "Paris", "zip": "75011", "vip": "yes"}, Consent: granted},
		{UserID: "u-bob", Attributes: map[string]string{"plan": "pro", "city": "Lyon", "zip": "69001"}},
		{UserID: "u-carol", Attributes: map[string]string{"plan": "pro", "city": "Nice", "zip": "06000"}, Consent: granted},
		{UserID: "u-dan", Attributes: map[string]string{"plan": "free", "city": "Paris", "zip": "75002"}},
		{Email: "eve@example.com", Attributes: map[string]string{"plan": "pro", "city": "Paris"}, Consent: granted},
		{UserID: "u-odd", Attributes: map[string]string{"plan": "x'); DROP TABLE contacts; --"}},
	} {
		made := mustCreate(t, a, "t1", c)
		ids[cmp.Or(c.UserID, c.Email)] = made.ID
	}
	// Same attributes in another tenant: never selected.
	mustCreate(t, a, "t2", delivery.Contact{UserID: "u-ann", Attributes: map[string]string{"plan": "pro"}})

	attr := func(key string, op delivery.AttributeOp, vals ...string) delivery.AttributeCondition {
		return delivery.AttributeCondition{Key: key, Op: op, Values: vals}
	}
	for name, tc := range map[string]struct {
		f    delivery.Filter
		want []string
	}{
		"everyone":       {delivery.Filter{}, []string{"eve@example.com", "u-ann", "u-bob", "u-carol", "u-dan", "u-odd"}},
		"equals":         {delivery.Filter{Attributes: []delivery.AttributeCondition{attr("plan", delivery.AttrEquals, "pro")}}, []string{"eve@example.com", "u-ann", "u-bob", "u-carol"}},
		"in":             {delivery.Filter{Attributes: []delivery.AttributeCondition{attr("city", delivery.AttrIn, "Lyon", "Nice")}}, []string{"u-bob", "u-carol"}},
		"exists":         {delivery.Filter{Attributes: []delivery.AttributeCondition{attr("vip", delivery.AttrExists)}}, []string{"u-ann"}},
		"prefix":         {delivery.Filter{Attributes: []delivery.AttributeCondition{attr("zip", delivery.AttrPrefix, "75")}}, []string{"u-ann", "u-dan"}},
		"and":            {delivery.Filter{Attributes: []delivery.AttributeCondition{attr("plan", delivery.AttrEquals, "pro"), attr("city", delivery.AttrEquals, "Paris")}}, []string{"eve@example.com", "u-ann"}},
		"consent":        {delivery.Filter{ConsentGranted: []delivery.Channel{delivery.ChannelEmail}}, []string{"eve@example.com", "u-ann", "u-carol"}},
		"no sms consent": {delivery.Filter{ConsentGranted: []delivery.Channel{delivery.ChannelSMS}}, nil},
		"quote is data":  {delivery.Filter{Attributes: []delivery.AttributeCondition{attr("plan", delivery.AttrEquals, "x'); DROP TABLE contacts; --")}}, []string{"u-odd"}},
		"quote prefix":   {delivery.Filter{Attributes: []delivery.AttributeCondition{attr("plan", delivery.AttrPrefix, "x')")}}, []string{"u-odd"}},
		"nothing":        {delivery.Filter{Attributes: []delivery.AttributeCondition{attr("plan", delivery.AttrEquals, "enterprise")}}, nil},
	} {
		t.Run(name, func(t *testing.T) {
			if got := evaluate(t, a, "t1", tc.f); !slices.Equal(got, tc.want) {
				t.Errorf("selected %v, want %v", got, tc.want)
			}
		})
	}
	if b.calls != 0 {
		t.Errorf("filters without behaviour asked the behaviour source %d times", b.calls)
	}

	// Behaviour: "pro plan, clicked campaign X in the last 30 days". The source is asked only
	// about the candidates the attributes left, with a user id.
	f := delivery.Filter{
		Attributes: []delivery.AttributeCondition{attr("plan", delivery.AttrEquals, "pro")},
		Behaviour:  &delivery.BehaviourCondition{EventType: "click", CampaignID: campaignX, WithinDays: 30},
	}
	if got := evaluate(t, a, "t1", f); !slices.Equal(got, []string{"u-ann"}) {
		t.Errorf("behaviour segment selected %v, want [u-ann]", got)
	}
	wantAsked := []string{"u-ann", "u-bob", "u-carol", ids["u-ann"], ids["u-bob"], ids["u-carol"], ids["eve@example.com"]}
	slices.Sort(b.asked)
	slices.Sort(wantAsked)
	if !slices.Equal(b.asked, wantAsked) {
		t.Errorf("behaviour source asked about %v, want only the pro-plan contacts' user and contact ids %v", b.asked, wantAsked)
	}
	// Delivery's own events (a click on a tracked link) carry the contact id: eve, who has no
	// user id, clicked campaign X in an email.
	b.mu.Lock()
	b.events["t1/"+ids["eve@example.com"]] = []event{{"click", campaignX, now.Add(-time.Hour)}}
	b.mu.Unlock()
	if got := evaluate(t, a, "t1", f); !slices.Equal(got, []string{"eve@example.com", "u-ann"}) {
		t.Errorf("behaviour segment with a tracked click selected %v, want [eve@example.com u-ann]", got)
	}
	// Any campaign, 60 days: bob's older click counts now, carol's click on another campaign too.
	f.Behaviour = &delivery.BehaviourCondition{EventType: "click", WithinDays: 60}
	if got := evaluate(t, a, "t1", f); !slices.Equal(got, []string{"eve@example.com", "u-ann", "u-bob", "u-carol"}) {
		t.Errorf("any-campaign segment selected %v", got)
	}

	// Saved segments evaluate the same way, at evaluation time: a contact created after the
	// segment is in it.
	seg, err := a.CreateSegment(ctx, "t1", delivery.Segment{Name: "Paris pros", Filter: delivery.Filter{
		Attributes: []delivery.AttributeCondition{attr("plan", delivery.AttrEquals, "pro"), attr("city", delivery.AttrEquals, "Paris")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, a, "t1", delivery.Contact{UserID: "u-late", Attributes: map[string]string{"plan": "pro", "city": "Paris"}})
	var members []string
	if err := a.EvaluateSegment(ctx, "t1", seg.ID, func(page []delivery.Contact) error {
		for _, c := range page {
			members = append(members, c.ID)
		}
		return nil
	}); err != nil || len(members) != 3 {
		t.Errorf("saved segment: %d members, %v; want 3", len(members), err)
	}
	if got, err := a.GetSegment(ctx, "t1", seg.ID); err != nil || len(got.Filter.Attributes) != 2 || got.Filter.Attributes[1].Values[0] != "Paris" {
		t.Errorf("stored segment %+v %v", got, err)
	}
	if _, err := a.CreateSegment(ctx, "t1", delivery.Segment{Name: "Paris pros"}); code(err) != apperr.AlreadyExists {
		t.Errorf("duplicate name: %v", err)
	}
	if _, err := a.GetSegment(ctx, "t2", seg.ID); code(err) != apperr.NotFound {
		t.Errorf("other tenant's segment: %v", err)
	}
	if err := a.EvaluateSegment(ctx, "t2", seg.ID, func([]delivery.Contact) error { return nil }); code(err) != apperr.NotFound {
		t.Errorf("evaluate other tenant's segment: %v", err)
	}
	// An update changes what the next evaluation selects; a name taken by another segment of
	// the tenant is refused; another tenant cannot update it.
	seg.Filter.Attributes[1].Values = []string{"Lyon"}
	if up, err := a.UpdateSegment(ctx, "t1", seg); err != nil || up.Filter.Attributes[1].Values[0] != "Lyon" || !up.UpdateTime.After(seg.UpdateTime) {
		t.Errorf("update segment: %+v %v", up, err)
	}
	if got := evaluate(t, a, "t1", seg.Filter); !slices.Equal(got, []string{"u-bob"}) {
		t.Errorf("updated filter selects %v", got)
	}
	if _, err := a.UpdateSegment(ctx, "t2", seg); code(err) != apperr.NotFound {
		t.Errorf("other tenant's update: %v", err)
	}
	other, err := a.CreateSegment(ctx, "t1", delivery.Segment{Name: "other"})
	if err != nil {
		t.Fatal(err)
	}
	other.Name = "Paris pros"
	if _, err := a.UpdateSegment(ctx, "t1", other); code(err) != apperr.AlreadyExists {
		t.Errorf("rename to a taken name: %v", err)
	}
	if err := a.DeleteSegment(ctx, "t1", other.ID); err != nil {
		t.Fatal(err)
	}
	if segs, err := a.ListSegments(ctx, "t1", "", 10); err != nil || len(segs) != 1 {
		t.Errorf("list segments: %d %v", len(segs), err)
	}
	if err := a.DeleteSegment(ctx, "t1", seg.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.GetSegment(ctx, "t1", seg.ID); code(err) != apperr.NotFound {
		t.Errorf("deleted segment: %v", err)
	}
	if n := count(t, s, `SELECT count(*) FROM contacts`); n != 8 {
		t.Errorf("%d contacts after the injection attempts, want 8", n)
	}

	// Without a behaviour source, a behaviour condition is UNAVAILABLE, not silently ignored.
	if err := delivery.NewAudiences(s, nil).EvaluateFilter(ctx, "t1", f, func([]delivery.Contact) error { return nil }); code(err) != apperr.Unavailable {
		t.Errorf("no behaviour source: %v", err)
	}
}

// Evaluation pages through the tenant's contacts; the behaviour source gets each page's
// candidates in chunks it accepts, and every match comes out once.
func TestSegmentEvaluationPages(t *testing.T) {
	s := openStore(t)
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	b := &behaviour{events: map[string][]event{}}
	a := delivery.NewAudiences(s, b).WithClock(func() time.Time { return now })
	const n = 2*delivery.EvaluationPageSize + 301
	us := make([]delivery.ContactUpsert, 0, n)
	for i := range n {
		u := fmt.Sprintf("u%05d", i)
		us = append(us, delivery.ContactUpsert{UserID: u, Attributes: map[string]string{"tier": fmt.Sprint(i % 3)}})
		if i%7 == 0 {
			b.events["t1/"+u] = []event{{"purchase", "", now.Add(-time.Hour)}}
		}
	}
	if _, err := s.UpsertContacts(context.Background(), "t1", us, now); err != nil {
		t.Fatal(err)
	}
	got := evaluate(t, a, "t1", delivery.Filter{
		Attributes: []delivery.AttributeCondition{{Key: "tier", Op: delivery.AttrIn, Values: []string{"0", "1"}}},
		Behaviour:  &delivery.BehaviourCondition{EventType: "purchase", WithinDays: 1},
	})
	want := 0
	for i := range n {
		if i%3 != 2 && i%7 == 0 {
			want++
		}
	}
	if len(got) != want || len(slices.Compact(slices.Clone(got))) != want {
		t.Errorf("selected %d contacts (%d distinct), want %d", len(got), len(slices.Compact(slices.Clone(got))), want)
	}
	// Each candidate is asked about by its user id and its contact id.
	if len(b.asked) != 2*(n-n/3) || b.calls < 2 {
		t.Errorf("behaviour source asked about %d ids in %d calls, want %d in several", len(b.asked), b.calls, 2*(n-n/3))
	}
}
