package grpcapi_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	accessv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/access/v1"
	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/auth"
	"github.com/campaignmesh/campaignmesh/services/campaigns"
)

// records returns the tenant's audit records in auth's log (what the outbox delivered).
func (e *env) records(t *testing.T, tenant string, f auth.AuditFilter) []auth.AuditEntry {
	t.Helper()
	es, _, err := e.authSvc.ListAuditRecords(context.Background(), &authn.Principal{TenantID: tenant}, f, 1000, "")
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// Every mutation of CampaignService is audited the way every service but auth audits: the
// record is stored in the campaigns database's outbox within the call, then delivered to
// auth's tamper-evident log — one record per call, with the actor, the campaign and the
// outcome. Denied calls are recorded too.
func TestEveryMutationIsAuditedOnceThroughTheOutbox(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.tenantWithRoles(t, "audited")
	tenant := f.tenant.ID
	manager := as(f.tokens[rbac.Manager])
	calls := map[string]func() (string, error){
		"CreateCampaign": func() (string, error) {
			c, err := e.client.CreateCampaign(manager, &campaignsv1.CreateCampaignRequest{Campaign: newDraft("created")})
			return c.GetId(), err
		},
		"UpdateCampaign": func() (string, error) {
			id := e.campaignIn(t, f, campaigns.Draft).ID
			_, err := e.client.UpdateCampaign(manager, &campaignsv1.UpdateCampaignRequest{Campaign: &campaignsv1.Campaign{Id: id, Name: "new"},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}})
			return id, err
		},
		"DeleteCampaign": func() (string, error) {
			id := e.campaignIn(t, f, campaigns.Draft).ID
			_, err := e.client.DeleteCampaign(manager, &campaignsv1.DeleteCampaignRequest{Id: id})
			return id, err
		},
		"ScheduleCampaign": func() (string, error) {
			id := e.campaignIn(t, f, campaigns.Draft).ID
			_, err := e.client.ScheduleCampaign(manager, &campaignsv1.ScheduleCampaignRequest{Id: id})
			return id, err
		},
		"ActivateCampaign": func() (string, error) {
			id := e.campaignIn(t, f, campaigns.Scheduled).ID
			_, err := e.client.ActivateCampaign(manager, &campaignsv1.ActivateCampaignRequest{Id: id})
			return id, err
		},
		"PauseCampaign": func() (string, error) {
			id := e.campaignIn(t, f, campaigns.Active).ID
			_, err := e.client.PauseCampaign(manager, &campaignsv1.PauseCampaignRequest{Id: id})
			return id, err
		},
		"ResumeCampaign": func() (string, error) {
			id := e.campaignIn(t, f, campaigns.Paused).ID
			_, err := e.client.ResumeCampaign(manager, &campaignsv1.ResumeCampaignRequest{Id: id})
			return id, err
		},
		"CompleteCampaign": func() (string, error) {
			id := e.campaignIn(t, f, campaigns.Active).ID
			_, err := e.client.CompleteCampaign(manager, &campaignsv1.CompleteCampaignRequest{Id: id})
			return id, err
		},
		"CancelCampaign": func() (string, error) {
			id := e.campaignIn(t, f, campaigns.Active).ID
			_, err := e.client.CancelCampaign(manager, &campaignsv1.CancelCampaignRequest{Id: id})
			return id, err
		},
		"ArchiveCampaign": func() (string, error) {
			id := e.campaignIn(t, f, campaigns.Draft).ID
			_, err := e.client.ArchiveCampaign(manager, &campaignsv1.ArchiveCampaignRequest{Id: id})
			return id, err
		},
	}
	audited := 0
	for i := 0; i < serviceDesc.Methods().Len(); i++ {
		md := serviceDesc.Methods().Get(i)
		rule, _ := proto.GetExtension(md.Options(), accessv1.E_Rule).(*accessv1.Rule)
		name := string(md.Name())
		call, ok := calls[name]
		if rule.GetAudit() != ok {
			t.Errorf("%s: audited %v, but this test expects it %v (every mutation, and only mutations, is audited)", name, rule.GetAudit(), ok)
		}
		if !ok {
			continue
		}
		audited++
		method := "/campaignmesh.campaigns.v1.CampaignService/" + name
		id, err := call()
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		var recs []auth.AuditEntry
		waitFor(t, name+" record delivered to auth", func() bool {
			recs = e.records(t, tenant, auth.AuditFilter{Method: method})
			return len(recs) >= 1
		})
		r := recs[0]
		if len(recs) != 1 || r.Service != "campaigns" || r.Actor != f.users[rbac.Manager].ID || r.Resource != id || r.OutcomeName != "OK" ||
			r.RequestID == "" || r.ActorKind != "access_token" || r.Hash == "" {
			t.Errorf("%s: records %+v; want one complete record for campaign %s", name, recs, id)
		}
	}
	if audited != len(calls) {
		t.Errorf("%d audited RPCs, %d calls", audited, len(calls))
	}
	// A denied mutation is recorded with its outcome and actor.
	_, err := e.client.CreateCampaign(as(f.tokens[rbac.Viewer]), &campaignsv1.CreateCampaignRequest{Campaign: newDraft("no")})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("viewer create: %v", err)
	}
	waitFor(t, "denied record delivered", func() bool {
		return len(e.records(t, tenant, auth.AuditFilter{Outcome: "PERMISSION_DENIED", Actor: f.users[rbac.Viewer].ID})) == 1
	})
	// The outbox deletes a batch once auth has it: shortly after auth lists it.
	waitFor(t, "outbox emptied once auth has every record", func() bool {
		n, err := e.outbox.Pending(context.Background())
		return err == nil && n == 0
	})
}

// The scheduler's transitions are mutations too: each reaches the tenant's audit log once,
// recorded by the campaigns service itself.
func TestSchedulerTransitionsReachTheAuditLog(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.tenantWithRoles(t, "sched")
	c := e.campaignIn(t, f, campaigns.Scheduled)
	later := time.Date(2099, 1, 1, 0, 0, 1, 0, time.UTC) // just after the target's start
	s := campaigns.NewScheduler(e.store, nil, e.outbox, slog.New(slog.DiscardHandler), campaigns.WithSchedulerClock(func() time.Time { return later }))
	if n, err := s.Tick(context.Background()); err != nil || n != 1 {
		t.Fatalf("tick: %d, %v", n, err)
	}
	var recs []auth.AuditEntry
	waitFor(t, "scheduler record delivered", func() bool {
		recs = e.records(t, f.tenant.ID, auth.AuditFilter{Method: "campaigns.scheduler/start"})
		return len(recs) == 1
	})
	r := recs[0]
	if r.Actor != campaigns.SchedulerActor || r.ActorKind != "service" || r.Resource != c.ID || r.Service != "campaigns" || r.OutcomeName != "OK" {
		t.Fatalf("scheduler record %+v", r)
	}
	ts, err := e.client.ListCampaignTransitions(as(f.tokens[rbac.Viewer]), &campaignsv1.ListCampaignTransitionsRequest{Id: c.ID})
	if err != nil || len(ts.GetTransitions()) != 2 || ts.GetTransitions()[1].GetId() != r.ID {
		t.Fatalf("transitions %v (%v); the audit record's id must be the transition's", ts, err)
	}
}
