// Package analyticsclient implements the billing domain's Source of events_stored and
// storage_bytes with the analytics service's internal GetUsageCounts RPC, over the mesh's mTLS.
package analyticsclient

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/services/billing"
)

// callTimeout bounds one GetUsageCounts call (it reads every shard).
const callTimeout = 30 * time.Second

// Client is a billing.Source backed by the analytics service.
type Client struct {
	client analyticsv1.AnalyticsServiceClient
}

var _ billing.Source = (*Client)(nil)

// New returns a source calling analytics over conn.
func New(conn grpc.ClientConnInterface) *Client {
	return &Client{client: analyticsv1.NewAnalyticsServiceClient(conn)}
}

// Dial connects to the analytics service at addr with billing's certificate, accepting only a
// server whose SPIFFE id names analytics.
func Dial(addr string, certs *mtls.Source) (*Client, *grpc.ClientConn, error) {
	conn, err := grpcclient.Dial(addr, "analytics", certs)
	if err != nil {
		return nil, nil, err
	}
	return New(conn), conn, nil
}

// Meters implements billing.Source.
func (c *Client) Meters() []billing.Meter {
	return []billing.Meter{billing.EventsStored, billing.StorageBytes}
}

// UsageCounts implements billing.Source.
func (c *Client) UsageCounts(ctx context.Context, day time.Time) ([]billing.SourceCounts, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := c.client.GetUsageCounts(ctx, &analyticsv1.GetUsageCountsRequest{Day: day.Format(billing.DayLayout)})
	if err != nil {
		return nil, fmt.Errorf("analytics usage counts of %s: %w", day.Format(billing.DayLayout), err)
	}
	out := make([]billing.SourceCounts, 0, len(resp.GetTenants()))
	for _, t := range resp.GetTenants() {
		out = append(out, billing.SourceCounts{TenantID: t.GetTenantId(), Values: map[billing.Meter]int64{
			billing.EventsStored: t.GetEventsStored(), billing.StorageBytes: t.GetStorageBytes()}})
	}
	return out, nil
}
