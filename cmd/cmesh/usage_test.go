package main

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
)

// fakeBilling is a BillingService standing in for the gateway with fixed answers, reached
// through a real gRPC connection; it records the requests it gets.
type fakeBilling struct {
	billingv1.UnimplementedBillingServiceServer
	mu     sync.Mutex
	got    []proto.Message
	tokens []string
}

func (f *fakeBilling) record(ctx context.Context, req proto.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, req)
	f.tokens = append(f.tokens, bearerIn(ctx))
}

func (f *fakeBilling) GetUsage(ctx context.Context, req *billingv1.GetUsageRequest) (*billingv1.GetUsageResponse, error) {
	f.record(ctx, req)
	return &billingv1.GetUsageResponse{
		Usage: []*billingv1.Usage{
			{TenantId: "t1", Day: "2026-11-28", Meter: "events_accepted", Value: 1200, Closed: true},
			{TenantId: "t1", Day: "2026-11-29", Meter: "events_accepted", Value: 300},
		},
		Totals: []*billingv1.UsageTotal{{TenantId: "t1", Meter: "events_accepted", Value: 1500}},
	}, nil
}

func (f *fakeBilling) plan(p *billingv1.Plan) *billingv1.Plan {
	out := proto.Clone(p).(*billingv1.Plan)
	out.Revision, out.Etag, out.UpdatedBy, out.UpdateTime = 3, "r3", "op-1", timestamppb.New(testNow)
	return out
}

func (f *fakeBilling) GetPlan(ctx context.Context, req *billingv1.GetPlanRequest) (*billingv1.Plan, error) {
	f.record(ctx, req)
	return f.plan(&billingv1.Plan{TenantId: "t1", Name: "starter",
		Limits: []*billingv1.PlanLimit{{Meter: "events_accepted", Limit: 1000, Hard: true, Period: "day"}}}), nil
}

func (f *fakeBilling) SetPlan(ctx context.Context, req *billingv1.SetPlanRequest) (*billingv1.Plan, error) {
	f.record(ctx, req)
	return f.plan(req.GetPlan()), nil
}

func (f *fakeBilling) last() proto.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.got) == 0 {
		return nil
	}
	return f.got[len(f.got)-1]
}

func newUsageCLI(t *testing.T, srv *fakeBilling) *testCLI {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer()
	billingv1.RegisterBillingServiceServer(s, srv)
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

func TestUsageAndPlanCommands(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		args   []string
		want   proto.Message
		output []string
	}{
		{
			name:   "usage of a range and meters",
			args:   []string{"usage", "get", "--from", "2026-11-28", "--to", "2026-11-29", "--tenant", "t1", "--meter", "events_accepted,messages_sms"},
			want:   &billingv1.GetUsageRequest{TenantId: "t1", StartDay: "2026-11-28", EndDay: "2026-11-29", Meters: []string{"events_accepted", "messages_sms"}},
			output: []string{"TENANT DAY METER VALUE CLOSED", "t1 2026-11-28 events_accepted 1200 yes", "t1 2026-11-29 events_accepted 300 no", "t1 TOTAL events_accepted 1500"},
		},
		{
			name: "usage of one day",
			args: []string{"usage", "get", "-from", "2026-11-29"},
			want: &billingv1.GetUsageRequest{StartDay: "2026-11-29", EndDay: "2026-11-29"},
		},
		{
			name:   "plan get",
			args:   []string{"plan", "get", "-tenant", "t1"},
			want:   &billingv1.GetPlanRequest{TenantId: "t1"},
			output: []string{"TENANT t1", "NAME starter", "ETAG r3", "UPDATED 2026-11-22T12:00:00Z by op-1", "METER LIMIT PERIOD KIND", "events_accepted 1000 day hard"},
		},
		{
			name: "plan set",
			args: []string{"plan", "set", "-tenant", "t1", "-name", "pro", "-etag", "r2", "-limit", "events_accepted:5000:day:hard", "-limit", "storage_bytes:1000000000:month"},
			want: &billingv1.SetPlanRequest{Plan: &billingv1.Plan{TenantId: "t1", Name: "pro", Etag: "r2", Limits: []*billingv1.PlanLimit{
				{Meter: "events_accepted", Limit: 5000, Hard: true, Period: "day"}, {Meter: "storage_bytes", Limit: 1000000000, Period: "month"}}}},
			output: []string{"NAME pro", "events_accepted 5000 day hard", "storage_bytes 1000000000 month soft"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := &fakeBilling{}
			c := newUsageCLI(t, srv)
			if code := c.run(t.Context(), tt.args); code != 0 {
				t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
			}
			if got := srv.last(); !proto.Equal(got, tt.want) {
				t.Errorf("request = %v\nwant      %v", got, tt.want)
			}
			for _, tok := range srv.tokens {
				if tok != "Bearer stored-token" {
					t.Errorf("a call carried %q, want the stored token", tok)
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

// TestUsageGetDefaultsToToday: without -from, the day's usage (UTC).
func TestUsageGetDefaultsToToday(t *testing.T) {
	t.Parallel()
	srv := &fakeBilling{}
	c := newUsageCLI(t, srv)
	if code := c.run(t.Context(), []string{"usage", "get"}); code != 0 {
		t.Fatalf("exit code %d: %s", code, c.stderr)
	}
	today := time.Now().UTC().Format(time.DateOnly)
	req, _ := srv.last().(*billingv1.GetUsageRequest)
	if req.GetStartDay() != today || req.GetEndDay() != today {
		t.Fatalf("request %v, want today %s", srv.last(), today)
	}
}

func TestUsageAndPlanUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"plan", "set", "-limit", "events_accepted:10:day"},
		{"plan", "set", "-tenant", "t1", "-limit", "events_accepted:ten:day"},
		{"plan", "set", "-tenant", "t1", "-limit", "events_accepted:10"},
		{"plan", "set", "-tenant", "t1", "-limit", "events_accepted:10:day:firm"},
	} {
		srv := &fakeBilling{}
		c := newUsageCLI(t, srv)
		if code := c.run(t.Context(), args); code == 0 || srv.last() != nil {
			t.Errorf("%v: exit code %d, request %v; want a usage error and no call", args, code, srv.last())
		}
	}
}
