// Package authclient implements the billing domain's TenantSuspender with auth's internal
// SuspendTenantForBilling RPC, over the mesh's mTLS.
package authclient

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/services/billing"
)

// callTimeout bounds one suspension; the grace job retries at its next pass.
const callTimeout = 10 * time.Second

// maxReason is the longest reason auth accepts.
const maxReason = 512

// Client is a billing.TenantSuspender backed by the auth service.
type Client struct {
	client authv1.AuthServiceClient
}

var _ billing.TenantSuspender = (*Client)(nil)

// New returns a suspender calling auth over conn.
func New(conn grpc.ClientConnInterface) *Client {
	return &Client{client: authv1.NewAuthServiceClient(conn)}
}

// Dial connects to the auth service at addr with the billing service's certificate, accepting
// only a server whose SPIFFE id names auth.
func Dial(addr string, certs *mtls.Source) (*Client, *grpc.ClientConn, error) {
	conn, err := grpcclient.Dial(addr, "auth", certs)
	if err != nil {
		return nil, nil, err
	}
	return New(conn), conn, nil
}

// SuspendTenantForBilling implements billing.TenantSuspender. Auth answers OK for a tenant
// already suspended, so a repeat after a crash is harmless.
func (c *Client) SuspendTenantForBilling(ctx context.Context, tenantID, reason string) error {
	if len(reason) > maxReason {
		reason = reason[:maxReason]
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if _, err := c.client.SuspendTenantForBilling(ctx, &authv1.SuspendTenantForBillingRequest{TenantId: tenantID, Reason: reason}); err != nil {
		return fmt.Errorf("auth suspend tenant %s: %w", tenantID, err)
	}
	return nil
}
