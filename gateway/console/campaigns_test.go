package console

import (
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	"github.com/campaignmesh/campaignmesh/services/campaigns"
)

func goodForm() url.Values {
	return url.Values{
		"name": {"  Spring sale "}, "description": {"line one\r\nline two"}, "channel": {"email"},
		"start": {"2026-12-01T09:00"}, "end": {"2026-12-31T18:30:15"}, "time_zone": {"Europe/Berlin"},
		"budget_total": {"1500.5"}, "budget_daily": {"100"}, "currency": {"eur"}, "pacing": {"even"},
		"goal": {"purchase"}, "variant_name_1": {"a"}, "variant_weight_1": {"30"},
		"variant_name_2": {"b"}, "variant_weight_2": {"70"}, "variant_name_3": {""}, "variant_weight_3": {""},
		"request_id": {"console-0123"},
	}
}

func TestParseCampaignForm(t *testing.T) {
	f, c, problems := parseCampaignForm(goodForm())
	if len(problems) != 0 {
		t.Fatalf("problems: %v", problems)
	}
	daily := int64(100_000_000)
	want := &campaignsv1.Campaign{
		Name: "Spring sale", Description: "line one\nline two", Channel: campaignsv1.Channel_CHANNEL_EMAIL,
		Schedule: &campaignsv1.Schedule{Start: "2026-12-01T09:00:00", End: "2026-12-31T18:30:15", TimeZone: "Europe/Berlin"},
		Budget: &campaignsv1.Budget{TotalMicros: 1_500_500_000, DailyMicros: &daily, CurrencyCode: "EUR",
			Pacing: campaignsv1.Budget_PACING_EVEN},
		Goal:     &campaignsv1.Goal{ConversionEvent: "purchase"},
		Variants: []*campaignsv1.Variant{{Name: "a", Weight: 30}, {Name: "b", Weight: 70}},
	}
	if diff := cmp.Diff(want, c, protocmp.Transform()); diff != "" {
		t.Errorf("campaign (-want +got):\n%s", diff)
	}
	if f.RequestID != "console-0123" || len(f.Variants) != 2 || f.Currency != "EUR" {
		t.Errorf("form echo: %+v", f)
	}

	// A draft needs only a name and a channel.
	_, c, problems = parseCampaignForm(url.Values{"name": {"Draft"}, "channel": {"web"}, "pacing": {"asap"}})
	if len(problems) != 0 || c.Schedule != nil || c.Budget != nil || c.Goal != nil || c.Variants != nil {
		t.Errorf("minimal draft: %v %v", problems, c)
	}
}

func TestParseCampaignFormRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change map[string]string
		want   string
	}{
		{"empty name", map[string]string{"name": "  "}, "Name: enter a name"},
		{"name too long", map[string]string{"name": strings.Repeat("é", 201)}, "Name: at most 200 characters"},
		{"name with a newline", map[string]string{"name": "a\nb"}, "Name: one line only"},
		{"control characters", map[string]string{"goal": "a\x00b"}, "Goal event: no control characters"},
		{"description too long", map[string]string{"description": strings.Repeat("x", 2001)}, "Description: at most 2,000 characters"},
		{"goal too long", map[string]string{"goal": strings.Repeat("x", 201)}, "Goal event: at most 200 characters"},
		{"no channel", map[string]string{"channel": ""}, "Channel: choose one"},
		{"unknown channel", map[string]string{"channel": "fax"}, "Channel: choose one"},
		{"bad start", map[string]string{"start": "tomorrow"}, "Start: enter a date and time"},
		{"start with offset", map[string]string{"start": "2026-12-01T09:00+01:00"}, "Start: enter a date and time"},
		{"bad end", map[string]string{"end": "2026-13-01T09:00"}, "End: enter a date and time"},
		{"end before start", map[string]string{"end": "2026-11-30T09:00"}, "End: must be after the start"},
		{"end equal to start", map[string]string{"end": "2026-12-01T09:00:00"}, "End: must be after the start"},
		{"unknown zone", map[string]string{"time_zone": "Mars/Olympus"}, "Time zone: \"Mars/Olympus\" is not an IANA time zone"},
		{"server's local zone", map[string]string{"time_zone": "Local"}, "is not an IANA time zone"},
		{"zone path", map[string]string{"time_zone": "../../etc/passwd"}, "is not an IANA time zone"},
		{"zone too long", map[string]string{"time_zone": strings.Repeat("A", 65)}, "is not an IANA time zone"},
		{"schedule without zone", map[string]string{"time_zone": ""}, "Time zone: enter the IANA time zone"},
		{"budget not a number", map[string]string{"budget_total": "lots"}, "Total budget: enter an amount"},
		{"budget zero", map[string]string{"budget_total": "0"}, "Total budget: enter an amount"},
		{"budget negative", map[string]string{"budget_total": "-5"}, "Total budget: enter an amount"},
		{"budget too precise", map[string]string{"budget_total": "1.1234567"}, "Total budget: enter an amount"},
		{"budget too large", map[string]string{"budget_total": "1000000001"}, "Total budget: enter an amount"},
		{"daily budget without total", map[string]string{"budget_total": ""}, "Total budget: enter the total budget"},
		{"daily above total", map[string]string{"budget_daily": "2000"}, "Daily budget: must not be more than the total"},
		{"daily not a number", map[string]string{"budget_daily": "1e3"}, "Daily budget: enter an amount"},
		{"bad currency", map[string]string{"currency": "EURO"}, "Currency: enter a three-letter"},
		{"bad pacing", map[string]string{"pacing": "slow"}, "Pacing: choose"},
		{"weights not 100", map[string]string{"variant_weight_2": "60"}, "add up to 100 (they add up to 90)"},
		{"weight out of range", map[string]string{"variant_weight_2": "170"}, "Variant 2 weight: enter a whole number from 0 to 100"},
		{"weight not a number", map[string]string{"variant_weight_2": "half"}, "Variant 2 weight"},
		{"duplicate variant", map[string]string{"variant_name_2": "a"}, "Variant 2 name: \"a\" is used twice"},
		{"bad variant name", map[string]string{"variant_name_2": "<b>"}, "Variant 2 name: 1 to 64 letters"},
		{"variant name too long", map[string]string{"variant_name_2": strings.Repeat("v", 65)}, "Variant 2 name: 1 to 64"},
		{"weight without name", map[string]string{"variant_weight_3": "10"}, "Variant 3: enter a name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := goodForm()
			for k, x := range tc.change {
				v.Set(k, x)
			}
			f, _, problems := parseCampaignForm(v)
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Errorf("problems %q lack %q", problems, tc.want)
			}
			if !slices.Equal(f.Problems, problems) {
				t.Errorf("the form does not carry its problems: %q", f.Problems)
			}
			// The form keeps what was typed.
			if k := "goal"; f.Goal != strings.TrimSpace(v.Get(k)) {
				t.Errorf("goal not kept: %q", f.Goal)
			}
		})
	}
}

func TestMicros(t *testing.T) {
	for _, tc := range []struct {
		text   string
		micros int64
	}{{"1", 1_000_000}, {"1500.5", 1_500_500_000}, {"0.000001", 1}, {"1000000000", 1_000_000_000_000_000}, {"12.34", 12_340_000}} {
		m, ok := parseMicros(tc.text)
		if !ok || m != tc.micros {
			t.Errorf("parseMicros(%q) = %d %v, want %d", tc.text, m, ok, tc.micros)
		}
		if back := microsText(tc.micros); back != tc.text {
			t.Errorf("microsText(%d) = %q, want %q", tc.micros, back, tc.text)
		}
	}
	for _, bad := range []string{"", ".5", "1.", "1,5", "1 000", "+1", "0x10", "99999999999"} {
		if _, ok := parseMicros(bad); ok {
			t.Errorf("parseMicros(%q) accepted", bad)
		}
	}
}

// An edit sends only the fields the form submitted and changed: disabled (locked) fields are
// not submitted and keep the campaign's value.
func TestCampaignEdit(t *testing.T) {
	daily := int64(5_000_000)
	cur := &campaignsv1.Campaign{Id: "c1", Name: "Old", Channel: campaignsv1.Channel_CHANNEL_WEB, State: campaignsv1.Campaign_STATE_ACTIVE,
		Schedule: &campaignsv1.Schedule{Start: "2026-12-01T09:00:00", TimeZone: "UTC"},
		Budget:   &campaignsv1.Budget{TotalMicros: 100_000_000, DailyMicros: &daily, CurrencyCode: "EUR", Pacing: campaignsv1.Budget_PACING_ASAP},
		Goal:     &campaignsv1.Goal{ConversionEvent: "buy"}, Variants: []*campaignsv1.Variant{{Name: "a", Weight: 50}, {Name: "b", Weight: 50}}}
	// What an active campaign's form submits: no channel, start, zone, currency or goal.
	submitted := url.Values{"name": {"New"}, "description": {""}, "end": {"2026-12-31T00:00"}, "budget_total": {"100"},
		"budget_daily": {"5"}, "pacing": {"asap"}, "variant_name_1": {"a"}, "variant_weight_1": {"40"},
		"variant_name_2": {"b"}, "variant_weight_2": {"60"}}
	_, next, problems := parseCampaignForm(mergeCampaignValues(campaignValues(cur), submitted))
	if len(problems) != 0 {
		t.Fatalf("problems: %v", problems)
	}
	mask := campaignUpdateMask(submitted, cur, next)
	if want := []string{"name", "schedule.end", "variants"}; !slices.Equal(mask, want) {
		t.Errorf("mask %v, want %v", mask, want)
	}
	if next.GetChannel() != campaignsv1.Channel_CHANNEL_WEB || next.GetGoal().GetConversionEvent() != "buy" || next.GetSchedule().GetStart() != "2026-12-01T09:00:00" {
		t.Errorf("locked fields lost their values: %v", next)
	}
	// Without variant rows in the form, the variants are untouched.
	delete(submitted, "variant_name_1")
	delete(submitted, "variant_weight_1")
	delete(submitted, "variant_name_2")
	delete(submitted, "variant_weight_2")
	_, next, _ = parseCampaignForm(mergeCampaignValues(campaignValues(cur), submitted))
	if mask := campaignUpdateMask(submitted, cur, next); slices.Contains(mask, "variants") || len(next.GetVariants()) != 2 {
		t.Errorf("variants changed without being submitted: %v %v", mask, next.GetVariants())
	}
	// The unchanged form changes nothing.
	all := campaignValues(cur)
	_, next, _ = parseCampaignForm(all)
	if mask := campaignUpdateMask(all, cur, next); len(mask) != 0 {
		t.Errorf("unchanged form: mask %v", mask)
	}
}

// The console's tables of transitions and changeable fields agree with the service's state
// machine (the service decides; the console must not offer what fails, nor hide what works).
func TestCampaignStateTablesMatchTheService(t *testing.T) {
	for _, s := range campaignStates {
		domain := campaigns.State(stateSlug(s))
		if !domain.Valid() {
			t.Fatalf("state %s has no domain state %q", s, domain)
		}
		var want []string
		for _, a := range campaigns.UserActions {
			if _, err := campaigns.Next(domain, a); err == nil {
				want = append(want, string(a))
			}
		}
		var got []string
		for _, a := range actionsFrom(s) {
			got = append(got, a.Name)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: buttons %v, state machine %v", s, got, want)
		}
		for field, df := range map[string]campaigns.Field{
			"name": campaigns.FieldName, "description": campaigns.FieldDescription, "channel": campaigns.FieldChannel,
			"goal": campaigns.FieldGoal, "variants": campaigns.FieldVariants, "start": campaigns.FieldScheduleStart,
			"time_zone": campaigns.FieldScheduleZone, "end": campaigns.FieldScheduleEnd, "currency": campaigns.FieldBudgetCurrency,
			"budget_total": campaigns.FieldBudgetTotal, "budget_daily": campaigns.FieldBudgetDaily, "pacing": campaigns.FieldBudgetPacing,
			"variant_weights": campaigns.Field("variants (weights only)"),
		} {
			if got, want := campaignFieldChangeable(field, s), campaigns.CanChange(df, domain); got != want {
				t.Errorf("%s in %s: form says changeable=%v, service %v", field, s, got, want)
			}
		}
	}
	for _, a := range campaignActions {
		if transitionDone[a.Name] == "" || !slices.Contains(campaigns.UserActions, campaigns.Action(a.Name)) {
			t.Errorf("action %s: no message or no such RPC", a.Name)
		}
	}
}

func TestParseCampaignListQuery(t *testing.T) {
	lq, req, problem := parseCampaignListQuery(url.Values{"q": {" Spr "}, "state": {"budget_exhausted"}, "sort": {"name_desc"}, "size": {"100"}, "page_token": {"abc"}})
	if problem != "" {
		t.Fatal(problem)
	}
	want := &campaignsv1.ListCampaignsRequest{NamePrefix: "Spr", States: []campaignsv1.Campaign_State{campaignsv1.Campaign_STATE_BUDGET_EXHAUSTED},
		OrderBy: "name desc", PageSize: 100, PageToken: "abc"}
	if diff := cmp.Diff(want, req, protocmp.Transform()); diff != "" || lq.Q != "Spr" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
	_, req, _ = parseCampaignListQuery(url.Values{})
	if req.GetPageSize() != 25 || req.GetOrderBy() != "create_time desc" || len(req.GetStates()) != 0 {
		t.Errorf("defaults: %v", req)
	}
	for _, bad := range []url.Values{
		{"size": {"0"}}, {"size": {"101"}}, {"size": {"ten"}}, {"state": {"STATE_ACTIVE"}}, {"state": {"sleeping"}},
		{"sort": {"start"}}, {"q": {strings.Repeat("q", 201)}}, {"q": {"a\nb"}}, {"page_token": {strings.Repeat("t", 1025)}},
	} {
		if _, _, problem := parseCampaignListQuery(bad); problem == "" {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestRelChange(t *testing.T) {
	for _, tc := range []struct {
		v, prev int64
		want    string
	}{{5, 5, "no change"}, {0, 0, "no change"}, {3, 0, "new"}, {150, 100, "+50.0 %"}, {1, 3, "−66.7 %"}, {0, 7, "−100.0 %"}} {
		if got := relChange(tc.v, tc.prev); got != tc.want {
			t.Errorf("relChange(%d, %d) = %q, want %q", tc.v, tc.prev, got, tc.want)
		}
	}
}

func TestFormRows(t *testing.T) {
	rows := formRows(nil, false)
	if len(rows) != 2 || rows[0].Index != 1 || rows[1].Index != 2 {
		t.Errorf("empty form: %+v", rows)
	}
	typed := make([]variantInput, 19)
	if rows := formRows(typed, false); len(rows) != 20 || rows[19].Index != 20 {
		t.Errorf("at most 20 rows: %d", len(rows))
	}
	if rows := formRows(typed[:3], true); len(rows) != 3 {
		t.Errorf("locked variants get no empty rows: %d", len(rows))
	}
}

// The campaign pages render with every part filled, and escape user-supplied strings.
func TestCampaignTemplatesRender(t *testing.T) {
	pages, err := parsePages()
	if err != nil {
		t.Fatal(err)
	}
	const evil = `<img src=x onerror=alert(1)>`
	daily := int64(2_000_000)
	camp := &campaignsv1.Campaign{Id: "0b8f2a6e-0000-4000-8000-000000000001", Name: evil, Description: evil,
		Channel: campaignsv1.Channel_CHANNEL_WEB, State: campaignsv1.Campaign_STATE_BUDGET_EXHAUSTED,
		ExhaustedBudget: campaignsv1.ExhaustedBudget_EXHAUSTED_BUDGET_DAILY,
		Schedule:        &campaignsv1.Schedule{Start: "2026-12-01T09:00:00", End: "2026-12-02T09:00:00", TimeZone: "UTC"},
		Budget:          &campaignsv1.Budget{TotalMicros: 10_000_000, DailyMicros: &daily, CurrencyCode: "EUR"},
		Goal:            &campaignsv1.Goal{ConversionEvent: evil}, Variants: []*campaignsv1.Variant{{Name: "a", Weight: 100}}, Etag: "r3"}
	for name, data := range map[string]any{
		"campaigns": campaignsPageData{Rows: []campaignRow{{C: camp}}, Metrics: true, States: campaignStates, Sorts: campaignSorts, Next: "tok"},
		"campaign": campaignPageData{C: camp, Actions: actionsFrom(camp.State), ShowMetrics: true, Metrics: &analyticsv1.Metrics{Impressions: 1},
			Pacing:  &campaignsv1.CampaignPacing{CurrencyCode: "EUR", OnPace: true},
			History: []*campaignsv1.CampaignTransition{{FromState: campaignsv1.Campaign_STATE_DRAFT, ToState: campaignsv1.Campaign_STATE_SCHEDULED, Actor: evil}}},
		"campaign_form": func() campaignForm {
			f := editForm(camp)
			f.Problems = []string{evil}
			f.Variants = formRows(f.Variants, true)
			return f
		}(),
		"overview": overviewData{Analytics: true, Campaigns: true, HealthShown: true, Health: true, Events: kpi{Value: 3, Prev: 1},
			ActiveList: []campaignRow{{C: camp, M: &analyticsv1.Metrics{Clicks: 2}}}},
	} {
		var b strings.Builder
		if err := pages[name].ExecuteTemplate(&b, "layout", view{Title: evil, Data: data}); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if strings.Contains(b.String(), evil) || !strings.Contains(b.String(), "&lt;img src=x onerror=alert(1)&gt;") {
			t.Errorf("%s: the name is not escaped", name)
		}
	}
}
