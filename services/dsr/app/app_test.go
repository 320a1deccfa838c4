package app_test

import (
	"context"
	"strings"
	"testing"
	"time"

	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/dsr/app"
)

// The service as cmd/dsr builds it, over mTLS with a real NATS server: an erasure created
// through the API is in the PRIVACY bucket when create answers, a policy update is published
// with its version, and the admin listener serves the request gauges.
func TestCreatePublishesToTheBucketAndMetricsAreServed(t *testing.T) {
	t.Parallel()
	issuer := meshtest.NewIssuer(t)
	d := servicetest.StartDsr(t, servicetest.DsrOptions{Verifier: issuer.Verifier(),
		Config: func(c *app.Config) { c.HealthListen = "127.0.0.1:0" }})
	servicetest.RequireHealthOnly(t, d.HealthAddr())
	client := d.Client(t, "gateway")
	ctx := meshtest.Bearer(context.Background(), issuer.Token(t, "t1", rbac.PrivacyOfficer, "officer"))
	r, err := client.CreateRequest(ctx, &dsrv1.CreateRequestRequest{Request: &dsrv1.Request{
		Kind: dsrv1.Kind_KIND_ERASURE, Regulation: dsrv1.Regulation_REGULATION_GDPR,
		Subject: []*dsrv1.Identifier{{Kind: dsrv1.Identifier_KIND_EMAIL, Value: "ann@example.com"}}}})
	if err != nil {
		t.Fatal(err)
	}
	_, js, err := natsjs.Connect(d.NATSURL, "test")
	if err != nil {
		t.Fatal(err)
	}
	kv, err := privacy.OpenBucket(context.Background(), js)
	if err != nil {
		t.Fatal(err)
	}
	h := d.Hasher.SubjectHash("t1", "ann@example.com")
	if e, err := kv.Get(context.Background(), privacy.SuppressionKey("t1", h)); err != nil || string(e.Value()) != r.GetId() {
		t.Fatalf("suppression in the bucket: %v %v", e, err)
	}
	if r.GetCovered()[0].GetSubjectHash() != h {
		t.Fatalf("covered: %v", r.GetCovered())
	}
	p, err := client.UpdatePrivacyPolicy(ctx, &dsrv1.UpdatePrivacyPolicyRequest{Policy: &dsrv1.PrivacyPolicy{
		RetentionDays: 90, IpHandling: dsrv1.PrivacyPolicy_IP_HANDLING_TRUNCATE}})
	if err != nil || p.GetVersion() != 1 {
		t.Fatalf("update policy: %v %v", p, err)
	}
	view, err := privacy.Watch(t.Context(), kv, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := view.Policy("t1"); got.Version != 1 || got.RetentionDays != 90 || got.IP != privacy.IPTruncate {
		t.Fatalf("published policy %+v", got)
	}
	if _, err := client.UpdatePrivacyPolicy(ctx, &dsrv1.UpdatePrivacyPolicyRequest{Policy: &dsrv1.PrivacyPolicy{}, Etag: `"v0"`}); err == nil {
		t.Fatal("a stale etag was accepted")
	}
	meshtest.Eventually(t, 20*time.Second, func() bool {
		body := servicetest.AdminGet(t, d.AdminAddr(), "/metrics")
		return strings.Contains(body, "cm_dsr_requests_open") && strings.Contains(body, "cm_dsr_oldest_open_request_age_seconds") &&
			strings.Contains(body, "cm_dsr_requests_overdue")
	}, "gauges on /metrics")
}
