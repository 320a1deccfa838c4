// Package auditpb converts audit records to and from auth's wire message (authv1.AuditRecord),
// the form in which they travel to auth's AppendAuditRecords and wait in outboxes. It lives
// apart from package audit because it depends on the generated auth API, which domain packages
// must not import.
package auditpb

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
)

// Appender delivers records to auth's audit log (authv1.AuthServiceClient is one). Auth skips
// record ids it already holds, so a delivery may be repeated safely.
type Appender interface {
	AppendAuditRecords(ctx context.Context, in *authv1.AppendAuditRecordsRequest, opts ...grpc.CallOption) (*authv1.AppendAuditRecordsResponse, error)
}

// MaxBatch is the most records one AppendAuditRecords call may carry (auth's limit).
const MaxBatch = 500

// ToProto encodes a record.
func ToProto(r audit.Record) *authv1.AuditRecord {
	return &authv1.AuditRecord{
		Id: r.ID, Time: timestamppb.New(r.Time), TenantId: r.TenantID, Actor: r.Actor, ActorKind: r.ActorKind,
		Method: r.Method, Resource: r.Resource, Outcome: audit.CodeName(r.Outcome), RequestId: r.RequestID,
		TraceId: r.TraceID, ClientAddress: r.ClientAddress, Service: r.Service,
	}
}

// FromProto decodes a record.
func FromProto(p *authv1.AuditRecord) audit.Record {
	r := audit.Record{
		ID: p.GetId(), TenantID: p.GetTenantId(), Actor: p.GetActor(), ActorKind: p.GetActorKind(), Method: p.GetMethod(),
		Resource: p.GetResource(), Outcome: audit.CodeFromName(p.GetOutcome()), RequestID: p.GetRequestId(), TraceID: p.GetTraceId(),
		ClientAddress: p.GetClientAddress(), Service: p.GetService(),
	}
	if p.GetTime() != nil {
		r.Time = p.GetTime().AsTime()
	}
	return r
}
