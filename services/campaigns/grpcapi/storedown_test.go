package grpcapi_test

import (
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/status"

	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
)

// When the campaigns database goes away, reads, creates and idempotent creates answer
// UNAVAILABLE with retry info through the real chain, logged at warn with their cause.
func TestDatabaseOutageAnswersUnavailable(t *testing.T) {
	proxy, dbURL := pgtest.NewProxy(t, pgtest.NewDatabase(t))
	logs := &meshtest.LogBuffer{}
	issuer := meshtest.NewIssuer(t)
	svc := servicetest.StartCampaigns(t, servicetest.CampaignsOptions{Database: dbURL, Verifier: issuer.Verifier(), Spend: zeroSpend{},
		Logger: telemetry.NewLogger(logs, "campaigns", slog.LevelDebug)}) // audit records stay in the outbox: no auth here
	client := svc.Client(t, "gateway")

	m := as(issuer.Token(t, "t1", rbac.Manager, "u-manager"))
	c, err := client.CreateCampaign(m, &campaignsv1.CreateCampaignRequest{Campaign: newDraft("before")})
	if err != nil {
		t.Fatalf("before the outage: %v", err)
	}

	proxy.Cut()
	for what, call := range map[string]func() error{
		"GetCampaign": func() error {
			_, err := client.GetCampaign(m, &campaignsv1.GetCampaignRequest{Id: c.GetId()})
			return err
		},
		"ListCampaigns": func() error { _, err := client.ListCampaigns(m, &campaignsv1.ListCampaignsRequest{}); return err },
		"CreateCampaign": func() error {
			_, err := client.CreateCampaign(m, &campaignsv1.CreateCampaignRequest{Campaign: newDraft("during")})
			return err
		},
		"CreateCampaign with a request id": func() error {
			_, err := client.CreateCampaign(m, &campaignsv1.CreateCampaignRequest{Campaign: newDraft("during"), RequestId: "r-1"})
			return err
		},
	} {
		meshtest.RequireStoreUnavailable(t, what, status.Convert(call()))
	}
	calls := 0
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, `"msg":"internal error"`) {
			t.Errorf("logged as an internal error: %s", l)
		}
		if strings.Contains(l, `"grpc.code":"Unavailable"`) {
			calls++
			if !strings.Contains(l, `"level":"WARN"`) {
				t.Errorf("not at warn: %s", l)
			}
		}
	}
	if calls != 4 || !strings.Contains(logs.String(), `"msg":"dependency unavailable"`) {
		t.Errorf("%d calls logged as UNAVAILABLE, want 4, with their causes at warn:\n%s", calls, logs.String())
	}
}
