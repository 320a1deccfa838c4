package billing_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/billing"
	"github.com/campaignmesh/campaignmesh/services/billing/postgres"
	"github.com/campaignmesh/campaignmesh/services/billing/stripe"
)

const (
	tenantA = "00000000-0000-4000-8000-00000000000a"
	tenantB = "00000000-0000-4000-8000-00000000000b"
)

var (
	operator = &authn.Principal{Subject: "op", Role: rbac.PlatformOperator, Permissions: rbac.PlatformOperator.Permissions()}
	adminA   = &authn.Principal{TenantID: tenantA, Subject: "u", Role: rbac.Admin, Permissions: rbac.Admin.Permissions()}
)

func openStore(tb testing.TB) *postgres.Store {
	tb.Helper()
	s, err := postgres.Open(context.Background(), pgtest.NewDatabase(tb))
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// audited is a context with a pending audit record, as the access layer makes for an audited
// call.
func audited(method string) context.Context {
	return audit.Begin(context.Background(), func() audit.Record {
		return audit.Record{Method: method, Actor: "op", ActorKind: "user", Service: "billing"}
	})
}

// auditCount counts the records of method waiting in the outbox. Every one must sit in the
// platform's chain (tenant "") and name an account as its resource: auth refuses records of
// tenants it does not know, and billing cannot tell which tenants auth knows.
func auditCount(tb testing.TB, s *postgres.Store, method string) int {
	tb.Helper()
	rows, err := s.Pool().Query(context.Background(), `SELECT record FROM audit_outbox`)
	if err != nil {
		tb.Fatalf("read audit records: %v", err)
	}
	raws, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		tb.Fatalf("read audit records: %v", err)
	}
	n := 0
	for _, raw := range raws {
		r := &authv1.AuditRecord{}
		if err := proto.Unmarshal(raw, r); err != nil {
			tb.Fatalf("decode audit record: %v", err)
		}
		if r.GetMethod() != method {
			continue
		}
		if r.GetTenantId() != "" || !strings.HasPrefix(r.GetResource(), "billing_accounts/") {
			tb.Errorf("record of %s in chain %q on %q, want the platform's chain and an account", method, r.GetTenantId(), r.GetResource())
		}
		n++
	}
	return n
}

func wantCode(tb testing.TB, err error, code apperr.Code) {
	tb.Helper()
	if !apperr.HasCode(err, code) {
		tb.Fatalf("error = %v, want code %d", err, code)
	}
}

func TestBillingAccounts(t *testing.T) {
	s := openStore(t)
	a := billing.NewAccounts(s, nil)
	ctx := context.Background()
	const method = "/campaignmesh.billing.v1.BillingAccountService/SetBillingAccount"

	acc, err := a.SetBillingAccount(audited(method), operator, tenantA, "cus_A1")
	if err != nil || acc.TenantID != tenantA || acc.StripeCustomerID != "cus_A1" || acc.Status != billing.AccountOK || acc.Revision != 1 {
		t.Fatalf("set = %+v, %v", acc, err)
	}
	if n := auditCount(t, s, method); n != 1 {
		t.Fatalf("audit records = %d, want 1", n)
	}
	_, err = a.SetBillingAccount(audited(method), operator, tenantB, "cus_A1")
	wantCode(t, err, apperr.AlreadyExists)
	_, err = a.SetBillingAccount(ctx, operator, tenantB, "acct_1")
	wantCode(t, err, apperr.Invalid)
	_, err = a.SetBillingAccount(ctx, operator, "not-a-tenant", "cus_B")
	wantCode(t, err, apperr.Invalid)
	_, err = a.SetBillingAccount(ctx, adminA, tenantA, "cus_B")
	wantCode(t, err, apperr.PermissionDenied)
	if _, err := a.SetBillingAccount(ctx, operator, tenantB, "cus_B1"); err != nil {
		t.Fatal(err)
	}

	got, err := a.GetBillingAccount(ctx, adminA, "")
	if err != nil || got.StripeCustomerID != "cus_A1" {
		t.Fatalf("own account = %+v, %v", got, err)
	}
	_, err = a.GetBillingAccount(ctx, adminA, tenantB)
	wantCode(t, err, apperr.NotFound)
	if got, err = a.GetBillingAccount(ctx, operator, tenantB); err != nil || got.StripeCustomerID != "cus_B1" {
		t.Fatalf("operator get = %+v, %v", got, err)
	}
	_, err = a.GetBillingAccount(ctx, operator, "")
	wantCode(t, err, apperr.Invalid)
	_, err = a.GetBillingAccount(ctx, operator, "00000000-0000-4000-8000-0000000000ff")
	wantCode(t, err, apperr.NotFound)

	page, next, err := a.ListBillingAccounts(ctx, operator, 1, "")
	if err != nil || len(page) != 1 || page[0].TenantID != tenantA || next == "" {
		t.Fatalf("page 1 = %+v %q %v", page, next, err)
	}
	page, next, err = a.ListBillingAccounts(ctx, operator, 1, next)
	if err != nil || len(page) != 1 || page[0].TenantID != tenantB {
		t.Fatalf("page 2 = %+v %q %v", page, next, err)
	}
	if page, _, err = a.ListBillingAccounts(ctx, operator, 1, next); err != nil || len(page) != 0 {
		t.Fatalf("page 3 = %+v %v", page, err)
	}
	_, _, err = a.ListBillingAccounts(ctx, operator, 0, "garbage!")
	wantCode(t, err, apperr.Invalid)
	_, _, err = a.ListBillingAccounts(ctx, adminA, 0, "")
	wantCode(t, err, apperr.PermissionDenied)

	// Setting the account again reinstates it (the operator's decision); the same customer
	// keeps its last event time, another forgets it.
	if _, err := s.Pool().Exec(ctx, `UPDATE billing_accounts SET status = 'suspended', suspended_at = now(), flagged_at = now(), last_event_at = now() WHERE tenant_id = $1`, tenantA); err != nil {
		t.Fatal(err)
	}
	if acc, err = a.SetBillingAccount(ctx, operator, tenantA, "cus_A1"); err != nil || acc.Status != billing.AccountOK || !acc.FlaggedAt.IsZero() || !acc.SuspendedAt.IsZero() || acc.LastEventAt.IsZero() || acc.Revision != 2 {
		t.Fatalf("same customer again = %+v, %v", acc, err)
	}
	if acc, err = a.SetBillingAccount(ctx, operator, tenantA, "cus_A2"); err != nil || acc.Status != billing.AccountOK || !acc.LastEventAt.IsZero() || acc.Revision != 3 {
		t.Fatalf("new customer = %+v, %v", acc, err)
	}
}

// webhookFixture is a store, the accounts A (cus_A) and B (cus_B), and a webhook handler whose
// verifier's clock is now.
type webhookFixture struct {
	store  *postgres.Store
	hooks  *billing.Webhooks
	secret []byte
	now    time.Time
}

func newWebhookFixture(t *testing.T) *webhookFixture {
	t.Helper()
	f := &webhookFixture{store: openStore(t), secret: []byte("whsec_fixture"), now: time.Now()}
	v, err := stripe.NewVerifier(f.secret, stripe.WithClock(func() time.Time { return f.now }))
	if err != nil {
		t.Fatal(err)
	}
	f.hooks = billing.NewWebhooks(v, f.store, nil)
	a := billing.NewAccounts(f.store, nil)
	for tenant, cus := range map[string]string{tenantA: "cus_A", tenantB: "cus_B"} {
		if _, err := a.SetBillingAccount(context.Background(), operator, tenant, cus); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func event(id, typ, customer, status string, created time.Time) []byte {
	obj := "invoice"
	if typ != billing.StripeInvoicePaid && typ != billing.StripeInvoicePaymentFailed {
		obj = "subscription"
	}
	return []byte(fmt.Sprintf(`{"id":%q,"object":"event","type":%q,"created":%d,"livemode":false,"data":{"object":{"id":"%s_obj","object":%q,"customer":%q,"status":%q,"attempt_count":1}}}`,
		id, typ, created.Unix(), id, obj, customer, status))
}

func (f *webhookFixture) deliver(t *testing.T, body []byte) error {
	t.Helper()
	return f.hooks.HandleStripeWebhook(context.Background(), body, stripe.Sign(f.secret, body, f.now))
}

func (f *webhookFixture) account(t *testing.T, tenant string) billing.Account {
	t.Helper()
	acc, err := f.store.GetBillingAccount(context.Background(), tenant)
	if err != nil {
		t.Fatal(err)
	}
	return acc
}

func TestWebhookSignatureRefused(t *testing.T) {
	f := newWebhookFixture(t)
	body := event("evt_sig", billing.StripeInvoicePaymentFailed, "cus_A", "open", f.now)
	for name, sig := range map[string]string{
		"missing":      "",
		"bad":          stripe.Sign([]byte("whsec_other"), body, f.now),
		"expired":      stripe.Sign(f.secret, body, f.now.Add(-6*time.Minute)),
		"other body":   stripe.Sign(f.secret, []byte(`{}`), f.now),
		"not a header": "garbage",
	} {
		err := f.hooks.HandleStripeWebhook(context.Background(), body, sig)
		if !apperr.HasCode(err, apperr.Invalid) {
			t.Fatalf("%s: %v", name, err)
		}
		if err != nil && err.Error() != "webhook signature or payload rejected" {
			t.Fatalf("%s: error says more than it should: %q", name, err)
		}
	}
	if acc := f.account(t, tenantA); acc.Status != billing.AccountOK || acc.Revision != 1 {
		t.Fatalf("a refused webhook changed the account: %+v", acc)
	}
	var n int
	_ = f.store.Pool().QueryRow(context.Background(), `SELECT count(*) FROM stripe_events`).Scan(&n)
	if n != 0 {
		t.Fatalf("refused webhooks recorded: %d", n)
	}
}

func TestWebhookActsOnce(t *testing.T) {
	f := newWebhookFixture(t)
	t0 := f.now.Add(-time.Hour).Truncate(time.Second)
	failed := event("evt_fail", billing.StripeInvoicePaymentFailed, "cus_A", "open", t0)
	if err := f.deliver(t, failed); err != nil {
		t.Fatal(err)
	}
	acc := f.account(t, tenantA)
	if acc.Status != billing.AccountFlagged || !acc.FlaggedAt.Equal(t0) || acc.StatusReason == "" {
		t.Fatalf("after payment_failed: %+v", acc)
	}
	if n := auditCount(t, f.store, billing.AuditMethodStripeWebhook); n != 1 {
		t.Fatalf("audit records = %d", n)
	}
	for range 3 {
		if err := f.deliver(t, failed); err != nil {
			t.Fatalf("repeat: %v", err)
		}
	}
	if again := f.account(t, tenantA); again.Revision != acc.Revision {
		t.Fatalf("a repeat changed the account: %+v", again)
	}
	if n := auditCount(t, f.store, billing.AuditMethodStripeWebhook); n != 1 {
		t.Fatalf("audit records after repeats = %d", n)
	}

	// An older subscription event delivered late does not undo the newer state.
	if err := f.deliver(t, event("evt_old", billing.StripeInvoicePaid, "cus_A", "paid", t0.Add(-time.Minute))); err != nil {
		t.Fatal(err)
	}
	if got := f.account(t, tenantA); got.Status != billing.AccountFlagged {
		t.Fatalf("a stale invoice.paid cleared the flag: %+v", got)
	}

	// invoice.paid clears the flag.
	if err := f.deliver(t, event("evt_paid", billing.StripeInvoicePaid, "cus_A", "paid", t0.Add(time.Minute))); err != nil {
		t.Fatal(err)
	}
	if got := f.account(t, tenantA); got.Status != billing.AccountOK || !got.FlaggedAt.IsZero() || got.StatusReason != "" {
		t.Fatalf("after invoice.paid: %+v", got)
	}
	// A failure in the same second, then the invoice.paid delivered again: the redelivery is
	// not acted on (same created time, so only the event id tells it apart).
	if err := f.deliver(t, event("evt_fail2", billing.StripeInvoicePaymentFailed, "cus_A", "open", t0.Add(time.Minute))); err != nil {
		t.Fatal(err)
	}
	if err := f.deliver(t, event("evt_paid", billing.StripeInvoicePaid, "cus_A", "paid", t0.Add(time.Minute))); err != nil {
		t.Fatal(err)
	}
	if got := f.account(t, tenantA); got.Status != billing.AccountFlagged {
		t.Fatalf("a redelivered invoice.paid was acted on again: %+v", got)
	}

	// Subscription changes: status recorded; unpaid flags, active does not.
	if err := f.deliver(t, event("evt_sub1", billing.StripeSubscriptionUpdated, "cus_B", "active", t0)); err != nil {
		t.Fatal(err)
	}
	if got := f.account(t, tenantB); got.SubscriptionStatus != "active" || got.Status != billing.AccountOK {
		t.Fatalf("after active: %+v", got)
	}
	if err := f.deliver(t, event("evt_sub2", billing.StripeSubscriptionUpdated, "cus_B", "unpaid", t0.Add(time.Second))); err != nil {
		t.Fatal(err)
	}
	if got := f.account(t, tenantB); got.SubscriptionStatus != "unpaid" || got.Status != billing.AccountFlagged {
		t.Fatalf("after unpaid: %+v", got)
	}
	if err := f.deliver(t, event("evt_sub3", billing.StripeSubscriptionDeleted, "cus_B", "canceled", t0.Add(2*time.Second))); err != nil {
		t.Fatal(err)
	}
	if got := f.account(t, tenantB); got.SubscriptionStatus != "canceled" || got.Status != billing.AccountFlagged || !got.FlaggedAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("after deleted (flag time kept from the first lapse): %+v", got)
	}

	// Unknown customer: answered, recorded, no effect. Unknown type: answered, not recorded.
	if err := f.deliver(t, event("evt_nobody", billing.StripeInvoicePaymentFailed, "cus_nobody", "open", t0)); err != nil {
		t.Fatal(err)
	}
	if err := f.deliver(t, event("evt_other", "charge.succeeded", "cus_A", "", t0)); err != nil {
		t.Fatal(err)
	}
	var outcome string
	if err := f.store.Pool().QueryRow(context.Background(), `SELECT outcome FROM stripe_events WHERE event_id = 'evt_nobody' AND tenant_id IS NULL AND NOT acted`).Scan(&outcome); err != nil || outcome != billing.WebhookUnknownCustomer {
		t.Fatalf("unknown customer recorded as %q, %v", outcome, err)
	}
	var n int
	_ = f.store.Pool().QueryRow(context.Background(), `SELECT count(*) FROM stripe_events WHERE event_id = 'evt_other'`).Scan(&n)
	if n != 0 {
		t.Fatal("an ignored type was recorded")
	}
}

func TestWebhookConcurrentDeliveriesActOnce(t *testing.T) {
	f := newWebhookFixture(t)
	body := event("evt_race", billing.StripeInvoicePaymentFailed, "cus_A", "open", f.now.Add(-time.Minute))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- f.deliver(t, body)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if acc := f.account(t, tenantA); acc.Status != billing.AccountFlagged || acc.Revision != 2 {
		t.Fatalf("account after 8 concurrent deliveries: %+v (want one change)", acc)
	}
	if n := auditCount(t, f.store, billing.AuditMethodStripeWebhook); n != 1 {
		t.Fatalf("audit records = %d, want 1", n)
	}
}

// suspender is an in-test auth: it records the tenants it suspended; fail makes it answer an
// error after suspending (as if the answer was lost in a crash).
type suspender struct {
	mu    sync.Mutex
	calls map[string]int
	fail  bool
}

func (s *suspender) SuspendTenantForBilling(_ context.Context, tenantID, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.calls == nil {
		s.calls = map[string]int{}
	}
	s.calls[tenantID]++
	if s.fail {
		return errors.New("connection reset")
	}
	return nil
}

func TestGraceSuspendsOnce(t *testing.T) {
	f := newWebhookFixture(t)
	flaggedAt := f.now.Add(-time.Hour).Truncate(time.Second)
	if err := f.deliver(t, event("evt_f", billing.StripeInvoicePaymentFailed, "cus_A", "open", flaggedAt)); err != nil {
		t.Fatal(err)
	}
	clock := flaggedAt.Add(10 * time.Minute)
	auth := &suspender{}
	g, err := billing.NewGrace(f.store, auth, billing.WithGracePeriod(30*time.Minute), billing.WithGraceClock(func() time.Time { return clock }))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if n, err := g.Pass(ctx); err != nil || n != 0 || len(auth.calls) != 0 {
		t.Fatalf("within the grace period: n=%d err=%v calls=%v", n, err, auth.calls)
	}

	// The grace period passes; auth suspends the tenant but its answer is lost.
	clock = flaggedAt.Add(31 * time.Minute)
	auth.fail = true
	if _, err := g.Pass(ctx); err == nil {
		t.Fatal("a pass whose suspension failed reported success")
	}
	if acc := f.account(t, tenantA); acc.Status != billing.AccountFlagged {
		t.Fatalf("marked suspended without auth's answer: %+v", acc)
	}
	// The next pass asks again and marks the account.
	auth.fail = false
	if n, err := g.Pass(ctx); err != nil || n != 1 {
		t.Fatalf("pass: n=%d err=%v", n, err)
	}
	acc := f.account(t, tenantA)
	if acc.Status != billing.AccountSuspended || !acc.SuspendedAt.Equal(clock) {
		t.Fatalf("after the grace period: %+v", acc)
	}
	if n := auditCount(t, f.store, billing.AuditMethodGraceSuspend); n != 1 {
		t.Fatalf("audit records = %d", n)
	}
	// A repeat does nothing.
	if n, err := g.Pass(ctx); err != nil || n != 0 || auth.calls[tenantA] != 2 || auth.calls[tenantB] != 0 {
		t.Fatalf("repeat: n=%d err=%v calls=%v", n, err, auth.calls)
	}
	// A payment after suspension is recorded; the tenant stays suspended.
	if err := f.deliver(t, event("evt_p", billing.StripeInvoicePaid, "cus_A", "paid", flaggedAt.Add(40*time.Minute))); err != nil {
		t.Fatal(err)
	}
	if got := f.account(t, tenantA); got.Status != billing.AccountSuspended {
		t.Fatalf("invoice.paid reinstated a suspended account: %+v", got)
	}
	var outcome string
	if err := f.store.Pool().QueryRow(ctx, `SELECT outcome FROM stripe_events WHERE event_id = 'evt_p'`).Scan(&outcome); err != nil || outcome != billing.WebhookNoChange {
		t.Fatalf("payment after suspension recorded as %q, %v", outcome, err)
	}
}
