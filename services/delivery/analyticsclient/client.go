// Package analyticsclient implements the delivery domain's BehaviourSource with the analytics
// service's internal MatchBehaviour RPC, over the mesh's mTLS: a segment's behaviour condition
// ("clicked campaign X in the last 30 days") is answered from the tenant's events in
// ClickHouse, a page of candidate user ids at a time.
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
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

// callTimeout bounds one MatchBehaviour call (a page of at most 1,000 user ids).
const callTimeout = 10 * time.Second

// Client is a delivery.BehaviourSource backed by the analytics service.
type Client struct {
	client analyticsv1.AnalyticsServiceClient
}

var _ delivery.BehaviourSource = (*Client)(nil)

// New returns a behaviour source calling analytics over conn.
func New(conn grpc.ClientConnInterface) *Client {
	return &Client{client: analyticsv1.NewAnalyticsServiceClient(conn)}
}

// Dial connects to the analytics service at addr with the delivery service's certificate,
// accepting only a server whose SPIFFE id names analytics. The connection is made on first use.
func Dial(addr string, certs *mtls.Source) (*Client, *grpc.ClientConn, error) {
	conn, err := grpcclient.Dial(addr, "analytics", certs)
	if err != nil {
		return nil, nil, err
	}
	return New(conn), conn, nil
}

// MatchingUsers implements delivery.BehaviourSource: the event type (matched against the
// events' type, e.g. "click"), the campaign when set, from q.Since until now.
func (c *Client) MatchingUsers(ctx context.Context, tenantID string, q delivery.BehaviourQuery, userIDs []string) ([]string, error) {
	if len(userIDs) == 0 {
		return nil, nil
	}
	if len(userIDs) > delivery.MaxBehaviourCandidates {
		return nil, fmt.Errorf("match behaviour: %d user ids, at most %d a call", len(userIDs), delivery.MaxBehaviourCandidates)
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := c.client.MatchBehaviour(ctx, &analyticsv1.MatchBehaviourRequest{
		TenantId: tenantID, EventType: q.EventType, CampaignId: q.CampaignID, StartTime: timestamppb.New(q.Since), UserIds: userIDs,
	})
	if err != nil {
		return nil, fmt.Errorf("match behaviour in analytics: %w", err)
	}
	return resp.GetUserIds(), nil
}
