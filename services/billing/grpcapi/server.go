// Package grpcapi serves the billing domain over gRPC (and, through the gateway, REST).
// Handlers are thin: decode, call the domain, encode.
package grpcapi

import (
	"context"
	"log/slog"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/services/billing"
)

// ServiceName is the billing service's mesh identity and its name in audit records.
const ServiceName = "billing"

// ServerOptions are the platform options of the billing server, shared by the app and the
// tests so both run the same chain: credentials checked by verifier, every audited call
// recorded through auditor (the service's audit outbox).
func ServerOptions(verifier grpcserver.Verifier, auditor audit.Sink, logger *slog.Logger) []grpcserver.Option {
	return []grpcserver.Option{
		grpcserver.WithService(ServiceName),
		grpcserver.WithLogger(logger),
		grpcserver.WithVerifier(verifier),
		grpcserver.WithAuditor(auditor),
		grpcserver.WithErrorClassifier(pgdb.Classify), // database down: UNAVAILABLE with retry info
	}
}

// Server implements billingv1.BillingServiceServer.
type Server struct {
	billingv1.UnimplementedBillingServiceServer
	svc *billing.Service
}

var _ billingv1.BillingServiceServer = (*Server)(nil)

// NewServer returns the gRPC server of svc.
func NewServer(svc *billing.Service) *Server { return &Server{svc: svc} }

// GetUsage implements billingv1.BillingServiceServer.
func (s *Server) GetUsage(ctx context.Context, req *billingv1.GetUsageRequest) (*billingv1.GetUsageResponse, error) {
	rows, totals, err := s.svc.GetUsage(ctx, authn.FromContext(ctx), req.GetTenantId(), req.GetStartDay(), req.GetEndDay(), req.GetMeters())
	if err != nil {
		return nil, err
	}
	out := &billingv1.GetUsageResponse{Usage: make([]*billingv1.Usage, len(rows)), Totals: make([]*billingv1.UsageTotal, len(totals))}
	for i, r := range rows {
		out.Usage[i] = &billingv1.Usage{TenantId: r.TenantID, Day: r.Day.Format(billing.DayLayout), Meter: string(r.Meter), Value: r.Value, Closed: r.Closed}
	}
	for i, t := range totals {
		out.Totals[i] = &billingv1.UsageTotal{TenantId: t.TenantID, Meter: string(t.Meter), Value: t.Value}
	}
	return out, nil
}

// GetPlan implements billingv1.BillingServiceServer.
func (s *Server) GetPlan(ctx context.Context, req *billingv1.GetPlanRequest) (*billingv1.Plan, error) {
	p, err := s.svc.GetPlan(ctx, authn.FromContext(ctx), req.GetTenantId())
	if err != nil {
		return nil, err
	}
	return planToProto(p), nil
}

// SetPlan implements billingv1.BillingServiceServer.
func (s *Server) SetPlan(ctx context.Context, req *billingv1.SetPlanRequest) (*billingv1.Plan, error) {
	in := req.GetPlan()
	rev, err := parseEtag(in.GetEtag())
	if err != nil {
		return nil, err
	}
	p := billing.Plan{TenantID: in.GetTenantId(), Name: in.GetName(), Limits: make([]billing.Limit, len(in.GetLimits()))}
	if len(in.GetLimits()) > 2*len(billing.Meters()) {
		var v apperr.Violations
		v.Add("plan.limits", "at most one limit per meter")
		return nil, v.Err()
	}
	for i, l := range in.GetLimits() {
		p.Limits[i] = billing.Limit{Meter: billing.Meter(l.GetMeter()), Limit: l.GetLimit(), Hard: l.GetHard(), Period: billing.Period(l.GetPeriod())}
	}
	out, err := s.svc.SetPlan(ctx, authn.FromContext(ctx), p, rev)
	if err != nil {
		return nil, err
	}
	return planToProto(out), nil
}

// ListPlans implements billingv1.BillingServiceServer.
func (s *Server) ListPlans(ctx context.Context, req *billingv1.ListPlansRequest) (*billingv1.ListPlansResponse, error) {
	ps, next, err := s.svc.ListPlans(ctx, authn.FromContext(ctx), req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	out := &billingv1.ListPlansResponse{NextPageToken: next, Plans: make([]*billingv1.Plan, len(ps))}
	for i, p := range ps {
		out.Plans[i] = planToProto(p)
	}
	return out, nil
}

// etag is a plan's version as the API shows it: "r<revision>".
func etag(revision int64) string { return "r" + strconv.FormatInt(revision, 10) }

// parseEtag returns the revision an etag names; empty is 0 (no condition).
func parseEtag(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(strings.TrimPrefix(s, "r"), 10, 64)
	if err != nil || n < 1 || !strings.HasPrefix(s, "r") {
		var v apperr.Violations
		v.Add("plan.etag", "is not an etag of a plan")
		return 0, v.Err()
	}
	return n, nil
}

func planToProto(p billing.Plan) *billingv1.Plan {
	out := &billingv1.Plan{TenantId: p.TenantID, Name: p.Name, Revision: p.Revision, UpdatedBy: p.UpdatedBy,
		Limits: make([]*billingv1.PlanLimit, len(p.Limits))}
	if p.Revision > 0 {
		out.Etag = etag(p.Revision)
		out.UpdateTime = timestamppb.New(p.UpdateTime)
	}
	for i, l := range p.Limits {
		out.Limits[i] = &billingv1.PlanLimit{Meter: string(l.Meter), Limit: l.Limit, Hard: l.Hard, Period: string(l.Period)}
	}
	return out
}
