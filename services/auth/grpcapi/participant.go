package grpcapi

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
	"github.com/campaignmesh/campaignmesh/services/auth"
)

// ParticipantServer implements dsrv1.ParticipantServiceServer: auth's part of data-subject
// requests (the staff user matched by email; see package auth). Its only caller is dsr, which
// the access rules in the API definition enforce.
type ParticipantServer struct {
	dsrv1.UnimplementedParticipantServiceServer
	svc *auth.Service
}

var _ dsrv1.ParticipantServiceServer = (*ParticipantServer)(nil)

// NewParticipantServer returns the ParticipantService of svc.
func NewParticipantServer(svc *auth.Service) *ParticipantServer { return &ParticipantServer{svc: svc} }

// ResolveSubject implements dsrv1.ParticipantServiceServer: auth links no identifiers.
func (s *ParticipantServer) ResolveSubject(ctx context.Context, req *dsrv1.ResolveSubjectRequest) (*dsrv1.ResolveSubjectResponse, error) {
	if _, err := s.svc.ResolveSubject(ctx, req.GetTenantId(), req.GetDsrRequest(), identifiersFromProto(req.GetIdentifiers())); err != nil {
		return nil, err
	}
	return &dsrv1.ResolveSubjectResponse{}, nil
}

// ExportSubject implements dsrv1.ParticipantServiceServer.
func (s *ParticipantServer) ExportSubject(req *dsrv1.ExportSubjectRequest, stream grpc.ServerStreamingServer[dsrv1.ExportSubjectResponse]) error {
	return s.svc.ExportSubject(stream.Context(), req.GetTenantId(), req.GetDsrRequest(), identifiersFromProto(req.GetIdentifiers()),
		func(r auth.SubjectRecord) error {
			data, err := structpb.NewStruct(r.Data)
			if err != nil {
				return fmt.Errorf("encode %s record: %w", r.Type, err)
			}
			return stream.Send(&dsrv1.ExportSubjectResponse{Type: r.Type, Data: data})
		})
}

// StartErasure implements dsrv1.ParticipantServiceServer. The erasure is audited in the
// tenant's chain with the dsr service as actor (the access rule audits nothing: only a call that
// erases, or starts the erasure, leaves a record, so dsr's retries add none).
func (s *ParticipantServer) StartErasure(ctx context.Context, req *dsrv1.StartErasureRequest) (*dsrv1.ErasureStatus, error) {
	ctx = serviceWork(ctx, dsrv1.ParticipantService_StartErasure_FullMethodName, req.GetTenantId())
	e, err := s.svc.StartErasure(ctx, req.GetTenantId(), req.GetDsrRequest(), identifiersFromProto(req.GetIdentifiers()))
	if err != nil {
		return nil, err
	}
	return erasureToProto(e), nil
}

// GetErasure implements dsrv1.ParticipantServiceServer.
func (s *ParticipantServer) GetErasure(ctx context.Context, req *dsrv1.GetErasureRequest) (*dsrv1.ErasureStatus, error) {
	e, err := s.svc.GetErasure(ctx, req.GetTenantId(), req.GetDsrRequest())
	if err != nil {
		return nil, err
	}
	return erasureToProto(e), nil
}

// serviceName is auth's name in the audit records it makes itself (app.ServiceName).
const serviceName = "auth"

// serviceWork starts audited work for a call of a mesh service in ctx: its record, when the
// domain takes one, names the calling service as actor, in tenantID's chain.
func serviceWork(ctx context.Context, method, tenantID string) context.Context {
	return audit.WithWork(ctx, func() audit.Record {
		peer, _ := mtls.PeerService(ctx)
		r := audit.Record{
			Time: time.Now().UTC(), Method: method, TenantID: tenantID, Actor: "service:" + peer, ActorKind: "service",
			Outcome: codes.OK, RequestID: telemetry.RequestID(ctx), ClientAddress: telemetry.ClientAddress(ctx),
			PeerService: peer, Service: serviceName,
		}
		if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
			r.TraceID = sc.TraceID().String()
		}
		return r
	})
}

func identifiersFromProto(ids []*dsrv1.Identifier) []auth.SubjectIdentifier {
	out := make([]auth.SubjectIdentifier, len(ids))
	for i, id := range ids {
		out[i] = auth.SubjectIdentifier{Kind: subjectKinds[id.GetKind()], Value: id.GetValue()}
	}
	return out
}

// subjectKinds maps the identifier kinds; any other (unspecified, unknown) maps to 0, which
// validation refuses.
var subjectKinds = map[dsrv1.Identifier_Kind]auth.SubjectKind{
	dsrv1.Identifier_KIND_USER_ID:      auth.SubjectUserID,
	dsrv1.Identifier_KIND_ANONYMOUS_ID: auth.SubjectAnonymousID,
	dsrv1.Identifier_KIND_EMAIL:        auth.SubjectEmail,
}

func erasureToProto(e auth.Erasure) *dsrv1.ErasureStatus {
	msg := fmt.Sprintf("%d records remain", e.Remaining)
	if e.Done() {
		msg = fmt.Sprintf("erased %d users, %d sessions, %d API keys, %d invitations; verified",
			e.Counts.Users, e.Counts.Sessions, e.Counts.APIKeys, e.Counts.Invitations)
	}
	return &dsrv1.ErasureStatus{Done: e.Done(), Counts: e.Counts.Map(), Remaining: e.Remaining, Message: msg}
}
