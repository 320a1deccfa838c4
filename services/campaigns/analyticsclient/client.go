// Package analyticsclient implements the campaigns domain's SpendSource with the analytics
// service's internal GetCampaignSpend RPC, over the mesh's mTLS.
package analyticsclient

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/services/campaigns"
)

// Limits of one GetCampaignSpend call (the analytics service refuses more): campaigns per
// call, and the longest range (analytics allows 400 days; whole days keep hour alignment).
const (
	MaxCampaigns = campaigns.MaxSpendBatch
	MaxRange     = 366 * 24 * time.Hour
	callTimeout  = 10 * time.Second
)

// Client is a campaigns.SpendSource backed by the analytics service.
type Client struct {
	client analyticsv1.AnalyticsServiceClient
}

var _ campaigns.SpendSource = (*Client)(nil)

// New returns a spend source calling analytics over conn.
func New(conn grpc.ClientConnInterface) *Client {
	return &Client{client: analyticsv1.NewAnalyticsServiceClient(conn)}
}

// Dial connects to the analytics service at addr with the campaigns service's certificate,
// accepting only a server whose SPIFFE id names analytics.
func Dial(addr string, certs *mtls.Source) (*Client, *grpc.ClientConn, error) {
	conn, err := grpcclient.Dial(addr, "analytics", certs)
	if err != nil {
		return nil, nil, err
	}
	return New(conn), conn, nil
}

// Spend implements campaigns.SpendSource. It splits the campaigns and the range into pieces
// analytics accepts and adds the answers up per campaign and currency.
func (c *Client) Spend(ctx context.Context, tenantID string, campaignIDs []string, from, to time.Time) ([]campaigns.Spend, error) {
	type key struct{ campaign, currency string }
	sums := map[key]int64{}
	var order []key
	for lo := 0; lo < len(campaignIDs); lo += MaxCampaigns {
		ids := campaignIDs[lo:min(lo+MaxCampaigns, len(campaignIDs))]
		for start := from; start.Before(to); start = start.Add(MaxRange) {
			end := start.Add(MaxRange)
			if end.After(to) {
				end = to
			}
			callCtx, cancel := context.WithTimeout(ctx, callTimeout)
			resp, err := c.client.GetCampaignSpend(callCtx, &analyticsv1.GetCampaignSpendRequest{
				TenantId: tenantID, CampaignIds: ids, StartTime: timestamppb.New(start), EndTime: timestamppb.New(end),
			})
			cancel()
			if err != nil {
				return nil, fmt.Errorf("get campaign spend from analytics: %w", err)
			}
			for _, s := range resp.GetSpends() {
				k := key{s.GetCampaignId(), s.GetCurrency()}
				if _, seen := sums[k]; !seen {
					order = append(order, k)
				}
				sums[k] += s.GetSpendMicros()
			}
		}
	}
	out := make([]campaigns.Spend, 0, len(order))
	for _, k := range order {
		out = append(out, campaigns.Spend{CampaignID: k.campaign, Currency: k.currency, Micros: sums[k]})
	}
	return out, nil
}
