package console_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/gateway/console"
	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/auth"
	authapp "github.com/campaignmesh/campaignmesh/services/auth/app"
	"github.com/campaignmesh/campaignmesh/services/billing"
)

// The Usage page over the real auth and billing services (mTLS, PostgreSQL, the users' own
// tokens): a tenant admin sees their tenant's days, totals and plan limits with the over mark;
// an analyst has no link and gets 403; an operator sees every tenant's totals and one tenant's
// page; another tenant's id from a tenant's admin is a 404 that shows nothing of it; bad dates
// are the page's 400.
func TestUsagePageOverTheServices(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ca := mtlstest.NewCA(t)
	boot := t.TempDir()
	a := servicetest.StartAuth(t, servicetest.AuthOptions{CA: ca, Config: func(c *authapp.Config) { c.BootstrapDir = boot }})
	b := servicetest.StartBilling(t, servicetest.BillingOptions{CA: ca, AuthAddr: a.Addr()})
	cons, err := console.New(console.Config{}, console.API{Auth: a.Client(t, "gateway"), Billing: b.Client(t, "gateway")})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(cons)
	t.Cleanup(srv.Close)

	initech, globex := a.NewTenant(t, "initech"), a.NewTenant(t, "globex")
	const anaPassword = "ana has a long password"
	if _, err := a.Service().CreateUser(ctx, &authn.Principal{TenantID: initech.Tenant.ID, Permissions: rbac.Admin.Permissions()},
		auth.User{Email: "ana@initech.example", Role: rbac.Analyst}, anaPassword); err != nil {
		t.Fatal(err)
	}
	var opLogin map[string]string
	raw, err := os.ReadFile(filepath.Join(boot, "operator.json"))
	if err != nil || json.Unmarshal(raw, &opLogin) != nil {
		t.Fatalf("operator credentials: %v", err)
	}

	// Usage as the metering job stores it: closed past days (fixed, so the job leaves them),
	// and today's, closed too so that the job's recompute (no sources here) keeps the figures.
	now := time.Now().UTC()
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	day := func(s string) time.Time {
		d, err := time.Parse(time.DateOnly, s)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	save := func(d time.Time, rows ...billing.Usage) {
		t.Helper()
		if err := b.Store().SaveUsage(ctx, d, rows, true); err != nil {
			t.Fatal(err)
		}
	}
	it, gx := initech.Tenant.ID, globex.Tenant.ID
	save(day("2026-01-10"), billing.Usage{TenantID: it, Meter: billing.EventsAccepted, Value: 1200},
		billing.Usage{TenantID: it, Meter: billing.ContactsStored, Value: 310}, billing.Usage{TenantID: it, Meter: billing.MessagesSMS, Value: 0},
		billing.Usage{TenantID: gx, Meter: billing.EventsAccepted, Value: 777777})
	save(day("2026-01-11"), billing.Usage{TenantID: it, Meter: billing.EventsAccepted, Value: 34},
		billing.Usage{TenantID: it, Meter: billing.ContactsStored, Value: 305}, billing.Usage{TenantID: gx, Meter: billing.MessagesEmail, Value: 424242})
	save(today, billing.Usage{TenantID: it, Meter: billing.EventsAccepted, Value: 150},
		billing.Usage{TenantID: it, Meter: billing.MessagesEmail, Value: 40}, billing.Usage{TenantID: it, Meter: billing.ContactsStored, Value: 500})
	// The month's first day, when it is not today: it counts for the monthly limits only.
	monthEmails := "40"
	if first := today.AddDate(0, 0, 1-today.Day()); !first.Equal(today) {
		save(first, billing.Usage{TenantID: it, Meter: billing.EventsAccepted, Value: 999}, billing.Usage{TenantID: it, Meter: billing.MessagesEmail, Value: 60},
			billing.Usage{TenantID: it, Meter: billing.ContactsStored, Value: 20})
		monthEmails = "100"
	}

	op := a.Login(t, "", opLogin["email"], opLogin["password"])
	if _, err := b.Client(t, "gateway").SetPlan(meshtest.Bearer(ctx, op), &billingv1.SetPlanRequest{Plan: &billingv1.Plan{TenantId: it, Name: "starter <b>",
		Limits: []*billingv1.PlanLimit{{Meter: "events_accepted", Limit: 100, Hard: true, Period: "day"},
			{Meter: "messages_email", Limit: 1000, Period: "month"}, {Meter: "contacts_stored", Limit: 500, Period: "month"}}}}); err != nil {
		t.Fatal(err)
	}

	admin := signIn(t, srv, "initech", initech.Admin.Email, initech.Password)
	analyst := signIn(t, srv, "initech", "ana@initech.example", anaPassword)
	operator := signIn(t, srv, "", opLogin["email"], opLogin["password"])
	const jan = "/console/usage?from=2026-01-10&to=2026-01-12"

	t.Run("admin: own days, totals and plan", func(t *testing.T) {
		if _, home := admin.get(t, "/console/"); !strings.Contains(home, `href="/console/usage"`) {
			t.Errorf("the admin has no Usage link")
		}
		code, body := admin.get(t, jan)
		if code != http.StatusOK {
			t.Fatalf("usage page: %d %s", code, body)
		}
		days := section(body, `id="usage-days"`, "</table>")
		for _, want := range []string{`<th scope="row">2026-01-10</th>`, "1,200", "310", `<th scope="row">2026-01-11</th>`, "34", "305",
			">Events accepted<", ">Contacts stored<", "1,234", // events: 1,200 + 34; contacts: the latest day's 305
			">Total<"} {
			if !strings.Contains(days, want) {
				t.Errorf("the day table lacks %q:\n%s", want, days)
			}
		}
		if strings.Contains(days, "SMS sent") || strings.Contains(days, "Emails sent") {
			t.Errorf("the day table shows a meter without a value in the range:\n%s", days)
		}
		if strings.Contains(body, "777,777") || strings.Contains(body, "424,242") {
			t.Errorf("the admin sees another tenant's usage")
		}
		if !strings.Contains(body, "Plan: starter &lt;b&gt;") {
			t.Errorf("the plan's name is missing or not escaped")
		}
		plan := section(body, `id="usage-plan"`, "</table>")
		for _, want := range []string{
			// events today 150 over the hard daily 100; emails this month (40 + 60 on its first
			// day) of 1,000; contacts, a gauge, its latest day's 500 of 500
			`Events accepted</th>
    <td class="num">150</td>
    <td class="num">100</td>
    <td>hard</td>
    <td>today (UTC)</td>
    <td><span class="state failed">over</span>`,
			`Emails sent</th>
    <td class="num">` + monthEmails + `</td>
    <td class="num">1,000</td>
    <td>soft</td>
    <td>this month (UTC)</td>
    <td><span class="state active">within</span>`,
			`Contacts stored</th>
    <td class="num">500</td>
    <td class="num">500</td>
    <td>soft</td>
    <td>this month (UTC)</td>
    <td><span class="state paused">reached</span>`} {
			if !strings.Contains(plan, want) {
				t.Errorf("the plan table lacks\n%s\nin\n%s", want, plan)
			}
		}
		// The default range is the month so far: today's figures, in the form's defaults.
		code, body = admin.get(t, "/console/usage")
		month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC).Format(time.DateOnly)
		if code != http.StatusOK || !strings.Contains(body, `name="from" type="date" value="`+month+`"`) ||
			!strings.Contains(section(body, `id="usage-days"`, "</table>"), `<th scope="row">`+today.Format(time.DateOnly)+`</th>`) {
			t.Errorf("default range: %d\n%s", code, body)
		}
		if strings.Contains(body, `name="tenant"`) {
			t.Errorf("a tenant's admin is offered the tenant selector")
		}
	})

	t.Run("analyst: no link, 403", func(t *testing.T) {
		if _, home := analyst.get(t, "/console/"); strings.Contains(home, `href="/console/usage"`) {
			t.Errorf("the analyst has a Usage link")
		}
		if code, body := analyst.get(t, jan); code != http.StatusForbidden || strings.Contains(body, "1,200") {
			t.Errorf("analyst: %d, want 403", code)
		}
	})

	t.Run("another tenant's id from a tenant admin: 404", func(t *testing.T) {
		code, body := admin.get(t, jan+"&tenant="+gx)
		if code != http.StatusNotFound || strings.Contains(body, "777,777") || strings.Contains(body, "424,242") || strings.Contains(body, "globex") {
			t.Errorf("another tenant's usage: %d\n%s", code, body)
		}
	})

	t.Run("operator: every tenant, then one", func(t *testing.T) {
		if _, home := operator.get(t, "/console/"); !strings.Contains(home, `href="/console/usage"`) {
			t.Errorf("the operator has no Usage link")
		}
		code, body := operator.get(t, jan)
		if code != http.StatusOK {
			t.Fatalf("operator's usage page: %d %s", code, body)
		}
		all := section(body, `id="usage-tenants"`, "</table>")
		for _, want := range []string{">initech (initech)</a>", ">globex (globex)</a>", "1,234", "777,777", "424,242", "305",
			`href="/console/usage?tenant=` + gx + `&amp;from=2026-01-10&amp;to=2026-01-12"`} {
			if !strings.Contains(all, want) {
				t.Errorf("the all-tenants table lacks %q:\n%s", want, all)
			}
		}
		if !strings.Contains(body, `<option value="`+gx+`" >globex (globex)</option>`) {
			t.Errorf("the selector lacks globex:\n%s", section(body, `name="tenant"`, "</select>"))
		}
		code, body = operator.get(t, jan+"&tenant="+gx)
		if code != http.StatusOK {
			t.Fatalf("operator, one tenant: %d %s", code, body)
		}
		days := section(body, `id="usage-days"`, "</table>")
		if !strings.Contains(body, "<h1>Usage of globex (globex)</h1>") || !strings.Contains(days, "777,777") || !strings.Contains(days, "424,242") ||
			strings.Contains(days, "1,200") || !strings.Contains(body, "No limits") {
			t.Errorf("operator, globex:\n%s", body)
		}
		if code, body = operator.get(t, jan+"&tenant="+it); code != http.StatusOK || !strings.Contains(body, `class="state failed">over<`) {
			t.Errorf("operator, initech: %d, want its plan with the over mark", code)
		}
	})

	t.Run("bad dates: the page's 400", func(t *testing.T) {
		for q, want := range map[string]string{
			"from=2026-02-30":                 "the first day: write it as 2026-01-31 (UTC)",
			"from=2026-01-12&to=2026-01-10":   "the last day is before the first day",
			"from=2025-01-01&to=2026-01-10":   "the range is 375 days; at most 366",
			"to=soon":                         "the last day",
			"from=2026-01-10&tenant=not%20id": "the organization is not valid",
		} {
			code, body := admin.get(t, "/console/usage?"+q)
			if code != http.StatusBadRequest || !strings.Contains(body, "Please check the dates: "+want) {
				t.Errorf("%s: %d, want 400 saying %q", q, code, want)
			}
		}
	})
}

// client is a browser without scripts, signed in to the console.
type client struct {
	srv  *httptest.Server
	http *http.Client
}

func signIn(t *testing.T, srv *httptest.Server, tenant, email, password string) *client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := *srv.Client()
	hc.Jar = jar
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c := &client{srv: srv, http: &hc}
	req, _ := http.NewRequest("POST", srv.URL+"/console/signin", strings.NewReader(url.Values{"tenant": {tenant}, "email": {email}, "password": {password}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/" {
		t.Fatalf("sign in as %s: %d %s", email, resp.StatusCode, resp.Header.Get("Location"))
	}
	return c
}

func (c *client) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := c.http.Get(c.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("%s: Content-Security-Policy %q", path, csp)
	}
	return resp.StatusCode, string(body)
}

// section is the part of body from the first start to the next end after it ("" if none).
func section(body, start, end string) string {
	i := strings.Index(body, start)
	if i < 0 {
		return ""
	}
	j := strings.Index(body[i:], end)
	if j < 0 {
		return body[i:]
	}
	return body[i : i+j]
}
