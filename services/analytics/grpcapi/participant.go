package grpcapi

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"

	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
	"github.com/campaignmesh/campaignmesh/services/analytics"
)

// ParticipantServer implements dsrv1.ParticipantServiceServer for analytics (internal: dsr
// only). The tenant is the request's: the caller is dsr's mesh identity, not a tenant's
// credential.
type ParticipantServer struct {
	dsrv1.UnimplementedParticipantServiceServer
	p *analytics.Participant
}

var _ dsrv1.ParticipantServiceServer = (*ParticipantServer)(nil)

// NewParticipantServer returns the server over p.
func NewParticipantServer(p *analytics.Participant) *ParticipantServer {
	return &ParticipantServer{p: p}
}

// ResolveSubject implements dsrv1.ParticipantServiceServer.
func (s *ParticipantServer) ResolveSubject(ctx context.Context, req *dsrv1.ResolveSubjectRequest) (*dsrv1.ResolveSubjectResponse, error) {
	linked, err := s.p.Resolve(ctx, req.GetTenantId(), req.GetDsrRequest(), identifiersFromProto(req.GetIdentifiers()))
	if err != nil {
		return nil, err
	}
	resp := &dsrv1.ResolveSubjectResponse{}
	for _, id := range linked {
		resp.Linked = append(resp.Linked, &dsrv1.Identifier{Kind: kindToProto[id.Kind], Value: id.Value})
	}
	return resp, nil
}

// ExportSubject implements dsrv1.ParticipantServiceServer: one "event" record per stored event,
// sent as it is read.
func (s *ParticipantServer) ExportSubject(req *dsrv1.ExportSubjectRequest, stream grpc.ServerStreamingServer[dsrv1.ExportSubjectResponse]) error {
	ctx := stream.Context()
	return s.p.Export(ctx, req.GetTenantId(), req.GetDsrRequest(), identifiersFromProto(req.GetIdentifiers()), func(e analytics.SubjectEvent) error {
		data, err := eventStruct(e)
		if err != nil {
			return err
		}
		return stream.Send(&dsrv1.ExportSubjectResponse{Type: "event", Data: data})
	})
}

// StartErasure implements dsrv1.ParticipantServiceServer.
func (s *ParticipantServer) StartErasure(ctx context.Context, req *dsrv1.StartErasureRequest) (*dsrv1.ErasureStatus, error) {
	st, err := s.p.StartErasure(ctx, req.GetTenantId(), req.GetDsrRequest(), identifiersFromProto(req.GetIdentifiers()))
	if err != nil {
		return nil, err
	}
	return erasureStatusToProto(st), nil
}

// GetErasure implements dsrv1.ParticipantServiceServer.
func (s *ParticipantServer) GetErasure(ctx context.Context, req *dsrv1.GetErasureRequest) (*dsrv1.ErasureStatus, error) {
	st, err := s.p.GetErasure(ctx, req.GetTenantId(), req.GetDsrRequest())
	if err != nil {
		return nil, err
	}
	return erasureStatusToProto(st), nil
}

var kindFromProto = map[dsrv1.Identifier_Kind]analytics.IdentifierKind{
	dsrv1.Identifier_KIND_USER_ID: analytics.KindUserID, dsrv1.Identifier_KIND_ANONYMOUS_ID: analytics.KindAnonymousID,
	dsrv1.Identifier_KIND_EMAIL: analytics.KindEmail,
}

var kindToProto = map[analytics.IdentifierKind]dsrv1.Identifier_Kind{
	analytics.KindUserID: dsrv1.Identifier_KIND_USER_ID, analytics.KindAnonymousID: dsrv1.Identifier_KIND_ANONYMOUS_ID,
	analytics.KindEmail: dsrv1.Identifier_KIND_EMAIL,
}

// identifiersFromProto decodes identifiers; an unknown kind becomes the zero kind, which the
// domain refuses.
func identifiersFromProto(ids []*dsrv1.Identifier) []analytics.Identifier {
	out := make([]analytics.Identifier, len(ids))
	for i, id := range ids {
		out[i] = analytics.Identifier{Kind: kindFromProto[id.GetKind()], Value: id.GetValue()}
	}
	return out
}

func erasureStatusToProto(st analytics.ErasureStatus) *dsrv1.ErasureStatus {
	return &dsrv1.ErasureStatus{Done: st.Done, Counts: st.Counts, Remaining: st.Remaining, Message: st.Message}
}

// eventStruct is an exported event: its columns, times in RFC 3339 (UTC), properties as an
// object of their stored (string) values, the context fields as an object.
func eventStruct(e analytics.SubjectEvent) (*structpb.Struct, error) {
	props := make(map[string]any, len(e.PropKeys))
	for i, k := range e.PropKeys {
		if i < len(e.PropValues) {
			props[k] = e.PropValues[i]
		}
	}
	m := map[string]any{
		"event_id": e.EventID, "type": e.Type, "name": e.Name, "user_id": e.UserID, "anonymous_id": e.AnonymousID,
		"campaign_id": e.CampaignID, "variant": e.Variant, "value_micros": float64(e.ValueMicros), "currency": e.Currency,
		"time": e.Time.Format(time.RFC3339Nano), "received_at": e.ReceivedTime.Format(time.RFC3339Nano),
		"properties": props, "source": e.Source,
		"context": map[string]any{"ip": e.IP, "user_agent": e.UserAgent, "locale": e.Locale, "app": e.App, "device": e.Device},
	}
	if !e.ClientTime.IsZero() {
		m["timestamp"] = e.ClientTime.Format(time.RFC3339Nano)
	}
	return structpb.NewStruct(m)
}
