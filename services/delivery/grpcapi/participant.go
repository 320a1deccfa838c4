package grpcapi

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"

	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

// ParticipantServer implements dsrv1.ParticipantServiceServer for delivery (internal: dsr
// only, which the access rules enforce): its contacts and their ledger rows. The tenant is the
// request's: the caller is dsr's mesh identity, not a tenant's credential. Identifiers of a
// kind contacts do not hold (anonymous ids) are ignored.
type ParticipantServer struct {
	dsrv1.UnimplementedParticipantServiceServer
	subjects *delivery.Subjects
}

var _ dsrv1.ParticipantServiceServer = (*ParticipantServer)(nil)

// NewParticipantServer returns the ParticipantService of subjects.
func NewParticipantServer(subjects *delivery.Subjects) *ParticipantServer {
	return &ParticipantServer{subjects: subjects}
}

// ResolveSubject implements dsrv1.ParticipantServiceServer: a contact found by one of the
// identifiers links its other ones (its user id, its email).
func (s *ParticipantServer) ResolveSubject(ctx context.Context, req *dsrv1.ResolveSubjectRequest) (*dsrv1.ResolveSubjectResponse, error) {
	linked, err := s.subjects.Resolve(ctx, req.GetTenantId(), req.GetDsrRequest(), subjectIdentifiers(req.GetIdentifiers()))
	if err != nil {
		return nil, err
	}
	resp := &dsrv1.ResolveSubjectResponse{}
	for _, id := range linked {
		if k, ok := kindToDSR[id.Kind]; ok { // dsr has no kind for a phone number
			resp.Linked = append(resp.Linked, &dsrv1.Identifier{Kind: k, Value: id.Value})
		}
	}
	return resp, nil
}

// ExportSubject implements dsrv1.ParticipantServiceServer: a "contact" record per contact,
// then a "delivery" record per ledger row of them (the opaque ledger id, campaign, variant,
// state and the address it was sent to; no provider credential is ever in the ledger).
func (s *ParticipantServer) ExportSubject(req *dsrv1.ExportSubjectRequest, stream grpc.ServerStreamingServer[dsrv1.ExportSubjectResponse]) error {
	send := func(typ string, m map[string]any) error {
		data, err := structpb.NewStruct(m)
		if err != nil {
			return fmt.Errorf("encode %s record: %w", typ, err)
		}
		return stream.Send(&dsrv1.ExportSubjectResponse{Type: typ, Data: data})
	}
	return s.subjects.Export(stream.Context(), req.GetTenantId(), req.GetDsrRequest(), subjectIdentifiers(req.GetIdentifiers()),
		func(c delivery.Contact) error { return send("contact", contactRecord(c)) },
		func(d delivery.SubjectDelivery) error { return send("delivery", deliveryRecord(d)) })
}

// StartErasure implements dsrv1.ParticipantServiceServer. The erasure runs within the call;
// a ledger row in flight keeps its address until it settles (remaining > 0, done false), and
// GetErasure finishes it.
func (s *ParticipantServer) StartErasure(ctx context.Context, req *dsrv1.StartErasureRequest) (*dsrv1.ErasureStatus, error) {
	e, err := s.subjects.StartErasure(ctx, req.GetTenantId(), req.GetDsrRequest(), subjectIdentifiers(req.GetIdentifiers()))
	if err != nil {
		return nil, err
	}
	return subjectErasureToProto(e), nil
}

// GetErasure implements dsrv1.ParticipantServiceServer.
func (s *ParticipantServer) GetErasure(ctx context.Context, req *dsrv1.GetErasureRequest) (*dsrv1.ErasureStatus, error) {
	e, err := s.subjects.GetErasure(ctx, req.GetTenantId(), req.GetDsrRequest())
	if err != nil {
		return nil, err
	}
	return subjectErasureToProto(e), nil
}

var kindToDSR = map[delivery.IdentifierKind]dsrv1.Identifier_Kind{
	delivery.IdentifierUserID: dsrv1.Identifier_KIND_USER_ID,
	delivery.IdentifierEmail:  dsrv1.Identifier_KIND_EMAIL,
}

// subjectIdentifiers keeps the identifiers contacts hold (user ids, emails).
func subjectIdentifiers(ids []*dsrv1.Identifier) []delivery.Identifier {
	var out []delivery.Identifier
	for _, id := range ids {
		switch id.GetKind() {
		case dsrv1.Identifier_KIND_USER_ID:
			out = append(out, delivery.Identifier{Kind: delivery.IdentifierUserID, Value: id.GetValue()})
		case dsrv1.Identifier_KIND_EMAIL:
			out = append(out, delivery.Identifier{Kind: delivery.IdentifierEmail, Value: id.GetValue()})
		}
	}
	return out
}

func contactRecord(c delivery.Contact) map[string]any {
	attrs := make(map[string]any, len(c.Attributes))
	for k, v := range c.Attributes {
		attrs[k] = v
	}
	consent := func(c delivery.Consent) map[string]any {
		m := map[string]any{"state": string(c.State), "source": c.Source}
		if !c.Time.IsZero() {
			m["time"] = c.Time.Format(time.RFC3339Nano)
		}
		return m
	}
	return map[string]any{
		"id": c.ID, "user_id": c.UserID, "email": c.Email, "phone": c.Phone, "attributes": attrs,
		"time_zone": c.TimeZone, "locale": c.Locale,
		"consent":    map[string]any{"email": consent(c.Consent.Email), "sms": consent(c.Consent.SMS)},
		"suppressed": c.Suppressed, "suppression_reason": c.SuppressionReason,
		"create_time": c.CreateTime.Format(time.RFC3339Nano), "update_time": c.UpdateTime.Format(time.RFC3339Nano),
	}
}

func deliveryRecord(d delivery.SubjectDelivery) map[string]any {
	return map[string]any{
		"id": fmt.Sprint(d.ID), "campaign_id": d.CampaignID, "contact_id": d.ContactID, "address": d.Address,
		"variant": d.Variant, "state": string(d.State), "attempts": float64(d.Attempt), "provider_message_id": d.ProviderID,
		"reason": d.Reason, "create_time": d.CreateTime.Format(time.RFC3339Nano), "update_time": d.UpdateTime.Format(time.RFC3339Nano),
	}
}

func subjectErasureToProto(e delivery.SubjectErasure) *dsrv1.ErasureStatus {
	msg := fmt.Sprintf("%d records remain (deliveries in flight keep their address until they settle)", e.Remaining)
	if e.Done() {
		msg = fmt.Sprintf("erased %d contacts, blanked %d deliveries; verified", e.Contacts, e.Deliveries)
	}
	return &dsrv1.ErasureStatus{Done: e.Done(), Remaining: e.Remaining, Message: msg,
		Counts: map[string]int64{"contacts": e.Contacts, "deliveries": e.Deliveries}}
}
