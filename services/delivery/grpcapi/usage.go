package grpcapi

import (
	"context"

	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

// UsageServer implements deliveryv1.DeliveryUsageServiceServer (internal: billing).
type UsageServer struct {
	deliveryv1.UnimplementedDeliveryUsageServiceServer
	usage *delivery.Usage
}

var _ deliveryv1.DeliveryUsageServiceServer = (*UsageServer)(nil)

// NewUsageServer returns the gRPC server of billing's usage counts.
func NewUsageServer(u *delivery.Usage) *UsageServer { return &UsageServer{usage: u} }

// GetUsageCounts implements deliveryv1.DeliveryUsageServiceServer.
func (s *UsageServer) GetUsageCounts(ctx context.Context, req *deliveryv1.GetUsageCountsRequest) (*deliveryv1.GetUsageCountsResponse, error) {
	counts, err := s.usage.Counts(ctx, req.GetDay())
	if err != nil {
		return nil, err
	}
	resp := &deliveryv1.GetUsageCountsResponse{Tenants: make([]*deliveryv1.TenantUsageCounts, len(counts))}
	for i, c := range counts {
		resp.Tenants[i] = &deliveryv1.TenantUsageCounts{TenantId: c.TenantID, MessagesEmail: c.MessagesEmail, MessagesSms: c.MessagesSMS,
			ContactsStored: c.ContactsStored}
	}
	return resp, nil
}
