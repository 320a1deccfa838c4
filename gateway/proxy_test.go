package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// streamBackend is a real gRPC server behind the proxy whose streaming handlers are scripted by
// the test: ingest's StreamEvents (both sides stream) and analytics' WatchCampaignMetrics (the
// server streams).
type streamBackend struct {
	ingestv1.UnimplementedIngestServiceServer
	analyticsv1.UnimplementedAnalyticsServiceServer

	mu       sync.Mutex
	md       metadata.MD
	failAt   int   // StreamEvents fails on this message (1-based; 0: never)
	failWith error // with this error
	canceled chan struct{}
}

func (b *streamBackend) StreamEvents(s ingestv1.IngestService_StreamEventsServer) error {
	md, _ := metadata.FromIncomingContext(s.Context())
	b.mu.Lock()
	b.md = md
	failAt, failWith := b.failAt, b.failWith
	b.mu.Unlock()
	if err := s.SendHeader(metadata.Pairs("x-backend", "ingest")); err != nil {
		return err
	}
	for n := 1; ; n++ {
		req, err := s.Recv()
		if errors.Is(err, io.EOF) {
			s.SetTrailer(metadata.Pairs("x-batches", "done"))
			return nil
		}
		if err != nil {
			return err
		}
		if n == failAt {
			return failWith
		}
		if err := s.Send(&ingestv1.IngestEventsResponse{Batch: req.GetBatch(), Accepted: int32(len(req.GetEvents()))}); err != nil {
			return err
		}
	}
}

func (b *streamBackend) WatchCampaignMetrics(req *analyticsv1.WatchCampaignMetricsRequest, s analyticsv1.AnalyticsService_WatchCampaignMetricsServer) error {
	for i := 0; ; i++ {
		if err := s.Send(&analyticsv1.WatchCampaignMetricsResponse{Metrics: &analyticsv1.Metrics{Events: int64(i)}}); err != nil {
			return err
		}
		select {
		case <-s.Context().Done():
			close(b.canceled)
			return s.Context().Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (b *streamBackend) lastMetadata() metadata.MD { b.mu.Lock(); defer b.mu.Unlock(); return b.md }

// startStreamEdge serves a gateway in front of a streamBackend and returns a connection to it.
func startStreamEdge(t *testing.T) (*streamBackend, *grpc.ClientConn) {
	t.Helper()
	b := &streamBackend{canceled: make(chan struct{})}
	srv := grpc.NewServer()
	ingestv1.RegisterIngestServiceServer(srv, b)
	analyticsv1.RegisterAnalyticsServiceServer(srv, b)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	g, err := New(context.Background(), Config{}, []Backend{
		{Package: "campaignmesh.ingest.v1", Conn: conn, RegisterREST: ingestv1.RegisterIngestServiceHandler},
		{Package: "campaignmesh.analytics.v1", Conn: conn, RegisterREST: analyticsv1.RegisterAnalyticsServiceHandler},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b, edgeConn(t, g)
}

func TestProxyStreamsBothWaysInOrderWithMetadata(t *testing.T) {
	b, conn := startStreamEdge(t)
	ctx := metadata.AppendToOutgoingContext(context.Background(),
		"authorization", "Bearer k", "x-request-id", "client-chosen", "x-forwarded-for", "203.0.113.9", "x-custom", "v")
	s, err := ingestv1.NewIngestServiceClient(conn).StreamEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := s.Send(&ingestv1.StreamEventsRequest{Batch: int64(i), Events: make([]*ingestv1.Event, i%3)}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		resp, err := s.Recv()
		if err != nil || resp.GetBatch() != int64(i) || resp.GetAccepted() != int32(i%3) {
			t.Fatalf("ack %d: %v %v", i, resp, err)
		}
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("end of stream: %v, want EOF", err)
	}
	if hdr, _ := s.Header(); strings.Join(hdr.Get("x-backend"), ",") != "ingest" {
		t.Errorf("backend header did not reach the client: %v", hdr)
	}
	if tr := s.Trailer(); strings.Join(tr.Get("x-batches"), ",") != "done" {
		t.Errorf("backend trailer did not reach the client: %v", tr)
	}
	md := b.lastMetadata()
	for key, want := range map[string]string{"authorization": "Bearer k", "x-custom": "v", "x-forwarded-for": "127.0.0.1"} {
		if got := strings.Join(md.Get(key), ","); got != want {
			t.Errorf("backend saw %s = %q, want %q", key, got, want)
		}
	}
	if id := md.Get("x-request-id"); len(id) != 1 || id[0] != "client-chosen" {
		t.Errorf("backend saw x-request-id %v, want the one request id the gateway kept", id)
	}
}

func TestProxyPassesABackendErrorMidStream(t *testing.T) {
	b, conn := startStreamEdge(t)
	st, _ := apperr.ToStatus(apperr.New(apperr.ResourceExhausted, "RATE_LIMITED", "event rate limit exceeded; retry later"))
	b.failAt, b.failWith = 3, st.Err() // as a service answers it
	s, err := ingestv1.NewIngestServiceClient(conn).StreamEvents(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	acks := 0
	for i := range 5 {
		if err := s.Send(&ingestv1.StreamEventsRequest{Batch: int64(i)}); err != nil {
			break
		}
		if _, err = s.Recv(); err != nil {
			st := status.Convert(err)
			if st.Code() != codes.ResourceExhausted || st.Message() != "event rate limit exceeded; retry later" {
				t.Fatalf("after %d acks: %v, want the backend's own RESOURCE_EXHAUSTED", acks, err)
			}
			break
		}
		acks++
	}
	if acks != 2 {
		t.Fatalf("%d acks before the failure, want 2", acks)
	}
}

func TestProxyCancelReachesTheBackend(t *testing.T) {
	b, conn := startStreamEdge(t)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := analyticsv1.NewAnalyticsServiceClient(conn).WatchCampaignMetrics(ctx, &analyticsv1.WatchCampaignMetricsRequest{CampaignId: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		resp, err := s.Recv()
		if err != nil || resp.GetMetrics().GetEvents() != int64(i) {
			t.Fatalf("update %d: %v %v", i, resp, err)
		}
	}
	cancel()
	select {
	case <-b.canceled:
	case <-time.After(10 * time.Second):
		t.Fatal("the backend's stream was not canceled after the client canceled")
	}
}

func TestProxyRefusesWhatItCannotRoute(t *testing.T) {
	_, conn := startStreamEdge(t)
	for _, method := range []string{
		"/campaignmesh.auth.v1.AuthService/Login",           // no backend for this package here
		"/campaignmesh.nosuch.v1.Service/Method",            // no such package
		"/campaignmesh.auth.v1.AuthService/ListRevocations", // internal: never forwarded
	} {
		err := conn.Invoke(context.Background(), method, &ingestv1.IngestEventsRequest{}, &ingestv1.IngestEventsResponse{})
		if st := status.Convert(err); st.Code() != codes.Unimplemented || strings.Contains(st.Message(), "grpc:") {
			t.Errorf("%s: %v, want UNIMPLEMENTED without transport text", method, err)
		}
	}
}

func TestProxyBackendDownIsUnavailable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there
	dead, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dead.Close() })
	g, err := New(context.Background(), Config{}, []Backend{{Package: "campaignmesh.ingest.v1", Conn: dead, RegisterREST: ingestv1.RegisterIngestServiceHandler}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := ingestv1.NewIngestServiceClient(edgeConn(t, g)).StreamEvents(context.Background())
	if err == nil {
		_ = s.Send(&ingestv1.StreamEventsRequest{})
		_, err = s.Recv()
	}
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || strings.Contains(st.Message(), "connection") || strings.Contains(st.Message(), addr) {
		t.Fatalf("backend down: %v, want UNAVAILABLE with a generic message", err)
	}
}
