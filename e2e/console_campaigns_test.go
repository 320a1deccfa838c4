package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

var (
	etagInput      = regexp.MustCompile(`name="etag" value="([^"]+)"`)
	requestIDInput = regexp.MustCompile(`name="request_id" value="([^"]+)"`)
)

// consoleCampaigns drives the campaign screens and the overview: a campaign created through
// the form and read back over REST, edited, moved through its states with the buttons, a
// stale form answered with the conflict page, the list's filters and search, the history, an
// analyst's and a viewer's limits, escaping, and bad input answered in words with the form
// kept.
func consoleCampaigns(t *testing.T, env *consoleEnv) {
	admin, analyst := env.admin, env.analyst
	rest := func(method, path string, body any) (int, map[string]any) {
		t.Helper()
		code, out, _ := env.m.rest(t, method, path, env.token, body)
		return code, out
	}
	page := func(c *consoleClient, path string, want int) string {
		t.Helper()
		code, body, _ := c.get(t, path)
		if code != want {
			t.Fatalf("GET %s: %d, want %d\n%s", path, code, want, body)
		}
		return body
	}
	etagOf := func(body string) string {
		t.Helper()
		m := etagInput.FindStringSubmatch(body)
		if m == nil {
			t.Fatal("no etag on the page")
		}
		return m[1]
	}

	// The form, as the UI contract names its fields.
	form := page(admin, "/console/campaigns/new", http.StatusOK)
	for _, label := range []string{"Name", "Channel", "Start", "End", "Time zone", "Total budget", "Currency", "Pacing",
		"Goal event", "Variant 1 name", "Variant 1 weight", "Variant 2 name", "Variant 2 weight", "Create campaign"} {
		if !strings.Contains(form, label) {
			t.Errorf("the new campaign form lacks %q", label)
		}
	}
	rid := requestIDInput.FindStringSubmatch(form)
	if rid == nil {
		t.Fatal("the form has no request id")
	}
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	startWall := time.Now().In(ny).Add(72 * time.Hour).Truncate(time.Minute)
	endWall := startWall.Add(10 * 24 * time.Hour)
	good := func() url.Values {
		return url.Values{"name": {"Winter launch"}, "description": {"Console test"}, "channel": {"email"},
			"start": {startWall.Format("2006-01-02T15:04")}, "end": {endWall.Format("2006-01-02T15:04")}, "time_zone": {"America/New_York"},
			"budget_total": {"1500.50"}, "budget_daily": {"200"}, "currency": {"usd"}, "pacing": {"even"}, "goal": {"purchase"},
			"variant_name_1": {"control"}, "variant_weight_1": {"60"}, "variant_name_2": {"bold"}, "variant_weight_2": {"40"},
			"request_id": {rid[1]}}
	}

	// Bad input: 400 in words, the form kept.
	for _, tc := range []struct {
		field, value, want string
	}{
		{"name", "", "Name: enter a name."},
		{"end", startWall.Add(-time.Hour).Format("2006-01-02T15:04"), "End: must be after the start."},
		{"time_zone", "Mars/Olympus", "is not an IANA time zone name"},
		{"name", strings.Repeat("n", 201), "Name: at most 200 characters."},
		{"description", strings.Repeat("d", 2001), "Description: at most 2,000 characters."},
		{"budget_total", "12,5", "Total budget: enter an amount"},
		{"budget_total", "-3", "Total budget: enter an amount"},
		{"currency", "DOLLARS", "Currency: enter a three-letter"},
		{"variant_weight_2", "50", "the weights must add up to 100"},
	} {
		f := good()
		f.Set(tc.field, tc.value)
		f.Set("goal", "kept-goal")
		code, body, _ := admin.post(t, "/console/campaigns", f)
		if code != http.StatusBadRequest || !strings.Contains(body, tc.want) {
			t.Errorf("%s=%.20q: %d, want 400 saying %q", tc.field, tc.value, code, tc.want)
		}
		if !strings.Contains(body, `value="kept-goal"`) || !strings.Contains(body, `value="control"`) {
			t.Errorf("%s=%.20q: the form was not kept", tc.field, tc.value)
		}
	}

	// Created through the form; REST shows what was entered.
	code, _, hdr := admin.post(t, "/console/campaigns", good())
	loc := hdr.Get("Location")
	if code != http.StatusSeeOther || !strings.HasPrefix(loc, "/console/campaigns/") {
		t.Fatalf("create: %d %q", code, loc)
	}
	id := strings.TrimPrefix(loc, "/console/campaigns/")
	code, c := rest("GET", "/v1/campaigns/"+id, nil)
	if code != 200 {
		t.Fatalf("REST GET: %d", code)
	}
	gotJSON, _ := json.Marshal(map[string]any{"name": c["name"], "channel": c["channel"], "state": c["state"], "schedule": c["schedule"],
		"budget": c["budget"], "goal": c["goal"], "variants": c["variants"]})
	for _, want := range []string{`"name":"Winter launch"`, `"channel":"CHANNEL_EMAIL"`, `"state":"STATE_DRAFT"`,
		`"start":"` + startWall.Format("2006-01-02T15:04:05") + `"`, `"end":"` + endWall.Format("2006-01-02T15:04:05") + `"`,
		`"timeZone":"America/New_York"`, `"startTime":"` + startWall.UTC().Format(time.RFC3339) + `"`,
		`"totalMicros":"1500500000"`, `"dailyMicros":"200000000"`, `"currencyCode":"USD"`, `"pacing":"PACING_EVEN"`,
		`"conversionEvent":"purchase"`, `{"name":"control","weight":60}`, `{"name":"bold","weight":40}`} {
		if !strings.Contains(string(gotJSON), want) {
			t.Errorf("REST campaign lacks %s:\n%s", want, gotJSON)
		}
	}
	// A second submit of the same form (double click, reload) creates nothing new.
	if code, _, hdr := admin.post(t, "/console/campaigns", good()); code != http.StatusSeeOther || hdr.Get("Location") != loc {
		t.Errorf("resubmitted form: %d %q, want the same campaign %q", code, hdr.Get("Location"), loc)
	}

	// The same form id with other fields is refused by the service, in words, and the form
	// comes back with a fresh id so that the corrected form can be sent.
	other := good()
	other.Set("name", "Other launch")
	if code, body, _ := admin.post(t, "/console/campaigns", other); code != http.StatusBadRequest || !strings.Contains(body, "already used") ||
		!strings.Contains(body, `value="Other launch"`) || strings.Contains(body, rid[1]) || requestIDInput.FindStringSubmatch(body) == nil {
		t.Errorf("reused request id: %d, want 400 with the form and a new request id", code)
	}

	// Its page: the name, the state, the buttons valid for a draft only.
	body := page(admin, loc, http.StatusOK)
	staleEtag := etagOf(body)
	for _, want := range []string{"<h1>Winter launch</h1>", ">draft<", ">Schedule</button>", ">Archive</button>", ">Edit</a>",
		`href="/console/campaigns/` + id + `/analytics"`, ">History<", "Delete draft"} {
		if !strings.Contains(body, want) {
			t.Errorf("draft page lacks %q", want)
		}
	}
	for _, absent := range []string{">Activate</button>", ">Pause</button>", ">Resume</button>", ">Complete</button>", ">Cancel</button>"} {
		if strings.Contains(body, absent) {
			t.Errorf("draft page offers %q", absent)
		}
	}

	// Edited through the form.
	edit := page(admin, loc+"/edit", http.StatusOK)
	f := good()
	f.Del("request_id")
	f.Set("etag", etagOf(edit))
	f.Set("name", "Winter launch 2")
	f.Set("budget_total", "2000")
	if code, _, hdr := admin.post(t, loc+"/edit", f); code != http.StatusSeeOther || hdr.Get("Location") != loc {
		t.Fatalf("edit: %d %q", code, hdr.Get("Location"))
	}
	if _, c := rest("GET", "/v1/campaigns/"+id, nil); c["name"] != "Winter launch 2" || c["budget"].(map[string]any)["totalMicros"] != "2000000000" {
		t.Errorf("after edit: %v %v", c["name"], c["budget"])
	}
	// Bad input on the edit form: 400, kept.
	f.Set("time_zone", "Nowhere/Town")
	if code, body, _ := admin.post(t, loc+"/edit", f); code != http.StatusBadRequest || !strings.Contains(body, "Nowhere/Town") {
		t.Errorf("bad edit: %d", code)
	}

	// A button on a page rendered before the edit: someone else changed it meanwhile.
	if code, body, _ := admin.post(t, loc+"/schedule", url.Values{"etag": {staleEtag}}); code != http.StatusConflict ||
		!strings.Contains(body, "Someone else changed this") {
		t.Errorf("stale etag: %d, want 409 saying someone else changed it", code)
	}
	if _, c := rest("GET", "/v1/campaigns/"+id, nil); c["state"] != "STATE_DRAFT" {
		t.Errorf("a stale transition changed the state: %v", c["state"])
	}

	// Transitions through the buttons, each with the etag of the page it was on.
	step := func(action, wantState string, buttons ...string) {
		t.Helper()
		body := page(admin, loc, http.StatusOK)
		if !strings.Contains(body, ">"+strings.ToUpper(action[:1])+action[1:]+"</button>") {
			t.Fatalf("no %s button on the page", action)
		}
		if code, _, hdr := admin.post(t, loc+"/"+action, url.Values{"etag": {etagOf(body)}}); code != http.StatusSeeOther || hdr.Get("Location") != loc {
			t.Fatalf("%s: %d %q", action, code, hdr.Get("Location"))
		}
		if _, c := rest("GET", "/v1/campaigns/"+id, nil); c["state"] != wantState {
			t.Fatalf("after %s: %v, want %s", action, c["state"], wantState)
		}
		body = page(admin, loc, http.StatusOK)
		if !strings.Contains(body, `<div class="flash ok" role="status">`) {
			t.Errorf("after %s: no confirmation on the page", action)
		}
		for _, b := range buttons {
			if !strings.Contains(body, ">"+b+"</button>") {
				t.Errorf("after %s: no %s button", action, b)
			}
		}
	}
	step("schedule", "STATE_SCHEDULED", "Activate", "Cancel")
	step("activate", "STATE_ACTIVE", "Pause", "Complete", "Cancel")
	step("pause", "STATE_PAUSED", "Resume", "Complete", "Cancel")
	step("resume", "STATE_ACTIVE", "Pause")

	// Editing a running campaign: what may not change any more is disabled (so not sent);
	// the variants' weights still may.
	edit = page(admin, loc+"/edit", http.StatusOK)
	for _, want := range []string{`name="channel" disabled`, `name="start" value="` + startWall.Format("2006-01-02T15:04") + `" step="1" disabled`,
		`name="goal" value="purchase" maxlength="200" placeholder="purchase" disabled`, `name="variant_name_1" value="control" maxlength="64" readonly`} {
		if !strings.Contains(edit, want) {
			t.Errorf("active campaign's edit form lacks %s", want)
		}
	}
	browser := url.Values{"etag": {etagOf(edit)}, "name": {"Winter launch 2"}, "description": {"Console test"},
		"end": {endWall.Add(24 * time.Hour).Format("2006-01-02T15:04")}, "budget_total": {"2000"}, "budget_daily": {"200"}, "pacing": {"even"},
		"variant_name_1": {"control"}, "variant_weight_1": {"50"}, "variant_name_2": {"bold"}, "variant_weight_2": {"50"}}
	if code, body, hdr := admin.post(t, loc+"/edit", browser); code != http.StatusSeeOther || hdr.Get("Location") != loc {
		t.Fatalf("edit the active campaign: %d %q\n%s", code, hdr.Get("Location"), body)
	}
	if _, c := rest("GET", "/v1/campaigns/"+id, nil); !strings.Contains(fmt.Sprint(c["variants"]), "weight:50") ||
		c["schedule"].(map[string]any)["end"] != endWall.Add(24*time.Hour).Format("2006-01-02T15:04:05") || c["state"] != "STATE_ACTIVE" {
		t.Errorf("after editing the active campaign: %v %v", c["variants"], c["schedule"])
	}
	if body := page(admin, loc, http.StatusOK); !strings.Contains(body, "Campaign saved.") || !strings.Contains(body, "control (50 %), bold (50 %)") {
		t.Error("the campaign page does not show the saved change")
	}

	// History: one row per transition, oldest first.
	body = page(admin, loc, http.StatusOK)
	hist := body[strings.Index(body, ">History<"):]
	for _, trigger := range []string{"ScheduleCampaign", "ActivateCampaign", "PauseCampaign", "ResumeCampaign"} {
		if !strings.Contains(hist, trigger) {
			t.Errorf("history lacks %s", trigger)
		}
	}
	if strings.Index(hist, "ScheduleCampaign") > strings.Index(hist, "ResumeCampaign") {
		t.Error("history is not oldest first")
	}
	if strings.Contains(body, "Delete draft") {
		t.Error("an active campaign offers to be deleted")
	}

	// Events sent for it show in the list's and the overview's metrics.
	if code, out, _ := env.m.rest(t, "POST", "/v1/events:batch", env.token, map[string]any{"events": []map[string]any{
		{"eventId": "cc-1", "type": "EVENT_TYPE_IMPRESSION", "userId": "u1", "campaignId": id, "variant": "control"},
		{"eventId": "cc-2", "type": "EVENT_TYPE_CLICK", "userId": "u1", "campaignId": id, "variant": "control"},
		{"eventId": "cc-3", "type": "EVENT_TYPE_CONVERSION", "name": "purchase", "userId": "u1", "campaignId": id, "variant": "control"},
	}}); code != 200 || out["accepted"] != float64(3) {
		t.Fatalf("send events: %d %v", code, out)
	}
	rowOf := func(body string) string {
		i := strings.Index(body, `href="/console/campaigns/`+id+`"`)
		if i < 0 {
			return ""
		}
		row := body[i:]
		return row[:strings.Index(row, "</tr>")]
	}
	waitFor(t, "metrics on the campaign list", 30*time.Second, func() bool {
		_, body, _ := admin.get(t, "/console/campaigns?q=Winter")
		row := rowOf(body)
		return strings.Count(row, `<td class="num">1</td>`) == 3
	})
	waitFor(t, "the overview's figures", 30*time.Second, func() bool {
		_, body, _ := admin.get(t, "/console/")
		return strings.Count(rowOf(body), `<td class="num">1</td>`) == 3 && strings.Contains(body, "Events, last 24 hours") &&
			!strings.Contains(body, `<div class="value">0</div>`) && strings.Contains(body, "serving") &&
			!strings.Contains(body, "not available")
	})

	// List: search, state filter, sort, paging, bad queries.
	if body := page(admin, "/console/campaigns?q=winter+la", http.StatusOK); rowOf(body) == "" {
		t.Error("search by name prefix does not find it")
	}
	if body := page(admin, "/console/campaigns?q=Summer", http.StatusOK); rowOf(body) != "" || !strings.Contains(body, "No campaign matches") {
		t.Error("search for another name shows it")
	}
	if body := page(admin, "/console/campaigns?state=active", http.StatusOK); rowOf(body) == "" || !strings.Contains(body, ">active</span>") {
		t.Error("the active filter does not show it")
	}
	if body := page(admin, "/console/campaigns?state=draft", http.StatusOK); rowOf(body) != "" {
		t.Error("the draft filter shows an active campaign")
	}
	for _, bad := range []string{"?state=sleeping", "?sort=start_time", "?size=1000", "?q=" + strings.Repeat("q", 201)} {
		if code, body, _ := admin.get(t, "/console/campaigns"+bad); code != http.StatusBadRequest || !strings.Contains(body, `class="problem"`) {
			t.Errorf("list%.30s: %d, want 400", bad, code)
		}
	}
	for i := 0; i < 2; i++ {
		if code, _ := rest("POST", "/v1/campaigns", map[string]any{"name": "Paging " + string(rune('a'+i)), "channel": "CHANNEL_WEB"}); code != 200 {
			t.Fatalf("create for paging: %d", code)
		}
	}
	body = page(admin, "/console/campaigns?sort=name&size=1&q=Paging", http.StatusOK)
	next := regexp.MustCompile(`href="(/console/campaigns\?[^"]*page_token=[^"]+)">Next page`).FindStringSubmatch(body)
	if !strings.Contains(body, ">Paging a</a>") || strings.Contains(body, ">Paging b</a>") || next == nil {
		t.Fatalf("first page of one: %v", next)
	}
	if body := page(admin, strings.ReplaceAll(next[1], "&amp;", "&"), http.StatusOK); !strings.Contains(body, ">Paging b</a>") || strings.Contains(body, ">Paging a</a>") {
		t.Error("the next page does not carry on")
	}

	// A name with markup is shown as text.
	const evil = `<img src=x onerror=alert(1)>`
	code, ec := rest("POST", "/v1/campaigns", map[string]any{"name": evil, "description": evil, "channel": "CHANNEL_WEB",
		"goal": map[string]any{"conversionEvent": evil}})
	if code != 200 {
		t.Fatalf("create %q: %d", evil, code)
	}
	evilID, _ := ec["id"].(string)
	for _, path := range []string{"/console/campaigns", "/console/campaigns/" + evilID, "/console/campaigns/" + evilID + "/edit"} {
		body := page(admin, path, http.StatusOK)
		if strings.Contains(body, evil) || !strings.Contains(body, "&lt;img src=x onerror=alert(1)&gt;") {
			t.Errorf("%s: the name is not escaped", path)
		}
	}

	// An analyst reads but changes nothing: no buttons, and 403 when forcing the form or the
	// actions.
	body = page(analyst, "/console/campaigns", http.StatusOK)
	if strings.Contains(body, "New campaign") || rowOf(body) == "" {
		t.Error("analyst's list: a New campaign link, or not the campaign")
	}
	body = page(analyst, loc, http.StatusOK)
	for _, b := range []string{">Pause</button>", ">Complete</button>", ">Cancel</button>", ">Edit</a>", "Delete draft"} {
		if strings.Contains(body, b) {
			t.Errorf("analyst sees %q", b)
		}
	}
	if !strings.Contains(body, "<h1>Winter launch 2</h1>") || !strings.Contains(body, "ResumeCampaign") {
		t.Error("analyst does not see the campaign and its history")
	}
	page(analyst, "/console/campaigns/new", http.StatusForbidden)
	page(analyst, loc+"/edit", http.StatusForbidden)
	if code, _, _ := analyst.post(t, "/console/campaigns", good()); code != http.StatusForbidden {
		t.Errorf("analyst's create: %d, want 403", code)
	}
	ae := etagOf(page(admin, loc, http.StatusOK))
	for _, action := range []string{"pause", "cancel", "complete", "edit"} {
		if code, _, _ := analyst.post(t, loc+"/"+action, url.Values{"etag": {ae}, "name": {"x"}}); code != http.StatusForbidden {
			t.Errorf("analyst's %s: %d, want 403", action, code)
		}
	}
	if _, c := rest("GET", "/v1/campaigns/"+id, nil); c["state"] != "STATE_ACTIVE" || c["name"] != "Winter launch 2" {
		t.Errorf("the analyst changed the campaign: %v %v", c["state"], c["name"])
	}

	// A viewer (no analytics.read) sees campaigns without metrics, not an error page.
	if code, _ := rest("POST", "/v1/users", map[string]any{"user": map[string]any{"email": "vic@acme.example",
		"displayName": "Vic", "role": "ROLE_VIEWER"}, "password": "vic has a long password"}); code != 200 {
		t.Fatalf("create viewer: %d", code)
	}
	viewer := env.m.consoleSignIn(t, env.tenant, "vic@acme.example", "vic has a long password")
	body = page(viewer, "/console/", http.StatusOK)
	if !strings.Contains(body, "Active campaigns") || strings.Contains(body, "Events, last 24 hours") || !strings.Contains(body, "does not include metrics") {
		t.Error("viewer's overview: campaigns without metrics expected")
	}
	body = page(viewer, "/console/campaigns", http.StatusOK)
	if rowOf(body) == "" || strings.Contains(body, "Impressions") {
		t.Error("viewer's list: the campaign without metrics expected")
	}
	body = page(viewer, loc, http.StatusOK)
	if !strings.Contains(body, "<h1>Winter launch 2</h1>") || strings.Contains(body, "/analytics") || strings.Contains(body, "Last 30 days") || !strings.Contains(body, "Pacing") {
		t.Error("viewer's campaign page: the campaign and its pacing without metrics or an Analytics link expected")
	}

	// A draft can be deleted; other states cannot (the button is not offered).
	code, d := rest("POST", "/v1/campaigns", map[string]any{"name": "Throwaway", "channel": "CHANNEL_SMS"})
	if code != 200 {
		t.Fatalf("create draft: %d", code)
	}
	dl := "/console/campaigns/" + d["id"].(string)
	if code, _, hdr := admin.post(t, dl+"/delete", url.Values{"etag": {etagOf(page(admin, dl, http.StatusOK))}}); code != http.StatusSeeOther || hdr.Get("Location") != "/console/campaigns" {
		t.Errorf("delete draft: %d %q", code, hdr.Get("Location"))
	}
	if code, _ := rest("GET", "/v1/campaigns/"+d["id"].(string), nil); code != http.StatusNotFound {
		t.Errorf("deleted draft: REST %d", code)
	}
	page(admin, dl, http.StatusNotFound)
	page(admin, "/console/campaigns/not-an-id", http.StatusNotFound)
}
