package billing

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
)

// AccountStatus is a billing account's standing.
type AccountStatus string

// The standings. ok → flagged when a payment fails or the subscription lapses; flagged → ok
// when an invoice is paid; flagged → suspended when the grace period runs out (auth suspends
// the tenant). Suspended is final for billing: reinstating a tenant is an operator's decision,
// never a webhook's: the operator resumes the tenant in auth (which has no RPC for it yet) and
// calls SetBillingAccount, which resets the standing to ok.
const (
	AccountOK        AccountStatus = "ok"
	AccountFlagged   AccountStatus = "flagged"
	AccountSuspended AccountStatus = "suspended"
)

// Account is a tenant's billing account: the Stripe customer it maps to and its standing.
type Account struct {
	TenantID         string
	StripeCustomerID string
	Status           AccountStatus
	// StatusReason says why the account is flagged or suspended (e.g. "invoice.payment_failed
	// in_123 attempt 2").
	StatusReason string
	// FlaggedAt is when the account was first flagged since it was last ok: the grace period
	// runs from it. Zero when not flagged.
	FlaggedAt time.Time
	// SuspendedAt is when the grace job suspended the tenant. Zero when not suspended.
	SuspendedAt time.Time
	// SubscriptionStatus is the Stripe subscription's last status seen ("" before any).
	SubscriptionStatus string
	// LastEventAt is the creation time of the last Stripe event applied to the account: an
	// older event delivered late does not undo newer state.
	LastEventAt time.Time
	Revision    int64
	CreateTime  time.Time
	UpdateTime  time.Time
}

// AccountStore is the port to the billing accounts' storage.
type AccountStore interface {
	// SetBillingAccount maps tenantID to customerID (creating the account or replacing its
	// customer) with the standing reset to ok, and writes rec with the change. A customer
	// mapped to another tenant is AlreadyExists.
	SetBillingAccount(ctx context.Context, tenantID, customerID string, rec *audit.Record) (Account, error)
	// GetBillingAccount returns a tenant's account, or NotFound.
	GetBillingAccount(ctx context.Context, tenantID string) (Account, error)
	// ListBillingAccounts returns up to limit accounts with tenant ids after after, in order.
	ListBillingAccounts(ctx context.Context, after string, limit int) ([]Account, error)
}

// Accounts is the billing accounts' domain: the operator's mapping of tenants to Stripe
// customers, and the standing the webhooks and the grace job maintain.
type Accounts struct {
	store AccountStore
	log   *slog.Logger
}

// NewAccounts returns the accounts' domain over store.
func NewAccounts(store AccountStore, logger *slog.Logger) *Accounts {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Accounts{store: store, log: logger}
}

var (
	accountTenantPattern   = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	stripeCustomerPattern  = regexp.MustCompile(`^cus_[A-Za-z0-9]{1,250}$`)
	errAccountNotPermitted = apperr.New(apperr.PermissionDenied, "PERMISSION_DENIED", "permission denied")
)

// validateAccountTenant checks a tenant id (auth's UUIDs).
func validateAccountTenant(v *apperr.Violations, tenantID string) {
	if !accountTenantPattern.MatchString(tenantID) {
		v.Add("tenant_id", "must be a tenant id (UUID)")
	}
}

// SetBillingAccount maps a tenant to an existing Stripe customer (billing never creates
// customers) and resets its standing to ok: the operator's way to reinstate an account.
// Operators only (billing.manage); audited with the change.
func (a *Accounts) SetBillingAccount(ctx context.Context, caller *authn.Principal, tenantID, customerID string) (Account, error) {
	if caller == nil || !caller.Has(rbac.BillingManage) || caller.TenantID != "" {
		return Account{}, errAccountNotPermitted
	}
	var v apperr.Violations
	validateAccountTenant(&v, tenantID)
	if !stripeCustomerPattern.MatchString(customerID) {
		v.Add("stripe_customer_id", "must be a Stripe customer id (cus_…)")
	}
	if err := v.Err(); err != nil {
		return Account{}, err
	}
	// The record goes to the platform's chain (tenant ""), as auth's SuspendTenant's does, and
	// names the tenant as its resource: billing cannot tell whether tenantID exists in auth,
	// and auth refuses records of unknown tenants, which would stop the outbox behind them.
	var rec *audit.Record
	if r, ok := audit.Take(ctx, "", AccountAuditResource(tenantID)); ok {
		rec = &r
	}
	acc, err := a.store.SetBillingAccount(ctx, tenantID, customerID, rec)
	if err != nil {
		return Account{}, fmt.Errorf("set billing account of %s: %w", tenantID, err)
	}
	return acc, nil
}

// GetBillingAccount returns a tenant's account. Tenant callers see their own only (empty
// tenantID means theirs; another tenant's is NotFound, as if it did not exist); operators name
// the tenant.
func (a *Accounts) GetBillingAccount(ctx context.Context, caller *authn.Principal, tenantID string) (Account, error) {
	if caller == nil {
		return Account{}, errAccountNotPermitted
	}
	if caller.TenantID != "" {
		if tenantID != "" && tenantID != caller.TenantID {
			return Account{}, apperr.NotFoundf("billing account of tenant %s", tenantID)
		}
		tenantID = caller.TenantID
	}
	var v apperr.Violations
	validateAccountTenant(&v, tenantID)
	if err := v.Err(); err != nil {
		return Account{}, err
	}
	acc, err := a.store.GetBillingAccount(ctx, tenantID)
	if err != nil {
		return Account{}, fmt.Errorf("get billing account of %s: %w", tenantID, err)
	}
	return acc, nil
}

// The page sizes of ListBillingAccounts (API conventions: default 50, max 1000).
const (
	DefaultAccountPageSize = 50
	MaxAccountPageSize     = 1000
)

// ListBillingAccounts returns one page of all tenants' accounts in tenant id order and the
// next page's token ("" on the last page). Operators only.
func (a *Accounts) ListBillingAccounts(ctx context.Context, caller *authn.Principal, pageSize int, pageToken string) ([]Account, string, error) {
	if caller == nil || !caller.Has(rbac.BillingManage) || caller.TenantID != "" {
		return nil, "", errAccountNotPermitted
	}
	var v apperr.Violations
	switch {
	case pageSize < 0:
		v.Add("page_size", "must not be negative")
	case pageSize == 0:
		pageSize = DefaultAccountPageSize
	case pageSize > MaxAccountPageSize:
		pageSize = MaxAccountPageSize
	}
	after := ""
	if pageToken != "" {
		b, err := base64.RawURLEncoding.DecodeString(pageToken)
		if err != nil || !accountTenantPattern.Match(b) {
			v.Add("page_token", "is not a token from a previous page")
		}
		after = string(b)
	}
	if err := v.Err(); err != nil {
		return nil, "", err
	}
	accs, err := a.store.ListBillingAccounts(ctx, after, pageSize)
	if err != nil {
		return nil, "", fmt.Errorf("list billing accounts: %w", err)
	}
	next := ""
	if len(accs) == pageSize {
		next = base64.RawURLEncoding.EncodeToString([]byte(accs[len(accs)-1].TenantID))
	}
	return accs, next, nil
}

// AccountAuditResource is the resource of the audit records of tenantID's billing account.
// Billing's records of account changes (the operator's, the webhooks', the grace job's) sit in
// the platform's audit chain (tenant ""): a tenant id mapped by mistake must not produce
// records auth refuses. The tenant sees its suspension in its own chain (auth's
// SuspendTenantForBilling record).
func AccountAuditResource(tenantID string) string { return "billing_accounts/" + tenantID }
