package billing

import (
	"context"
	"log/slog"
	"strings"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
)

// Store is what the BillingService's usage and plan calls read and write.
type Store interface {
	// ListUsage returns the usage q selects, at most limit rows.
	ListUsage(ctx context.Context, q UsageQuery, limit int) ([]Usage, error)
	// GetPlan returns a tenant's plan, NOT_FOUND when it has none.
	GetPlan(ctx context.Context, tenantID string) (Plan, error)
	// PutPlan creates or replaces a plan (at expectRevision when > 0) and writes rec with it.
	PutPlan(ctx context.Context, p Plan, expectRevision int64, rec *audit.Record) (Plan, error)
	// ListPlans returns up to limit plans of tenants after afterTenant, by tenant.
	ListPlans(ctx context.Context, afterTenant string, limit int) ([]Plan, error)
}

// Page sizes of ListPlans, and the most rows one GetUsage answers.
const (
	DefaultPageSize = 50
	MaxPageSize     = 1000
	MaxUsageRows    = 20000
)

// Service is the BillingService's domain: usage and plans, scoped by the caller.
type Service struct {
	store    Store
	metering *Metering
	logger   *slog.Logger
}

// NewService returns the service. metering (may be nil) publishes a tenant's quotas right
// after its plan changes.
func NewService(store Store, metering *Metering, logger *slog.Logger) *Service {
	return &Service{store: store, metering: metering, logger: logger}
}

// readScope is the tenant a caller reads: a tenant's caller its own (an empty tenant_id means
// it; another tenant's is NOT_FOUND, as if it did not exist), a platform operator the one it
// names or, empty, every tenant.
func readScope(caller *authn.Principal, tenantID, what string) (string, error) {
	if caller == nil {
		return "", apperr.New(apperr.Unauthenticated, "UNAUTHENTICATED", "a credential is required")
	}
	if len(tenantID) > 200 {
		var v apperr.Violations
		v.Add("tenant_id", "at most 200 bytes")
		return "", v.Err()
	}
	if !caller.Role.TenantScoped() && caller.TenantID == "" {
		return tenantID, nil
	}
	if tenantID != "" && tenantID != caller.TenantID {
		return "", apperr.NotFoundf("%s of tenant %s", what, tenantID)
	}
	return caller.TenantID, nil
}

// GetUsage returns the usage of the days and meters asked (see ParseUsageQuery) with the totals
// per tenant and meter, in the caller's scope (readScope: an operator's empty tenant is every
// tenant). A query selecting more than MaxUsageRows rows is refused: name a tenant, fewer
// meters or fewer days.
func (s *Service) GetUsage(ctx context.Context, caller *authn.Principal, tenantID, startDay, endDay string, meters []string) ([]Usage, []Total, error) {
	tenant, err := readScope(caller, tenantID, "usage")
	if err != nil {
		return nil, nil, err
	}
	q, err := ParseUsageQuery(tenant, startDay, endDay, meters)
	if err != nil {
		return nil, nil, err
	}
	rows, err := s.store.ListUsage(ctx, q, MaxUsageRows+1)
	if err != nil {
		return nil, nil, err
	}
	if len(rows) > MaxUsageRows {
		var v apperr.Violations
		v.Add("end_day", "the query selects more than %d rows: name a tenant, fewer meters or fewer days", MaxUsageRows)
		return nil, nil, v.Err()
	}
	return rows, Totals(rows), nil
}

// GetPlan returns a tenant's plan in the caller's scope; an operator must name the tenant. A
// tenant without a plan has one with no limits (revision 0).
func (s *Service) GetPlan(ctx context.Context, caller *authn.Principal, tenantID string) (Plan, error) {
	tenant, err := readScope(caller, tenantID, "plan")
	if err != nil {
		return Plan{}, err
	}
	if tenant == "" {
		var v apperr.Violations
		v.Add("tenant_id", "required for a platform operator")
		return Plan{}, v.Err()
	}
	p, err := s.store.GetPlan(ctx, tenant)
	if apperr.HasCode(err, apperr.NotFound) {
		return Plan{TenantID: tenant, Limits: []Limit{}}, nil
	}
	return p, err
}

// operatorOnly refuses a caller that belongs to a tenant. The access rule's billing.manage is
// the platform operator's alone; this holds even if a tenant's credential ever carried it (a
// tenant never sets its own plan, nor sees others').
func operatorOnly(caller *authn.Principal) error {
	if caller == nil {
		return apperr.New(apperr.Unauthenticated, "UNAUTHENTICATED", "a credential is required")
	}
	if caller.TenantID != "" || caller.Role.TenantScoped() {
		return apperr.New(apperr.PermissionDenied, "PERMISSION_DENIED", "only a platform operator manages plans")
	}
	return nil
}

// SetPlan validates and stores p (replacing the tenant's plan; at expectRevision when > 0:
// ABORTED when it changed since), audited with the change, then publishes the tenant's quotas.
// Only a platform operator may (operatorOnly).
func (s *Service) SetPlan(ctx context.Context, caller *authn.Principal, p Plan, expectRevision int64) (Plan, error) {
	if err := operatorOnly(caller); err != nil {
		return Plan{}, err
	}
	p.Name = strings.TrimSpace(p.Name)
	if err := ValidatePlan(p); err != nil {
		return Plan{}, err
	}
	if expectRevision < 0 {
		var v apperr.Violations
		v.Add("plan.revision", "must not be negative")
		return Plan{}, v.Err()
	}
	p.UpdatedBy = caller.Subject
	var recp *audit.Record
	// The platform's chain: the operator is no user of the tenant, and auth refuses a tenant's
	// chain a record of someone else (the record would then block the outbox behind it).
	if rec, ok := audit.Take(ctx, "", "plans/"+p.TenantID); ok {
		recp = &rec
	}
	out, err := s.store.PutPlan(ctx, p, expectRevision, recp)
	if err != nil {
		return Plan{}, err
	}
	if s.metering != nil {
		if err := s.metering.PublishTenantQuotas(ctx, p.TenantID); err != nil {
			// The next metering round publishes them; the plan change stands.
			s.logger.WarnContext(ctx, "publish quotas after a plan change", "tenant_id", p.TenantID, "error", err)
		}
	}
	return out, nil
}

// ListPlans pages through every tenant's plan (platform operators only, operatorOnly). The
// page token is the last tenant of the previous page.
func (s *Service) ListPlans(ctx context.Context, caller *authn.Principal, pageSize int32, pageToken string) ([]Plan, string, error) {
	if err := operatorOnly(caller); err != nil {
		return nil, "", err
	}
	var v apperr.Violations
	limit := DefaultPageSize
	switch {
	case pageSize < 0:
		v.Add("page_size", "must not be negative")
	case pageSize > 0:
		limit = min(int(pageSize), MaxPageSize)
	}
	if len(pageToken) > 200 {
		v.Add("page_token", "is not a token from a previous page")
	}
	if err := v.Err(); err != nil {
		return nil, "", err
	}
	ps, err := s.store.ListPlans(ctx, pageToken, limit)
	if err != nil || len(ps) < limit {
		return ps, "", err
	}
	return ps, ps[len(ps)-1].TenantID, nil
}
