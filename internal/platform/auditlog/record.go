// Package auditlog carries audit records from the service that handled a call to the auth
// service's tamper-evident audit log. Services other than auth record through an Outbox: the
// record is first stored in the service's own database, then delivered in batches to auth's
// AppendAuditRecords over mTLS and deleted once auth has it. Auth skips record ids it already
// holds, so a delivery retried after a crash or an outage stores each record exactly once.
package auditlog

import (
	"strings"
	"unicode"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/access"
)

// CodeName turns a gRPC code into its canonical name: PermissionDenied → PERMISSION_DENIED.
func CodeName(c codes.Code) string {
	var b strings.Builder
	prev := ' '
	for _, r := range c.String() {
		if unicode.IsUpper(r) && unicode.IsLower(prev) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
		prev = r
	}
	return b.String()
}

// CodeFromName is the inverse of CodeName; unknown names give codes.Unknown.
func CodeFromName(name string) codes.Code {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if CodeName(c) == name {
			return c
		}
	}
	return codes.Unknown
}

// ToProto encodes a record.
func ToProto(r access.AuditRecord) *authv1.AuditRecord {
	return &authv1.AuditRecord{
		Id: r.ID, Time: timestamppb.New(r.Time), TenantId: r.TenantID, Actor: r.Actor, ActorKind: r.ActorKind,
		Method: r.Method, Resource: r.Resource, Outcome: CodeName(r.Outcome), RequestId: r.RequestID,
		TraceId: r.TraceID, ClientAddress: r.ClientAddress, Service: r.Service,
	}
}

// FromProto decodes a record.
func FromProto(p *authv1.AuditRecord) access.AuditRecord {
	r := access.AuditRecord{
		ID: p.GetId(), TenantID: p.GetTenantId(), Actor: p.GetActor(), ActorKind: p.GetActorKind(), Method: p.GetMethod(),
		Resource: p.GetResource(), Outcome: CodeFromName(p.GetOutcome()), RequestID: p.GetRequestId(), TraceID: p.GetTraceId(),
		ClientAddress: p.GetClientAddress(), Service: p.GetService(),
	}
	if p.GetTime() != nil {
		r.Time = p.GetTime().AsTime()
	}
	return r
}
