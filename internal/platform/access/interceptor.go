package access

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	accessv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/access/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
)

// AuditRecord is what the access layer reports for an audited call, allowed or denied.
type AuditRecord struct {
	Time     time.Time
	Method   string
	TenantID string
	// Actor is the user or key id, or "service:<name>" for mesh callers.
	Actor       string
	ActorKind   string
	PeerService string
	Outcome     codes.Code
}

// Auditor receives one record per audited call.
type Auditor interface {
	Record(ctx context.Context, rec AuditRecord)
}

// LogAuditor writes audit records as structured log lines ("audit" messages).
type LogAuditor struct{ Logger *slog.Logger }

// Record implements Auditor.
func (a LogAuditor) Record(ctx context.Context, r AuditRecord) {
	a.Logger.InfoContext(ctx, "audit", "method", r.Method, "tenant_id", r.TenantID, "actor", r.Actor,
		"actor_kind", r.ActorKind, "peer_service", r.PeerService, "outcome", r.Outcome.String())
}

// Enforcer checks every call against its rule and audits the calls whose rule says so.
type Enforcer struct {
	rules   Rules
	auditor Auditor
}

// NewEnforcer returns an enforcer for rules. auditor may be nil when nothing is audited.
func NewEnforcer(rules Rules, auditor Auditor) *Enforcer {
	return &Enforcer{rules: rules, auditor: auditor}
}

// SetRules replaces the rules; call it before serving.
func (e *Enforcer) SetRules(rules Rules) { e.rules = rules }

var errNoRule = apperr.New(apperr.PermissionDenied, "NO_ACCESS_RULE", "method is not available")

// Check decides whether the caller in ctx may call method.
func (e *Enforcer) Check(ctx context.Context, method string) error {
	rule := e.rules[method]
	if rule == nil {
		return errNoRule // default deny
	}
	p := authn.FromContext(ctx)
	switch req := rule.GetRequirement().(type) {
	case *accessv1.Rule_Public:
		return nil
	case *accessv1.Rule_Callers:
		svc, err := mtls.PeerService(ctx)
		if err != nil || !slices.Contains(req.Callers.GetServices(), svc) {
			return apperr.New(apperr.PermissionDenied, "CALLER_NOT_ALLOWED", "caller is not allowed to call this method")
		}
		return nil
	case *accessv1.Rule_Authenticated:
		if p == nil {
			return apperr.New(apperr.Unauthenticated, "CREDENTIAL_REQUIRED", "credential required")
		}
		return nil
	case *accessv1.Rule_Permission:
		if p == nil {
			return apperr.New(apperr.Unauthenticated, "CREDENTIAL_REQUIRED", "credential required")
		}
		if !p.Has(req.Permission) {
			return apperr.New(apperr.PermissionDenied, "PERMISSION_DENIED", "permission %s required", req.Permission)
		}
		return nil
	}
	return errNoRule
}

func (e *Enforcer) audit(ctx context.Context, method string, err error) {
	rule := e.rules[method]
	if e.auditor == nil || rule == nil || !rule.GetAudit() {
		return
	}
	st, _ := apperr.ToStatus(err)
	rec := AuditRecord{Time: time.Now().UTC(), Method: method, Outcome: st.Code()}
	rec.PeerService, _ = mtls.PeerService(ctx)
	if p := authn.FromContext(ctx); p != nil {
		rec.TenantID, rec.Actor, rec.ActorKind = p.TenantID, p.Subject, string(p.Kind)
	} else if rec.PeerService != "" {
		rec.Actor, rec.ActorKind = "service:"+rec.PeerService, "service"
	}
	e.auditor.Record(ctx, rec)
}

// UnaryInterceptor enforces rules on unary calls.
func (e *Enforcer) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := e.Check(ctx, info.FullMethod); err != nil {
			e.audit(ctx, info.FullMethod, err)
			return nil, err
		}
		resp, err := handler(ctx, req)
		e.audit(ctx, info.FullMethod, err)
		return resp, err
	}
}

// StreamInterceptor enforces rules on streaming calls.
func (e *Enforcer) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := e.Check(ss.Context(), info.FullMethod); err != nil {
			e.audit(ss.Context(), info.FullMethod, err)
			return err
		}
		err := handler(srv, ss)
		e.audit(ss.Context(), info.FullMethod, err)
		return err
	}
}
