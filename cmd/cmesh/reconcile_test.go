package main

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
)

// fakeReconcile is a ReconciliationService with fixed answers that records its requests.
type fakeReconcile struct {
	billingv1.UnimplementedReconciliationServiceServer
	mu  sync.Mutex
	got []proto.Message
}

func (f *fakeReconcile) record(m proto.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, m)
}

func sampleRows(day string) []*billingv1.Reconciliation {
	seven := int64(7)
	return []*billingv1.Reconciliation{
		{Day: day, TenantId: "t1", Meter: "events_accepted", Ours: 7, Reported: 7, Stripe: &seven, Explanation: "match"},
		{Day: day, TenantId: "t2", Meter: "messages_email", Ours: 4, Difference: 4, Explanation: "no_customer"},
	}
}

func (f *fakeReconcile) ReconcileUsage(_ context.Context, req *billingv1.ReconcileUsageRequest) (*billingv1.ReconcileUsageResponse, error) {
	f.record(req)
	return &billingv1.ReconcileUsageResponse{Reconciliations: sampleRows(req.GetStartDay()), Differences: 1}, nil
}

func (f *fakeReconcile) ListReconciliations(_ context.Context, req *billingv1.ListReconciliationsRequest) (*billingv1.ListReconciliationsResponse, error) {
	f.record(req)
	rows := sampleRows(req.GetStartDay())
	if req.GetPageToken() == "" {
		return &billingv1.ListReconciliationsResponse{Reconciliations: rows[:1], NextPageToken: "p2"}, nil
	}
	return &billingv1.ListReconciliationsResponse{Reconciliations: rows[1:]}, nil
}

func newReconcileCLI(t *testing.T, srv *fakeReconcile) *testCLI {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer()
	billingv1.RegisterReconciliationServiceServer(s, srv)
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

func TestUsageReconcile(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		args   []string
		want   []proto.Message
		output []string
		absent []string
	}{
		{
			name:   "yesterday by default",
			args:   []string{"usage", "reconcile"},
			want:   []proto.Message{&billingv1.ReconcileUsageRequest{StartDay: "2026-11-21", EndDay: "2026-11-21"}},
			output: []string{"DAY TENANT METER OURS REPORTED STRIPE DIFF EXPLANATION", "2026-11-21 t1 events_accepted 7 7 7 0 match", "2026-11-21 t2 messages_email 4 0 - 4 no_customer"},
		},
		{
			name:   "a range for one tenant, differences only",
			args:   []string{"usage", "reconcile", "-from", "2026-11-01", "-to", "2026-11-20", "-tenant", "t2", "-differences"},
			want:   []proto.Message{&billingv1.ReconcileUsageRequest{StartDay: "2026-11-01", EndDay: "2026-11-20", TenantId: "t2"}},
			output: []string{"no_customer"},
			absent: []string{"match"},
		},
		{
			name: "stored, every page",
			args: []string{"usage", "reconcile", "-day", "2026-11-10", "-stored"},
			want: []proto.Message{
				&billingv1.ListReconciliationsRequest{StartDay: "2026-11-10", EndDay: "2026-11-10", PageSize: 1000},
				&billingv1.ListReconciliationsRequest{StartDay: "2026-11-10", EndDay: "2026-11-10", PageSize: 1000, PageToken: "p2"},
			},
			output: []string{"2026-11-10 t1 events_accepted", "2026-11-10 t2 messages_email"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := &fakeReconcile{}
			c := newReconcileCLI(t, srv)
			if code := c.run(t.Context(), tt.args); code != 0 {
				t.Fatalf("exit code %d; stderr:\n%s", code, c.stderr)
			}
			if len(srv.got) != len(tt.want) {
				t.Fatalf("requests %v, want %v", srv.got, tt.want)
			}
			for i := range tt.want {
				if !proto.Equal(srv.got[i], tt.want[i]) {
					t.Errorf("request %d = %v, want %v", i, srv.got[i], tt.want[i])
				}
			}
			out := squeeze(c.stdout.String())
			for _, w := range tt.output {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, c.stdout)
				}
			}
			for _, w := range tt.absent {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, c.stdout)
				}
			}
			if !strings.Contains(c.stderr.String(), "1 of 2 rows differ") {
				t.Errorf("stderr %q", c.stderr)
			}
		})
	}
}

func TestUsageReconcileJSONAndMistakes(t *testing.T) {
	t.Parallel()
	c := newReconcileCLI(t, &fakeReconcile{})
	if code := c.run(t.Context(), []string{"-o", "json", "usage", "reconcile", "-day", "2026-11-02"}); code != 0 {
		t.Fatalf("exit %d: %s", code, c.stderr)
	}
	var resp billingv1.ReconcileUsageResponse
	if err := protojson.Unmarshal(c.stdout.Bytes(), &resp); err != nil || len(resp.GetReconciliations()) != 2 || resp.GetDifferences() != 1 {
		t.Fatalf("json %q: %v", c.stdout, err)
	}
	for _, args := range [][]string{
		{"usage", "reconcile", "-day", "2026-11-02", "-from", "2026-11-01", "-to", "2026-11-03"},
		{"usage", "reconcile", "-from", "2026-11-01"},
		{"usage", "reconcile", "-day", "yesterday"},
	} {
		c := newReconcileCLI(t, &fakeReconcile{})
		if code := c.run(t.Context(), args); code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage)", args, code)
		}
	}
}
