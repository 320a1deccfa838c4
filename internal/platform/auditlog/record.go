// Package auditlog carries audit records from the service that handled a call to the auth
// service's tamper-evident audit log. Services other than auth record through an Outbox: the
// record is first stored in the service's own database, then delivered in batches to auth's
// AppendAuditRecords over mTLS and deleted once auth has it. Auth skips record ids it already
// holds, so a delivery retried after a crash or an outage stores each record exactly once.
package auditlog

import (
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
)

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
