// Package grpcapi serves the billing domain over gRPC (and, through the gateway, REST).
// Handlers are thin: decode, call the domain, encode.
package grpcapi

import (
	"context"
	"time"

	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
	"github.com/campaignmesh/campaignmesh/services/billing"
)

// ReconcileServer implements billingv1.ReconciliationServiceServer.
type ReconcileServer struct {
	billingv1.UnimplementedReconciliationServiceServer
	rec *billing.Reconciler
}

var _ billingv1.ReconciliationServiceServer = (*ReconcileServer)(nil)

// NewReconcileServer returns the gRPC server of rec.
func NewReconcileServer(rec *billing.Reconciler) *ReconcileServer { return &ReconcileServer{rec: rec} }

// ReconcileUsage implements billingv1.ReconciliationServiceServer.
func (s *ReconcileServer) ReconcileUsage(ctx context.Context, req *billingv1.ReconcileUsageRequest) (*billingv1.ReconcileUsageResponse, error) {
	rows, err := s.rec.ReconcileDays(ctx, req.GetStartDay(), req.GetEndDay(), req.GetTenantId())
	if err != nil {
		return nil, err
	}
	resp := &billingv1.ReconcileUsageResponse{Reconciliations: reconciliationsToProto(rows)}
	for _, r := range rows {
		if r.Explanation != billing.ExplainMatch {
			resp.Differences++
		}
	}
	return resp, nil
}

// ListReconciliations implements billingv1.ReconciliationServiceServer.
func (s *ReconcileServer) ListReconciliations(ctx context.Context, req *billingv1.ListReconciliationsRequest) (*billingv1.ListReconciliationsResponse, error) {
	page, err := s.rec.List(ctx, req.GetStartDay(), req.GetEndDay(), req.GetTenantId(), int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	return &billingv1.ListReconciliationsResponse{Reconciliations: reconciliationsToProto(page.Rows), NextPageToken: page.NextPageToken}, nil
}

func reconciliationsToProto(rows []billing.Reconciliation) []*billingv1.Reconciliation {
	out := make([]*billingv1.Reconciliation, 0, len(rows))
	for _, r := range rows {
		out = append(out, &billingv1.Reconciliation{
			Day: r.Day.UTC().Format(time.DateOnly), TenantId: r.TenantID, Meter: string(r.Meter),
			Ours: r.Ours, Reported: r.Reported, Stripe: r.Stripe, Difference: r.Difference, Explanation: r.Explanation,
		})
	}
	return out
}
