package main

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
)

// fakeBillingAccounts is a BillingAccountService standing in for the gateway with fixed
// answers; it records the requests it gets.
type fakeBillingAccounts struct {
	billingv1.UnimplementedBillingAccountServiceServer
	mu     sync.Mutex
	got    []proto.Message
	tokens []string
	fail   error
}

func (f *fakeBillingAccounts) record(ctx context.Context, req proto.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, req)
	f.tokens = append(f.tokens, bearerIn(ctx))
	return f.fail
}

func sampleAccount(tenant string) *billingv1.BillingAccount {
	return &billingv1.BillingAccount{TenantId: tenant, StripeCustomerId: "cus_1", Status: billingv1.BillingAccount_STATUS_FLAGGED,
		StatusReason: "invoice.payment_failed in_1 attempt 2", FlagTime: timestamppb.New(testNow), SubscriptionStatus: "past_due",
		UpdateTime: timestamppb.New(testNow), Revision: 3}
}

func (f *fakeBillingAccounts) SetBillingAccount(ctx context.Context, req *billingv1.SetBillingAccountRequest) (*billingv1.BillingAccount, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return &billingv1.BillingAccount{TenantId: req.GetTenantId(), StripeCustomerId: req.GetStripeCustomerId(), Status: billingv1.BillingAccount_STATUS_OK}, nil
}

func (f *fakeBillingAccounts) GetBillingAccount(ctx context.Context, req *billingv1.GetBillingAccountRequest) (*billingv1.BillingAccount, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	return sampleAccount(req.GetTenantId()), nil
}

func (f *fakeBillingAccounts) ListBillingAccounts(ctx context.Context, req *billingv1.ListBillingAccountsRequest) (*billingv1.ListBillingAccountsResponse, error) {
	if err := f.record(ctx, req); err != nil {
		return nil, err
	}
	if req.GetPageToken() == "" {
		return &billingv1.ListBillingAccountsResponse{Accounts: []*billingv1.BillingAccount{sampleAccount("t-1")}, NextPageToken: "p2"}, nil
	}
	return &billingv1.ListBillingAccountsResponse{Accounts: []*billingv1.BillingAccount{{TenantId: "t-2", StripeCustomerId: "cus_2", Status: billingv1.BillingAccount_STATUS_OK}}}, nil
}

func newBillingCLI(t *testing.T, srv *fakeBillingAccounts) *testCLI {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer()
	billingv1.RegisterBillingAccountServiceServer(s, srv)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	c := newTestCLI(t, loggedIn(t, fresh), nil)
	c.dial = func(*app) (authv1.AuthServiceClient, io.Closer, error) {
		conn, err := grpc.NewClient("passthrough:///gateway",
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
			grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, nil, err
		}
		return authv1.NewAuthServiceClient(conn), conn, nil
	}
	return c
}

func TestBillingAccountCommands(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		args   []string
		want   proto.Message
		output []string
	}{
		{"set", []string{"billing", "account", "set", "t-1", "cus_9"}, &billingv1.SetBillingAccountRequest{TenantId: "t-1", StripeCustomerId: "cus_9"},
			[]string{"TENANT t-1", "CUSTOMER cus_9", "STATUS ok"}},
		{"get own", []string{"billing", "account", "get"}, &billingv1.GetBillingAccountRequest{},
			[]string{"STATUS flagged", "REASON invoice.payment_failed in_1 attempt 2", "FLAGGED 2026-11-22T12:00:00Z", "SUBSCRIPTION past_due"}},
		{"get a tenant", []string{"billing", "account", "get", "t-7"}, &billingv1.GetBillingAccountRequest{TenantId: "t-7"}, []string{"TENANT t-7"}},
		{"list every page", []string{"billing", "account", "list", "-all"}, &billingv1.ListBillingAccountsRequest{PageToken: "p2"},
			[]string{"TENANT CUSTOMER STATUS SINCE SUBSCRIPTION REASON", "t-1 cus_1 flagged 2026-11-22T12:00:00Z past_due invoice.payment_failed in_1 attempt 2", "t-2 cus_2 ok - - -"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := &fakeBillingAccounts{}
			c := newBillingCLI(t, srv)
			if code := c.run(t.Context(), tt.args); code != 0 {
				t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
			}
			if got := srv.got[len(srv.got)-1]; !proto.Equal(got, tt.want) {
				t.Errorf("request = %v, want %v", got, tt.want)
			}
			for _, tok := range srv.tokens {
				if tok != "Bearer stored-token" {
					t.Errorf("a call carried %q", tok)
				}
			}
			out := squeeze(c.stdout.String())
			for _, want := range tt.output {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, c.stdout)
				}
			}
		})
	}
}

func TestBillingAccountJSONAndErrors(t *testing.T) {
	t.Parallel()
	c := newBillingCLI(t, &fakeBillingAccounts{})
	if code := c.run(t.Context(), []string{"-o", "json", "billing", "account", "get", "t-3"}); code != 0 {
		t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
	}
	var acc billingv1.BillingAccount
	if err := protojson.Unmarshal(c.stdout.Bytes(), &acc); err != nil || acc.GetTenantId() != "t-3" || acc.GetStatus() != billingv1.BillingAccount_STATUS_FLAGGED {
		t.Fatalf("json output %q: %v", c.stdout, err)
	}
	c = newBillingCLI(t, &fakeBillingAccounts{fail: status.Error(codes.AlreadyExists, "stripe customer cus_1 is mapped to another tenant")})
	if code := c.run(t.Context(), []string{"billing", "account", "set", "t-1", "cus_1"}); code != 1 ||
		c.stderr.String() != "cmesh: stripe customer cus_1 is mapped to another tenant (AlreadyExists)\n" {
		t.Errorf("exit code = %d, stderr = %q", code, c.stderr)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"billing", "account", "set", "t-1"}, "want TENANT CUSTOMER, got 1 argument(s)"},
		{[]string{"billing", "account", "get", "a", "b"}, "want [TENANT], got 2 argument(s)"},
		{[]string{"billing", "account", "list", "-page-size", "-1"}, "-page-size -1 is out of range"},
		{[]string{"billing", "frob"}, `unknown command "billing frob"`},
	} {
		c := newTestCLI(t, nil, nil)
		if code := c.run(context.Background(), tt.args); code != 2 || !strings.Contains(c.stderr.String(), tt.want) {
			t.Errorf("%v: exit %d, stderr:\n%s", tt.args, code, c.stderr)
		}
	}
}
