package nats_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/app"
)

// The real delivery service follows the platform's suppression list in NATS (written here as
// dsr writes it): a contact whose user id or email is on its tenant's list is no longer eligible
// and not counted, within the time the list takes to reach it; lifting the suppression makes it
// eligible again; another tenant's list does not apply.
func TestSuppressionListFollowed(t *testing.T) {
	t.Parallel()
	url := natstest.Start(t)
	hasher, err := privacy.NewHasher([]byte(strings.Repeat("k", privacy.MinKeyBytes)))
	if err != nil {
		t.Fatal(err)
	}
	d := servicetest.StartDelivery(t, servicetest.DeliveryOptions{Config: func(c *app.Config) {
		c.NATS = natsjs.ClientFlags{URL: url}
		c.Hasher = hasher
	}})
	nc, js, err := natsjs.Connect(url, "dsr-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := context.Background()
	kv, err := privacy.OpenBucket(ctx, js)
	if err != nil {
		t.Fatal(err)
	}

	aud := d.Audiences()
	granted := delivery.Consents{Email: delivery.Consent{State: delivery.ConsentGranted, Source: "form"}}
	byUser, err := aud.CreateContact(ctx, "t1", delivery.Contact{UserID: "user-1", Email: "one@example.com", Consent: granted})
	if err != nil {
		t.Fatal(err)
	}
	byEmail, err := aud.CreateContact(ctx, "t1", delivery.Contact{Email: "two@example.com", Consent: granted})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := aud.CreateContact(ctx, "t1", delivery.Contact{Email: "three@example.com", Consent: granted}); err != nil {
		t.Fatal(err)
	}
	eligible := func(c delivery.Contact) bool {
		ok, _, err := aud.EligibleNow(ctx, "t1", c, delivery.ChannelEmail)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	count := func() int {
		n, err := aud.CountSegment(ctx, "t1", "", &delivery.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		return n.Eligible[delivery.ChannelEmail]
	}
	if !eligible(byUser) || !eligible(byEmail) || count() != 3 {
		t.Fatalf("before any suppression: %v %v %d", eligible(byUser), eligible(byEmail), count())
	}
	for tenant, value := range map[string]string{"t1": "user-1", "t2": "two@example.com"} {
		if err := privacy.PutSuppression(ctx, kv, tenant, hasher.SubjectHash(tenant, value), "dsr_1"); err != nil {
			t.Fatal(err)
		}
	}
	meshtest.Eventually(t, 10*time.Second, func() bool { return !eligible(byUser) }, "the suppressed user id stays eligible")
	if !eligible(byEmail) || count() != 2 {
		t.Errorf("another tenant's suppression applied: %v %d", eligible(byEmail), count())
	}
	if err := privacy.PutSuppression(ctx, kv, "t1", hasher.SubjectHash("t1", "two@example.com"), "dsr_2"); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 10*time.Second, func() bool { return !eligible(byEmail) && count() == 1 }, "the suppressed email stays eligible")
	if _, why, _ := aud.EligibleNow(ctx, "t1", byEmail, delivery.ChannelEmail); why != delivery.SkipSuppressed {
		t.Errorf("skip reason %q, want suppressed", why)
	}
	if err := privacy.DeleteSuppression(ctx, kv, "t1", hasher.SubjectHash("t1", "user-1")); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 10*time.Second, func() bool { return eligible(byUser) && count() == 2 }, "a lifted suppression still applies")
}
