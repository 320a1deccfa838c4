// Package ingestclient implements the delivery domain's EventSink with ingest's internal
// IngestTenantEvents RPC, over the mesh's mTLS: delivery's clicks, opens and provider events go
// through the same validation, dedup and durable acknowledgement as any tenant's events.
package ingestclient

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

// Limits of one call: ingest's batch limit, a call's deadline, and the attempts of a call that
// ingest answered "not now" (the same events each time, so ingest's dedup keeps one).
const (
	MaxBatch    = 1000
	callTimeout = 10 * time.Second
	attempts    = 3
	firstWait   = 200 * time.Millisecond
)

// Client is a delivery.EventSink backed by the ingest service.
type Client struct {
	client ingestv1.IngestServiceClient
}

var _ delivery.EventSink = (*Client)(nil)

// New returns an event sink calling ingest over conn.
func New(conn grpc.ClientConnInterface) *Client {
	return &Client{client: ingestv1.NewIngestServiceClient(conn)}
}

// Dial connects to the ingest service at addr with the delivery service's certificate,
// accepting only a server whose SPIFFE id names ingest.
func Dial(addr string, certs *mtls.Source) (*Client, *grpc.ClientConn, error) {
	conn, err := grpcclient.Dial(addr, "ingest", certs)
	if err != nil {
		return nil, nil, err
	}
	return New(conn), conn, nil
}

var typeOf = map[delivery.EventType]ingestv1.EventType{
	delivery.EventTrack:      ingestv1.EventType_EVENT_TYPE_TRACK,
	delivery.EventImpression: ingestv1.EventType_EVENT_TYPE_IMPRESSION,
	delivery.EventClick:      ingestv1.EventType_EVENT_TYPE_CLICK,
}

// toProto encodes one event as ingest takes it.
func toProto(e delivery.Event) (*ingestv1.Event, error) {
	t, ok := typeOf[e.Type]
	if !ok {
		return nil, fmt.Errorf("event %s: unknown type %q", e.ID, e.Type)
	}
	p := &ingestv1.Event{EventId: e.ID, Type: t, Name: e.Name, UserId: e.UserID, CampaignId: e.CampaignID, Variant: e.Variant}
	if !e.Time.IsZero() {
		p.Timestamp = timestamppb.New(e.Time)
	}
	if e.Value != (delivery.Money{}) {
		p.Value = &ingestv1.Money{AmountMicros: e.Value.Micros, Currency: e.Value.Currency}
	}
	if len(e.Properties) > 0 {
		m := make(map[string]any, len(e.Properties))
		for k, v := range e.Properties {
			m[k] = v
		}
		s, err := structpb.NewStruct(m)
		if err != nil {
			return nil, fmt.Errorf("event %s properties: %w", e.ID, err)
		}
		p.Properties = s
	}
	if e.IP != "" || e.UserAgent != "" {
		p.Context = &ingestv1.EventContext{Ip: e.IP, UserAgent: e.UserAgent}
	}
	return p, nil
}

// Publish implements delivery.EventSink: batches of at most MaxBatch, each retried a few times
// while ingest answers UNAVAILABLE or RESOURCE_EXHAUSTED. An event ingest rejects is an
// invalid-argument error (a bug of ours: retrying cannot help); events of a suppressed data
// subject are dropped by ingest and count as published.
func (c *Client) Publish(ctx context.Context, tenantID string, evs []delivery.Event) error {
	for lo := 0; lo < len(evs); lo += MaxBatch {
		batch := evs[lo:min(lo+MaxBatch, len(evs))]
		req := &ingestv1.IngestTenantEventsRequest{TenantId: tenantID, Events: make([]*ingestv1.Event, 0, len(batch))}
		for _, e := range batch {
			p, err := toProto(e)
			if err != nil {
				return err
			}
			req.Events = append(req.Events, p)
		}
		resp, err := c.call(ctx, req)
		if err != nil {
			return err
		}
		if rej := resp.GetRejected(); len(rej) > 0 {
			return apperr.New(apperr.Invalid, "EVENT_REJECTED", "ingest rejected %d of %d events, first %s: %s %s",
				len(rej), len(batch), rej[0].GetEventId(), rej[0].GetField(), rej[0].GetReason())
		}
	}
	return nil
}

func (c *Client) call(ctx context.Context, req *ingestv1.IngestTenantEventsRequest) (*ingestv1.IngestEventsResponse, error) {
	wait := firstWait
	for attempt := 1; ; attempt++ {
		callCtx, cancel := context.WithTimeout(ctx, callTimeout)
		resp, err := c.client.IngestTenantEvents(callCtx, req)
		cancel()
		if err == nil {
			return resp, nil
		}
		code := status.Code(err)
		if attempt == attempts || (code != codes.Unavailable && code != codes.ResourceExhausted) {
			return nil, fmt.Errorf("publish %d events to ingest: %w", len(req.GetEvents()), err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("publish %d events to ingest: %w", len(req.GetEvents()), ctx.Err())
		case <-time.After(wait):
		}
		wait *= 2
	}
}
