// Package deliveryclient implements the billing domain's Source of messages_email,
// messages_sms and contacts_stored with the delivery service's internal
// DeliveryUsageService.GetUsageCounts RPC, over the mesh's mTLS.
package deliveryclient

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"

	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/services/billing"
)

// callTimeout bounds one GetUsageCounts call.
const callTimeout = 30 * time.Second

// Client is a billing.Source backed by the delivery service.
type Client struct {
	client deliveryv1.DeliveryUsageServiceClient
}

var _ billing.Source = (*Client)(nil)

// New returns a source calling delivery over conn.
func New(conn grpc.ClientConnInterface) *Client {
	return &Client{client: deliveryv1.NewDeliveryUsageServiceClient(conn)}
}

// Dial connects to the delivery service at addr with billing's certificate, accepting only a
// server whose SPIFFE id names delivery.
func Dial(addr string, certs *mtls.Source) (*Client, *grpc.ClientConn, error) {
	conn, err := grpcclient.Dial(addr, "delivery", certs)
	if err != nil {
		return nil, nil, err
	}
	return New(conn), conn, nil
}

// Meters implements billing.Source.
func (c *Client) Meters() []billing.Meter {
	return []billing.Meter{billing.MessagesEmail, billing.MessagesSMS, billing.ContactsStored}
}

// UsageCounts implements billing.Source.
func (c *Client) UsageCounts(ctx context.Context, day time.Time) ([]billing.SourceCounts, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := c.client.GetUsageCounts(ctx, &deliveryv1.GetUsageCountsRequest{Day: day.Format(billing.DayLayout)})
	if err != nil {
		return nil, fmt.Errorf("delivery usage counts of %s: %w", day.Format(billing.DayLayout), err)
	}
	out := make([]billing.SourceCounts, 0, len(resp.GetTenants()))
	for _, t := range resp.GetTenants() {
		out = append(out, billing.SourceCounts{TenantID: t.GetTenantId(), Values: map[billing.Meter]int64{
			billing.MessagesEmail: t.GetMessagesEmail(), billing.MessagesSMS: t.GetMessagesSms(), billing.ContactsStored: t.GetContactsStored()}})
	}
	return out, nil
}
