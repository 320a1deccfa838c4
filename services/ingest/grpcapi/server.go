// Package grpcapi serves event intake over gRPC (and REST through the gateway): it decodes a
// request, hands it to the ingest domain and encodes the answer. A call returns only after the
// domain has had the accepted events stored.
package grpcapi

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/services/ingest"
)

// HotMethods are the RPCs on the events' hot path: the server logs their successful calls at
// debug (grpcserver.WithQuietCalls); failures and denials keep their level.
var HotMethods = []string{ingestv1.IngestService_IngestEvents_FullMethodName, ingestv1.IngestService_StreamEvents_FullMethodName,
	ingestv1.IngestService_IngestTenantEvents_FullMethodName}

// Server implements ingestv1.IngestServiceServer.
type Server struct {
	ingestv1.UnimplementedIngestServiceServer
	svc   *ingest.Service
	tails ingest.TailSource
}

var _ ingestv1.IngestServiceServer = (*Server)(nil)

// NewServer returns the ingest server over the domain's svc.
func NewServer(svc *ingest.Service) *Server {
	return &Server{svc: svc}
}

// WithTails serves TailEvents from t (the registry the domain offers its outcomes to); without
// it TailEvents answers Unimplemented.
func (s *Server) WithTails(t ingest.TailSource) *Server {
	s.tails = t
	return s
}

// IngestEvents implements ingestv1.IngestServiceServer.
func (s *Server) IngestEvents(ctx context.Context, req *ingestv1.IngestEventsRequest) (*ingestv1.IngestEventsResponse, error) {
	resp, err := s.ingest(ctx, req.GetEvents(), proto.Size(req))
	if err != nil {
		return nil, err
	}
	resp.Batch = req.GetBatch()
	return resp, nil
}

// StreamEvents implements ingestv1.IngestServiceServer: each batch is acknowledged in order once
// stored; a batch that fails ends the stream with its error (earlier acks stand).
func (s *Server) StreamEvents(stream ingestv1.IngestService_StreamEventsServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp, err := s.ingest(stream.Context(), req.GetEvents(), proto.Size(req))
		if err != nil {
			return err
		}
		resp.Batch = req.GetBatch()
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// IngestTenantEvents implements ingestv1.IngestServiceServer for mesh services reporting a
// tenant's events (the access rule admits only them): the tenant is the request's, the source
// the caller's verified mesh identity; the rest is IngestEvents' path, except that the
// tenant's quotas count these events but never refuse them (ingest.Service.IngestOnBehalf).
func (s *Server) IngestTenantEvents(ctx context.Context, req *ingestv1.IngestTenantEventsRequest) (*ingestv1.IngestEventsResponse, error) {
	caller, err := mtls.PeerService(ctx)
	if err != nil {
		return nil, apperr.New(apperr.PermissionDenied, "MESH_CALLER_REQUIRED", "only mesh services may report a tenant's events")
	}
	if t := req.GetTenantId(); t == "" || len(t) > maxTenantIDLen {
		var v apperr.Violations
		v.Add("tenant_id", "is required (at most %d characters)", maxTenantIDLen)
		return nil, v.Err()
	}
	res, err := s.svc.IngestOnBehalf(ctx, req.GetTenantId(), "service:"+caller, req.GetEvents(), proto.Size(req))
	if err != nil {
		return nil, err
	}
	resp := response(res)
	resp.Batch = req.GetBatch()
	return resp, nil
}

// maxTenantIDLen bounds the tenant a mesh service names.
const maxTenantIDLen = 128

// ingest takes the caller's tenant and source (API key or user) from the credential, never
// from the request.
func (s *Server) ingest(ctx context.Context, events []*ingestv1.Event, size int) (*ingestv1.IngestEventsResponse, error) {
	p := authn.FromContext(ctx)
	if authn.WriteKeyRoute(ctx) && !p.IsWriteKey() {
		return nil, apperr.New(apperr.PermissionDenied, "NOT_A_WRITE_KEY",
			"a write key must be an API key scoped to events.write only (a browser or app ships it to everyone): create one with that single scope")
	}
	return s.ingestAs(ctx, p.TenantID, p.Subject, events, size)
}

// ingestAs validates, deduplicates and stores events of tenant from source, and answers once
// they are stored.
func (s *Server) ingestAs(ctx context.Context, tenant, source string, events []*ingestv1.Event, size int) (*ingestv1.IngestEventsResponse, error) {
	res, err := s.svc.Ingest(ctx, tenant, source, events, size)
	if err != nil {
		return nil, err
	}
	return response(res), nil
}

// response is the answer to a request the domain took.
func response(res ingest.Result) *ingestv1.IngestEventsResponse {
	resp := &ingestv1.IngestEventsResponse{Accepted: int32(len(res.Accepted)), Suppressed: int32(res.Suppressed), Rejected: res.Rejected, Warnings: res.Warnings}
	for _, q := range res.QuotaWarnings {
		resp.QuotaWarnings = append(resp.QuotaWarnings, &ingestv1.QuotaWarning{Quota: q.Meter, Used: q.Used, Limit: q.Limit, Period: q.Period,
			ResetsAt: timestamppb.New(q.ResetsAt)})
	}
	return resp
}

// TailEvents implements ingestv1.IngestServiceServer: the caller's tenant's outcomes, from the
// credential (never the request), its recent ones first (ingest.Service.Recent), until the caller goes away or the maximum duration ends the
// stream (OK: reconnect).
func (s *Server) TailEvents(_ *ingestv1.TailEventsRequest, stream ingestv1.IngestService_TailEventsServer) error {
	if s.tails == nil {
		return s.UnimplementedIngestServiceServer.TailEvents(nil, stream)
	}
	tenant := authn.FromContext(stream.Context()).TenantID
	tl, err := s.tails.Open(tenant)
	if err != nil {
		return err
	}
	defer s.tails.Close(tl)
	// The headers go out now, so a REST caller sees the stream open before the first outcome.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	// The tenant's recent outcomes first, then the live ones (the tail already buffers them).
	for _, o := range s.svc.Recent(stream.Context(), s.tails, tl) {
		if err := stream.Send(o); err != nil {
			return err
		}
	}
	end := time.NewTimer(s.tails.Limits().MaxDuration)
	defer end.Stop()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-end.C:
			return nil
		case o := <-tl.Outcomes():
			if tl.Repeats(o) {
				continue
			}
			if err := stream.Send(o); err != nil {
				return err
			}
		}
	}
}
