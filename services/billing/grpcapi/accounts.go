package grpcapi

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/services/billing"
)

// AccountServer implements billingv1.BillingAccountServiceServer: tenants' Stripe customers,
// their standing, and Stripe's webhooks relayed by the gateway.
type AccountServer struct {
	billingv1.UnimplementedBillingAccountServiceServer
	accounts *billing.Accounts
	webhooks *billing.Webhooks
}

var _ billingv1.BillingAccountServiceServer = (*AccountServer)(nil)

// NewAccountServer returns the gRPC server of the accounts and the webhooks.
func NewAccountServer(accounts *billing.Accounts, webhooks *billing.Webhooks) *AccountServer {
	return &AccountServer{accounts: accounts, webhooks: webhooks}
}

// SetBillingAccount implements billingv1.BillingAccountServiceServer.
func (s *AccountServer) SetBillingAccount(ctx context.Context, req *billingv1.SetBillingAccountRequest) (*billingv1.BillingAccount, error) {
	a, err := s.accounts.SetBillingAccount(ctx, authn.FromContext(ctx), req.GetTenantId(), req.GetStripeCustomerId())
	if err != nil {
		return nil, err
	}
	return accountToProto(a), nil
}

// GetBillingAccount implements billingv1.BillingAccountServiceServer.
func (s *AccountServer) GetBillingAccount(ctx context.Context, req *billingv1.GetBillingAccountRequest) (*billingv1.BillingAccount, error) {
	a, err := s.accounts.GetBillingAccount(ctx, authn.FromContext(ctx), req.GetTenantId())
	if err != nil {
		return nil, err
	}
	return accountToProto(a), nil
}

// ListBillingAccounts implements billingv1.BillingAccountServiceServer.
func (s *AccountServer) ListBillingAccounts(ctx context.Context, req *billingv1.ListBillingAccountsRequest) (*billingv1.ListBillingAccountsResponse, error) {
	accs, next, err := s.accounts.ListBillingAccounts(ctx, authn.FromContext(ctx), int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	resp := &billingv1.ListBillingAccountsResponse{NextPageToken: next}
	for _, a := range accs {
		resp.Accounts = append(resp.Accounts, accountToProto(a))
	}
	return resp, nil
}

// HandleStripeWebhook implements billingv1.BillingAccountServiceServer.
func (s *AccountServer) HandleStripeWebhook(ctx context.Context, req *billingv1.HandleStripeWebhookRequest) (*billingv1.HandleStripeWebhookResponse, error) {
	if err := s.webhooks.HandleStripeWebhook(ctx, req.GetPayload(), req.GetSignature()); err != nil {
		return nil, err
	}
	return &billingv1.HandleStripeWebhookResponse{}, nil
}

var accountStatuses = map[billing.AccountStatus]billingv1.BillingAccount_Status{
	billing.AccountOK:        billingv1.BillingAccount_STATUS_OK,
	billing.AccountFlagged:   billingv1.BillingAccount_STATUS_FLAGGED,
	billing.AccountSuspended: billingv1.BillingAccount_STATUS_SUSPENDED,
}

func accountToProto(a billing.Account) *billingv1.BillingAccount {
	return &billingv1.BillingAccount{
		TenantId: a.TenantID, StripeCustomerId: a.StripeCustomerID, Status: accountStatuses[a.Status],
		StatusReason: a.StatusReason, FlagTime: accountTime(a.FlaggedAt), SuspendTime: accountTime(a.SuspendedAt),
		SubscriptionStatus: a.SubscriptionStatus, CreateTime: accountTime(a.CreateTime), UpdateTime: accountTime(a.UpdateTime),
		Revision: a.Revision,
	}
}

func accountTime(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
