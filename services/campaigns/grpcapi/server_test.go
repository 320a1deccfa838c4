package grpcapi_test

import (
	"net/http"
	"os"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/access"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
)

// rpcDocs reads the doc comment of every RPC from the proto source (generated descriptors
// carry no comments).
func rpcDocs(t *testing.T) map[string]string {
	t.Helper()
	src, err := os.ReadFile("../../../proto/campaignmesh/campaigns/v1/service.proto")
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string]string{}
	var comment []string
	for _, line := range strings.Split(string(src), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "//"):
			comment = append(comment, strings.TrimSpace(strings.TrimPrefix(line, "//")))
		case strings.HasPrefix(line, "rpc "):
			name, _, _ := strings.Cut(strings.TrimPrefix(line, "rpc "), "(")
			docs[name] = strings.Join(comment, " ")
			comment = nil
		default:
			comment = nil
		}
	}
	return docs
}

// The platform's registry test walks only the service packages it imports; this one walks
// CampaignService: every RPC has an access rule, a REST mapping (none for an internal RPC)
// and a doc comment that names the caller and, for a permission, the permission.
func TestEveryRPCHasARuleARESTMappingAndADocComment(t *testing.T) {
	t.Parallel()
	docs := rpcDocs(t)
	for i := 0; i < serviceDesc.Methods().Len(); i++ {
		md := serviceDesc.Methods().Get(i)
		full := "/" + string(serviceDesc.FullName()) + "/" + string(md.Name())
		rule := access.RuleOf(full)
		if rule == nil {
			t.Errorf("%s has no (campaignmesh.access.v1.rule)", full)
			continue
		}
		http, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
		switch mapped := http != nil && http.GetPattern() != nil; {
		case rule.GetCallers() != nil && mapped:
			t.Errorf("%s is internal but has a google.api.http mapping", full)
		case rule.GetCallers() == nil && !mapped:
			t.Errorf("%s has no google.api.http mapping", full)
		}
		doc := docs[string(md.Name())]
		if !strings.Contains(doc, "Caller:") {
			t.Errorf("%s: doc comment does not name its caller", full)
		}
		if p := rule.GetPermission(); p != "" && !strings.Contains(doc, "Permission: "+p) {
			t.Errorf("%s: doc comment does not name permission %s", full, p)
		}
		if rule.GetAudit() && !strings.Contains(doc, "Audited") {
			t.Errorf("%s: audited, but its doc comment does not say so", full)
		}
	}
}

func TestCreateIsIdempotentByRequestID(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f, other := e.tenantWithRoles(t, "idem"), e.tenantWithRoles(t, "idem-other")
	m := as(f.tokens[rbac.Manager])
	req := &campaignsv1.CreateCampaignRequest{Campaign: newDraft("once"), RequestId: "req-1"}
	first, err := e.client.CreateCampaign(m, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.client.CreateCampaign(m, req)
	if err != nil || again.GetId() != first.GetId() || again.GetEtag() != first.GetEtag() {
		t.Fatalf("retry = %v, %v; want the first result %s", again, err, first.GetId())
	}
	list, err := e.client.ListCampaigns(m, &campaignsv1.ListCampaignsRequest{})
	if err != nil || len(list.GetCampaigns()) != 1 {
		t.Fatalf("campaigns after a retried create: %d (%v), want 1", len(list.GetCampaigns()), err)
	}
	changed := &campaignsv1.CreateCampaignRequest{Campaign: newDraft("twice"), RequestId: "req-1"}
	if _, err := e.client.CreateCampaign(m, changed); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("same request id, different campaign: %v, want INVALID_ARGUMENT", err)
	}
	if c, err := e.client.CreateCampaign(as(other.tokens[rbac.Manager]), req); err != nil || c.GetId() == first.GetId() {
		t.Fatalf("the same request id in another tenant: %v, %v; want a campaign of its own", c, err)
	}
	bad := &campaignsv1.CreateCampaignRequest{Campaign: &campaignsv1.Campaign{Name: "no channel"}, RequestId: "req-2"}
	for range 2 { // a failed create does not use up its request id
		if _, err := e.client.CreateCampaign(m, bad); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("invalid create: %v", err)
		}
	}
}

func TestErrorsOverGRPCAndREST(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.tenantWithRoles(t, "errs")
	m := as(f.tokens[rbac.Manager])
	c, err := e.client.CreateCampaign(m, &campaignsv1.CreateCampaignRequest{Campaign: newDraft("etag")})
	if err != nil {
		t.Fatal(err)
	}
	stale := c.GetEtag()
	upd := func(name, etag string) (*campaignsv1.Campaign, error) {
		return e.client.UpdateCampaign(m, &campaignsv1.UpdateCampaignRequest{
			Campaign:   &campaignsv1.Campaign{Id: c.GetId(), Name: name, Etag: etag},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}})
	}
	if _, err := upd("one", stale); err != nil {
		t.Fatal(err)
	}
	_, err = upd("two", stale)
	if status.Code(err) != codes.Aborted {
		t.Fatalf("stale etag over gRPC: %v, want ABORTED", err)
	}
	if reasonOf(err) != "ETAG_MISMATCH" {
		t.Errorf("stale etag reason %q", reasonOf(err))
	}
	rest := newRESTClient(t, e)
	code, body := rest.Do("UpdateCampaign", &campaignsv1.UpdateCampaignRequest{Campaign: &campaignsv1.Campaign{Id: c.GetId(), Name: "three", Etag: stale}}, f.tokens[rbac.Manager])
	if code != http.StatusConflict {
		t.Fatalf("stale etag over REST: HTTP %d %s, want 409", code, body)
	}
	// PATCH infers the mask from the body: only the name changes, the etag guards it.
	cur, _ := e.client.GetCampaign(m, &campaignsv1.GetCampaignRequest{Id: c.GetId()})
	code, body = rest.Do("UpdateCampaign", &campaignsv1.UpdateCampaignRequest{Campaign: &campaignsv1.Campaign{Id: c.GetId(), Name: "patched", Etag: cur.GetEtag()}}, f.tokens[rbac.Manager])
	var patched campaignsv1.Campaign
	if code != http.StatusOK || protojson.Unmarshal(body, &patched) != nil || patched.GetName() != "patched" {
		t.Fatalf("PATCH: HTTP %d %s", code, body)
	}
	got, _ := e.client.GetCampaign(m, &campaignsv1.GetCampaignRequest{Id: c.GetId()})
	if got.GetName() != "patched" || got.GetDescription() != cur.GetDescription() || len(got.GetVariants()) != 2 || got.GetBudget().GetTotalMicros() != 100_000_000 {
		t.Fatalf("after PATCH of the name: %v", got)
	}

	// Illegal transitions name the current state; deleting a running campaign suggests archiving.
	if _, err := e.client.PauseCampaign(m, &campaignsv1.PauseCampaignRequest{Id: c.GetId()}); status.Code(err) != codes.FailedPrecondition ||
		!strings.Contains(status.Convert(err).Message(), "it is draft") {
		t.Fatalf("pause a draft: %v", err)
	}
	if _, err := e.client.ScheduleCampaign(m, &campaignsv1.ScheduleCampaignRequest{Id: c.GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.DeleteCampaign(m, &campaignsv1.DeleteCampaignRequest{Id: c.GetId()}); status.Code(err) != codes.FailedPrecondition ||
		!strings.Contains(status.Convert(err).Message(), "archive") {
		t.Fatalf("delete a scheduled campaign: %v", err)
	}
	// Validation answers BadRequest field violations.
	_, err = e.client.CreateCampaign(m, &campaignsv1.CreateCampaignRequest{Campaign: &campaignsv1.Campaign{
		Name: "bad", Channel: campaignsv1.Channel_CHANNEL_SMS, Schedule: &campaignsv1.Schedule{Start: "2026-03-08T09:00+01:00", TimeZone: "UTC"}}})
	if status.Code(err) != codes.InvalidArgument || !hasViolation(err, "campaign.schedule.start") {
		t.Fatalf("a start with an offset: %v", err)
	}
	if _, err := e.client.GetCampaign(m, &campaignsv1.GetCampaignRequest{Id: "not-a-uuid"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("malformed id: %v", err)
	}
	if _, err := e.client.GetCampaign(m, &campaignsv1.GetCampaignRequest{Id: "00000000-0000-0000-0000-000000000001"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown id: %v", err)
	}
}

func TestCampaignRoundTripOverGRPC(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := e.tenantWithRoles(t, "round")
	in := newDraft("Round trip")
	c, err := e.client.CreateCampaign(as(f.tokens[rbac.Admin]), &campaignsv1.CreateCampaignRequest{Campaign: in})
	if err != nil {
		t.Fatal(err)
	}
	if c.GetState() != campaignsv1.Campaign_STATE_DRAFT || c.GetCreator() != f.users[rbac.Admin].ID || c.GetEtag() == "" || c.GetStateTime() == nil {
		t.Fatalf("created %v", c)
	}
	s := c.GetSchedule()
	if s.GetStart() != "2099-03-08T09:00:00" || s.GetStartTime().AsTime().Format("15:04Z07:00") != "13:00Z" || s.GetEndTime().AsTime().Format("15:04Z07:00") != "05:30Z" {
		t.Errorf("schedule %v", s)
	}
	if c.GetBudget().GetDailyMicros() != 10_000_000 || c.GetBudget().GetPacing() != campaignsv1.Budget_PACING_EVEN || c.GetGoal().GetConversionEvent() != "purchase" ||
		len(c.GetVariants()) != 2 || c.GetLabels()["team"] != "growth" || c.GetTags()[0] != "spring" {
		t.Errorf("fields %v", c)
	}
	got, err := e.client.GetCampaign(as(f.apiKey), &campaignsv1.GetCampaignRequest{Id: c.GetId()})
	if err != nil || !proto.Equal(got, c) {
		t.Fatalf("get with an API key = %v, %v; want %v", got, err, c)
	}
	p, err := e.client.GetCampaignPacing(as(f.tokens[rbac.Viewer]), &campaignsv1.GetCampaignPacingRequest{Id: c.GetId()})
	if err != nil || p.GetCurrencyCode() != "USD" || p.GetDailyAllowanceMicros() != 10_000_000 || !p.GetOnPace() {
		t.Fatalf("pacing %v %v", p, err)
	}
	page, err := e.client.ListCampaigns(as(f.tokens[rbac.Viewer]), &campaignsv1.ListCampaignsRequest{
		States: []campaignsv1.Campaign_State{campaignsv1.Campaign_STATE_DRAFT}, Channels: []campaignsv1.Channel{campaignsv1.Channel_CHANNEL_EMAIL},
		Tag: "spring", NamePrefix: "round", OrderBy: "name desc", PageSize: 1})
	if err != nil || len(page.GetCampaigns()) != 1 {
		t.Fatalf("filtered list %v %v", page, err)
	}
	if _, err := e.client.ListCampaigns(as(f.tokens[rbac.Viewer]), &campaignsv1.ListCampaignsRequest{States: []campaignsv1.Campaign_State{campaignsv1.Campaign_STATE_UNSPECIFIED}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("list by an unspecified state: %v", err)
	}
}

func reasonOf(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

func hasViolation(err error, field string) bool {
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				if v.GetField() == field {
					return true
				}
			}
		}
	}
	return false
}
