package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/timestamppb"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	auditnats "github.com/campaignmesh/campaignmesh/internal/platform/audit/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
	"github.com/campaignmesh/campaignmesh/services/ingest"
	ingestapi "github.com/campaignmesh/campaignmesh/services/ingest/grpcapi"
	ingestjs "github.com/campaignmesh/campaignmesh/services/ingest/natsjs"
)

// freshTenant receives the freshness batches, apart from the data set.
const freshTenant = "t-fresh"

// freshBatch is the events of one freshness sample.
const freshBatch = 10

type freshStats struct {
	p50, p99, max, ack50 time.Duration
	maxWait              time.Duration
}

// freshness measures ack → visible: a batch for a new campaign through the ingest RPC
// (JetStream stores it before the ack), the writer with its default batching moving it into
// ClickHouse, and GetCampaignSummary polled every 20 ms until it counts the batch.
func (b *bench) freshness(ctx context.Context, e *env) (freshStats, error) {
	cfg := writer.DefaultConfig
	st := freshStats{maxWait: cfg.MaxWait}
	fmt.Printf("\nFreshness (ingest ack → visible in GetCampaignSummary; %d samples of %d events; writer: %d rows or %s)\n",
		b.cfg.samples, freshBatch, cfg.BatchRows, cfg.MaxWait)
	progress("starting ingest on the embedded NATS; the analytics service's writer reads it (%s)", machine())
	ingestSrc, err := mtls.NewSource(e.files("ingest"), nil)
	if err != nil {
		return st, err
	}
	sink, err := auditnats.New(ctx, e.js, "ingest", nil, slog.New(slog.DiscardHandler), auditnats.DefaultConfig)
	if err != nil {
		return st, err
	}
	srv := grpcserver.New(grpcserver.WithService("ingest"), grpcserver.WithLogger(slog.New(slog.DiscardHandler)), grpcserver.WithAuditor(sink), grpcserver.WithTLS(ingestSrc.ServerConfig()),
		grpcserver.WithVerifier(authn.Verifier{Tokens: authn.NewJWTVerifier(authn.StaticKeys{"k": e.pub})}), grpcserver.WithMetrics(prometheus.NewRegistry()))
	ingestv1.RegisterIngestServiceServer(srv.GRPC(), ingestapi.NewServer(ingest.NewService(ingestjs.NewPublisher(e.js, nil), ingest.DefaultLimits, ingest.DefaultRateLimits)))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return st, err
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, lis) }()
	defer func() { stop(); <-served }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(e.gateway.ClientConfig("ingest"))))
	if err != nil {
		return st, err
	}
	defer conn.Close()
	ingestClient := ingestv1.NewIngestServiceClient(conn)
	writeCtx, err := e.as(ctx, freshTenant, rbac.Manager)
	if err != nil {
		return st, err
	}
	readCtx, err := e.as(ctx, freshTenant, rbac.Analyst)
	if err != nil {
		return st, err
	}

	run := time.Now().UnixNano() // campaign ids new on every run, also in a kept database
	// Samples start at random points of the writer's cycle (it inserts every MaxWait when
	// idle): sending right after the previous sample became visible would meet the cycle at
	// the same phase every time.
	jitter := rand.New(rand.NewPCG(b.cfg.seed, 7))
	var visible, acks []time.Duration
	for i := -1; i < b.cfg.samples; i++ { // sample -1 warms up (the writer's first cycle)
		campaign := fmt.Sprintf("fresh-%d-%d", run, i+1)
		req := &ingestv1.IngestEventsRequest{}
		now := timestamppb.Now()
		for j := range freshBatch {
			typ, name := ingestv1.EventType_EVENT_TYPE_IMPRESSION, "view"
			switch j {
			case 7, 8:
				typ, name = ingestv1.EventType_EVENT_TYPE_CLICK, "tap"
			case 9:
				typ, name = ingestv1.EventType_EVENT_TYPE_CONVERSION, "purchase"
			}
			req.Events = append(req.Events, &ingestv1.Event{EventId: fmt.Sprintf("%s-%d", campaign, j), Type: typ, Name: name,
				UserId: fmt.Sprintf("fresh-user-%d", j%4), CampaignId: campaign, Variant: "a", Timestamp: now,
				Value: &ingestv1.Money{AmountMicros: 1000, Currency: "USD"}})
		}
		sent := time.Now()
		resp, err := ingestClient.IngestEvents(writeCtx, req)
		if err != nil {
			return st, fmt.Errorf("ingest: %w", err)
		}
		if resp.GetAccepted() != freshBatch {
			return st, fmt.Errorf("ingest accepted %d of %d events: %v", resp.GetAccepted(), freshBatch, resp.GetRejected())
		}
		acked := time.Now()
		deadline := acked.Add(10 * time.Second)
		for {
			s, err := e.client.GetCampaignSummary(readCtx, &analyticsv1.GetCampaignSummaryRequest{CampaignIds: []string{campaign}})
			if err != nil {
				return st, fmt.Errorf("summary: %w", err)
			}
			if n := s.GetTotal().GetEvents(); n >= freshBatch {
				if i >= 0 {
					visible = append(visible, time.Since(acked))
					acks = append(acks, acked.Sub(sent))
				}
				break
			}
			if time.Now().After(deadline) {
				return st, fmt.Errorf("campaign %s: events not visible 10 s after the ack", campaign)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if (i+1)%10 == 0 && i > 0 {
			progress("freshness: %d of %d samples", i+1, b.cfg.samples)
		}
		time.Sleep(time.Duration(jitter.Int64N(int64(cfg.MaxWait))))
	}
	st.p50, st.p99, st.ack50 = percentile(visible, 0.5), percentile(visible, 0.99), percentile(acks, 0.5)
	st.max = visible[len(visible)-1] // sorted by percentile
	b.add("ingest ack of a 10-event batch: p50", ms(st.ack50), "ms", "")
	b.add("freshness, ack → visible in summary: p50", ms(st.p50), "ms", fmt.Sprintf("(writer MaxWait %s, BatchRows %d; polled every 20 ms)", cfg.MaxWait, cfg.BatchRows))
	b.add("freshness, ack → visible in summary: p99", ms(st.p99), "ms", fmt.Sprintf("(target ≤ 2000 ms: %s)", verdict(st.p99 <= 2*time.Second)))
	b.add("freshness, ack → visible in summary: max", ms(st.max), "ms", fmt.Sprintf("(%d samples)", len(visible)))
	return st, nil
}
