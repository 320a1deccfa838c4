// Package campaignsclient implements the delivery domain's ActiveCampaigns with the campaigns
// service's internal ListDeliveryCampaigns RPC, over the mesh's mTLS.
package campaignsclient

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"

	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

const (
	// pageSize is the most campaigns ListDeliveryCampaigns returns at once.
	pageSize = 1000
	// callTimeout bounds one page: the dispatcher lists every second, and a list that hangs
	// must fail (senders then wait) rather than keep the last answer forever.
	callTimeout = 10 * time.Second
)

// Client is a delivery.ActiveCampaigns backed by the campaigns service.
type Client struct {
	client campaignsv1.CampaignServiceClient
}

var _ delivery.ActiveCampaigns = (*Client)(nil)

// New returns the client calling campaigns over conn.
func New(conn grpc.ClientConnInterface) *Client {
	return &Client{client: campaignsv1.NewCampaignServiceClient(conn)}
}

// Dial connects to the campaigns service at addr with the delivery service's certificate,
// accepting only a server whose SPIFFE id names campaigns.
func Dial(addr string, certs *mtls.Source) (*Client, *grpc.ClientConn, error) {
	conn, err := grpcclient.Dial(addr, "campaigns", certs)
	if err != nil {
		return nil, nil, err
	}
	return New(conn), conn, nil
}

// ListActive implements delivery.ActiveCampaigns: every page of the active email and SMS
// campaigns of every tenant. A failed page fails the whole list: a partial list would make
// the campaigns missing from it look stopped.
func (c *Client) ListActive(ctx context.Context) ([]delivery.ActiveCampaign, error) {
	var out []delivery.ActiveCampaign
	token := ""
	for {
		callCtx, cancel := context.WithTimeout(ctx, callTimeout)
		resp, err := c.client.ListDeliveryCampaigns(callCtx, &campaignsv1.ListDeliveryCampaignsRequest{PageSize: pageSize, PageToken: token})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("list active campaigns from campaigns: %w", err)
		}
		for _, p := range resp.GetCampaigns() {
			if p.GetState() != campaignsv1.Campaign_STATE_ACTIVE {
				continue
			}
			a := delivery.ActiveCampaign{TenantID: p.GetTenantId(), ID: p.GetId(), StateTime: p.GetStateTime().AsTime()}
			switch p.GetChannel() {
			case campaignsv1.Channel_CHANNEL_EMAIL:
				a.Channel = delivery.ChannelEmail
			case campaignsv1.Channel_CHANNEL_SMS:
				a.Channel = delivery.ChannelSMS
			default:
				continue
			}
			for _, v := range p.GetVariants() {
				a.Variants = append(a.Variants, delivery.Variant{Name: v.GetName(), Weight: int(v.GetWeight())})
			}
			out = append(out, a)
		}
		if token = resp.GetNextPageToken(); token == "" {
			return out, nil
		}
	}
}
