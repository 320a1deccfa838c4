package main

import (
	"context"
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protojson"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
)

// storedTokenVerifier accepts the test credentials' access token as a manager of tenant t1.
type storedTokenVerifier struct{}

func (storedTokenVerifier) Verify(_ context.Context, cred string) (*authn.Principal, error) {
	if cred != "stored-token" {
		return nil, errors.New("unknown token")
	}
	return &authn.Principal{TenantID: "t1", Subject: "u1", Role: rbac.Manager, Permissions: rbac.Manager.Permissions(), Kind: authn.KindAccessToken}, nil
}

// newCampaignsCLI returns a CLI logged in to a gateway that is the real campaigns service
// (built by its app package: interceptor chain, domain, PostgreSQL store), reached over mTLS
// with the gateway's identity.
func newCampaignsCLI(t *testing.T) *testCLI {
	t.Helper()
	svc := servicetest.StartCampaigns(t, servicetest.CampaignsOptions{Verifier: storedTokenVerifier{}}) // audit records stay in the outbox: no auth here
	creds := credentials.NewTLS(mtlstest.Source(t, svc.CA, "gateway").ClientConfig("campaigns"))

	c := newTestCLI(t, loggedIn(t, fresh), nil)
	c.dial = func(*app) (authv1.AuthServiceClient, io.Closer, error) {
		c.dials++
		conn, err := grpc.NewClient(svc.Addr(), grpc.WithTransportCredentials(creds))
		if err != nil {
			return nil, nil, err
		}
		return authv1.NewAuthServiceClient(conn), conn, nil
	}
	return c
}

// run runs one command on a fresh invocation of c's app and returns exit code, stdout, stderr.
func (c *testCLI) runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	c.stdout.Reset()
	c.stderr.Reset()
	c.client, c.conn = nil, nil
	code := c.run(context.Background(), args)
	return code, c.stdout.String(), c.stderr.String()
}

// squeeze collapses runs of spaces, so that assertions do not depend on column widths.
func squeeze(s string) string { return spaces.ReplaceAllString(s, " ") }

var spaces = regexp.MustCompile(` +`)

func TestCampaignsLifecycleAgainstTheServer(t *testing.T) {
	t.Parallel()
	c := newCampaignsCLI(t)
	code, out, errOut := c.runCmd(t, "-o", "json", "campaigns", "create", "-name", "Spring sale", "-channel", "email",
		"-start", "2099-03-08T09:00", "-end", "2099-11-01T01:30", "-tz", "America/New_York",
		"-budget", "100", "-daily-budget", "10.5", "-currency", "usd", "-pacing", "even", "-goal", "purchase",
		"-variants", "a=60, b=40", "-tags", "spring,sale", "-labels", "team=growth", "-request-id", "create-1")
	if code != 0 {
		t.Fatalf("create: exit %d\n%s", code, errOut)
	}
	var created campaignsv1.Campaign
	if err := protojson.Unmarshal([]byte(out), &created); err != nil {
		t.Fatal(err)
	}
	b := created.GetBudget()
	if created.GetState() != campaignsv1.Campaign_STATE_DRAFT || b.GetTotalMicros() != 100_000_000 || b.GetDailyMicros() != 10_500_000 ||
		b.GetCurrencyCode() != "USD" || b.GetPacing() != campaignsv1.Budget_PACING_EVEN || len(created.GetVariants()) != 2 ||
		created.GetVariants()[1].GetWeight() != 40 || created.GetLabels()["team"] != "growth" || created.GetGoal().GetConversionEvent() != "purchase" {
		t.Fatalf("created %v", &created)
	}
	id := created.GetId()
	// The same request id returns the same campaign.
	if code, out, _ := c.runCmd(t, "-o", "json", "campaigns", "create", "-name", "Spring sale", "-channel", "email",
		"-start", "2099-03-08T09:00", "-end", "2099-11-01T01:30", "-tz", "America/New_York",
		"-budget", "100", "-daily-budget", "10.5", "-currency", "usd", "-pacing", "even", "-goal", "purchase",
		"-variants", "a=60, b=40", "-tags", "spring,sale", "-labels", "team=growth", "-request-id", "create-1"); code != 0 || !strings.Contains(out, id) {
		t.Fatalf("repeated create: exit %d, %s", code, out)
	}

	code, out, _ = c.runCmd(t, "campaigns", "get", id)
	for _, want := range []string{"Spring sale", "START 2099-03-08T09:00 America/New_York (2099-03-08T13:00:00Z)",
		"END 2099-11-01T01:30 America/New_York (2099-11-01T05:30:00Z)", "BUDGET 100.00 USD, 10.50/day, even",
		"VARIANTS a=60, b=40", "TAGS sale, spring", "STATE draft since"} {
		if code != 0 || !strings.Contains(squeeze(out), want) {
			t.Errorf("get: exit %d, output lacks %q:\n%s", code, want, out)
		}
	}

	code, out, errOut = c.runCmd(t, "-o", "json", "campaigns", "update", "-name", "Spring sale 2", "-daily-budget", "0", "-etag", created.GetEtag(), id)
	if code != 0 || !strings.Contains(out, `"Spring sale 2"`) || strings.Contains(out, "dailyMicros") {
		t.Fatalf("update: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := c.runCmd(t, "campaigns", "update", "-name", "stale", "-etag", created.GetEtag(), id); code != 1 || !strings.Contains(errOut, "(Aborted)") {
		t.Fatalf("update with a stale etag: exit %d\n%s", code, errOut)
	}
	if code, _, errOut := c.runCmd(t, "campaigns", "pause", id); code != 1 || !strings.Contains(errOut, "it is draft") || !strings.Contains(errOut, "(FailedPrecondition)") {
		t.Fatalf("pause a draft: exit %d\n%s", code, errOut)
	}
	for _, step := range []string{"schedule", "activate", "pause", "resume", "complete", "archive"} {
		code, out, errOut := c.runCmd(t, "campaigns", step, id)
		if code != 0 {
			t.Fatalf("%s: exit %d\n%s", step, code, errOut)
		}
		want := map[string]string{"schedule": "scheduled", "activate": "active", "pause": "paused", "resume": "active",
			"complete": "completed", "archive": "archived"}[step]
		if !strings.Contains(squeeze(out), "STATE "+want+" since") {
			t.Errorf("%s shows\n%s", step, out)
		}
	}
	code, out, _ = c.runCmd(t, "campaigns", "transitions", id)
	if code != 0 || strings.Count(out, "\n") != 7 || !strings.Contains(squeeze(out), "draft scheduled ScheduleCampaign u1") {
		t.Errorf("transitions: exit %d\n%s", code, out)
	}
	if code, _, errOut := c.runCmd(t, "campaigns", "delete", id); code != 1 || !strings.Contains(errOut, "only drafts can be deleted") {
		t.Fatalf("delete an archived campaign: exit %d\n%s", code, errOut)
	}

	code, out, _ = c.runCmd(t, "campaigns", "create", "-name", "Other", "-channel", "sms", "-budget", "5", "-currency", "EUR")
	if code != 0 {
		t.Fatalf("create: exit %d", code)
	}
	other := strings.Fields(strings.SplitN(out, "\n", 2)[0])[1]
	code, out, _ = c.runCmd(t, "campaigns", "list", "-state", "draft,archived", "-order", "name desc", "-page-size", "1", "-all")
	if code != 0 || strings.Index(out, "Spring sale 2") > strings.Index(out, "Other") || !strings.Contains(out, "archived") || !strings.Contains(out, "5.00 EUR, asap") {
		t.Errorf("list: exit %d\n%s", code, out)
	}
	code, out, _ = c.runCmd(t, "-o", "json", "campaigns", "list", "-channel", "sms")
	if code != 0 || strings.Contains(out, id) || !strings.Contains(out, other) {
		t.Errorf("list -channel sms: exit %d\n%s", code, out)
	}
	code, out, _ = c.runCmd(t, "campaigns", "pacing", other)
	if code != 0 || !strings.Contains(squeeze(out), "TOTAL 0.00 EUR of 5.00 EUR") || !strings.Contains(squeeze(out), "ON PACE yes") {
		t.Errorf("pacing: exit %d\n%s", code, out)
	}
	if code, out, _ := c.runCmd(t, "campaigns", "delete", other); code != 0 || out != "deleted campaign "+other+"\n" {
		t.Errorf("delete a draft: exit %d, %q", code, out)
	}
}

func TestCampaignsCreateFromFile(t *testing.T) {
	t.Parallel()
	c := newCampaignsCLI(t)
	c.stdin.Reset(`{"name": "From JSON", "channel": "CHANNEL_PUSH", "budget": {"totalMicros": "7000000", "currencyCode": "GBP"}}`)
	code, out, errOut := c.runCmd(t, "campaigns", "create", "-f", "-", "-name", "Renamed by flag")
	if code != 0 || !strings.Contains(out, "Renamed by flag") || !strings.Contains(out, "push") || !strings.Contains(out, "7.00 GBP") {
		t.Fatalf("create -f: exit %d\n%s%s", code, out, errOut)
	}
}

func TestCampaignsUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"campaigns", "create", "-name", "x"}, "-name and -channel are required"},
		{[]string{"campaigns", "create", "-name", "x", "-channel", "fax"}, `-channel "fax": want one of`},
		{[]string{"campaigns", "create", "-name", "x", "-channel", "web", "-budget", "1.2345678"}, "up to 6 decimals"},
		{[]string{"campaigns", "create", "-name", "x", "-channel", "web", "-budget", "-5"}, "-budget"},
		{[]string{"campaigns", "create", "-name", "x", "-channel", "web", "-variants", "a:50"}, "name=weight"},
		{[]string{"campaigns", "create", "-name", "x", "-channel", "web", "-labels", "team"}, "key=value"},
		{[]string{"campaigns", "create", "-name", "x", "-channel", "web", "-pacing", "fast"}, `-pacing "fast"`},
		{[]string{"campaigns", "update", "id1"}, "give at least one field"},
		{[]string{"campaigns", "update", "id1", "-name", "x"}, "want ID, got 3 argument(s)"}, // flags come before the ID
		{[]string{"campaigns", "update"}, "want ID"},
		{[]string{"campaigns", "pause"}, "campaigns pause: want ID"},
		{[]string{"campaigns", "list", "-state", "running"}, `-state "running": want one of`},
		{[]string{"campaigns", "list", "-from", "yesterday"}, "want an RFC 3339 time"},
		{[]string{"campaigns", "frob"}, `unknown command "campaigns frob"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			c := newTestCLI(t, nil, nil)
			if code := c.run(context.Background(), tt.args); code != 2 {
				t.Errorf("exit code = %d, want 2; stderr:\n%s", code, c.stderr)
			}
			if !strings.Contains(c.stderr.String(), tt.want) {
				t.Errorf("stderr does not contain %q:\n%s", tt.want, c.stderr)
			}
		})
	}
}

func TestParseMicros(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"0": 0, "1": 1_000_000, "10.5": 10_500_000, "0.000001": 1, "1500.25": 1_500_250_000, "999999999999.999999": 999_999_999_999_999_999} {
		if got, err := parseMicros("budget", in); err != nil || got != want {
			t.Errorf("parseMicros(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "1.", ".5", "1e6", "1,5", "1.0000001", "1000000000000"} {
		if _, err := parseMicros("budget", bad); err == nil {
			t.Errorf("parseMicros(%q) accepted", bad)
		}
	}
}

func TestCampaignsHelp(t *testing.T) {
	t.Parallel()
	c := newTestCLI(t, nil, nil)
	if code := c.run(context.Background(), []string{"help"}); code != 0 {
		t.Fatal(code)
	}
	for _, want := range []string{"campaigns create", "campaigns schedule ID", "campaigns archive ID", "campaigns pacing ID", "campaigns transitions ID"} {
		if !strings.Contains(c.stdout.String(), want) {
			t.Errorf("help lacks %q", want)
		}
	}
	c = newTestCLI(t, nil, nil)
	if code := c.run(context.Background(), []string{"campaigns", "update", "-h"}); code != 0 || !strings.Contains(c.stdout.String(), "wall-clock times") {
		t.Errorf("update -h: %d\n%s", code, c.stdout)
	}
}
