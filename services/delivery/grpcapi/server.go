// Package grpcapi serves the delivery domain over gRPC (and, through the gateway, REST).
// Handlers are thin: decode, call the domain, encode.
package grpcapi

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/idempotency"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

// ServiceName is the delivery service's mesh identity and its name in audit records.
const ServiceName = "delivery"

// ServerOptions are the platform options of the delivery server, shared by main and the
// tests so both run the same chain: credentials checked by verifier, every audited call
// recorded through auditor (the service's audit outbox), idempotency keys kept in pool.
func ServerOptions(ctx context.Context, pool *pgxpool.Pool, verifier grpcserver.Verifier, auditor audit.Sink, logger *slog.Logger) ([]grpcserver.Option, error) {
	idem, err := idempotency.New(ctx, pool)
	if err != nil {
		return nil, err
	}
	return []grpcserver.Option{
		grpcserver.WithService(ServiceName),
		grpcserver.WithLogger(logger),
		grpcserver.WithVerifier(verifier),
		grpcserver.WithAuditor(auditor),
		grpcserver.WithErrorClassifier(pgdb.Classify), // database down: UNAVAILABLE with retry info
		grpcserver.WithInnermost(idem.UnaryInterceptor()),
	}, nil
}

// Server implements deliveryv1.DeliveryServiceServer.
type Server struct {
	deliveryv1.UnimplementedDeliveryServiceServer
	aud *delivery.Audiences
}

var _ deliveryv1.DeliveryServiceServer = (*Server)(nil)

// NewServer returns the gRPC server of the audiences use cases.
func NewServer(aud *delivery.Audiences) *Server { return &Server{aud: aud} }

// tenant is the caller's tenant: always the credential's, never a request field.
func tenant(ctx context.Context) string {
	if p := authn.FromContext(ctx); p != nil {
		return p.TenantID
	}
	return ""
}

// CreateContact implements deliveryv1.DeliveryServiceServer.
func (s *Server) CreateContact(ctx context.Context, req *deliveryv1.CreateContactRequest) (*deliveryv1.Contact, error) {
	c, err := s.aud.CreateContact(ctx, tenant(ctx), contactFromProto(req.GetContact()))
	return contactToProto(c), err
}

// GetContact implements deliveryv1.DeliveryServiceServer.
func (s *Server) GetContact(ctx context.Context, req *deliveryv1.GetContactRequest) (*deliveryv1.Contact, error) {
	c, err := s.aud.GetContact(ctx, tenant(ctx), req.GetId())
	return contactToProto(c), err
}

// ListContacts implements deliveryv1.DeliveryServiceServer.
func (s *Server) ListContacts(ctx context.Context, req *deliveryv1.ListContactsRequest) (*deliveryv1.ListContactsResponse, error) {
	cs, next, err := s.aud.ListContacts(ctx, tenant(ctx), req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	resp := &deliveryv1.ListContactsResponse{NextPageToken: next}
	for _, c := range cs {
		resp.Contacts = append(resp.Contacts, contactToProto(c))
	}
	return resp, nil
}

// UpdateContact implements deliveryv1.DeliveryServiceServer.
func (s *Server) UpdateContact(ctx context.Context, req *deliveryv1.UpdateContactRequest) (*deliveryv1.Contact, error) {
	rev, err := delivery.ParseContactEtag(req.GetContact().GetEtag())
	if err != nil {
		return nil, err
	}
	in := contactFromProto(req.GetContact())
	in.ID = req.GetContact().GetId()
	mask, err := delivery.ParseContactMask(req.GetUpdateMask().GetPaths())
	if err != nil {
		return nil, err
	}
	c, err := s.aud.UpdateContact(ctx, tenant(ctx), in, mask, rev)
	return contactToProto(c), err
}

// DeleteContact implements deliveryv1.DeliveryServiceServer.
func (s *Server) DeleteContact(ctx context.Context, req *deliveryv1.DeleteContactRequest) (*emptypb.Empty, error) {
	if err := s.aud.DeleteContact(ctx, tenant(ctx), req.GetId()); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// SetContactConsent implements deliveryv1.DeliveryServiceServer.
func (s *Server) SetContactConsent(ctx context.Context, req *deliveryv1.SetContactConsentRequest) (*deliveryv1.Contact, error) {
	c, err := s.aud.SetConsent(ctx, tenant(ctx), req.GetId(), channelFromProto(req.GetChannel()),
		consentStateFromProto(req.GetState()), req.GetSource())
	return contactToProto(c), err
}

// CreateSegment implements deliveryv1.DeliveryServiceServer.
func (s *Server) CreateSegment(ctx context.Context, req *deliveryv1.CreateSegmentRequest) (*deliveryv1.Segment, error) {
	sg, err := s.aud.CreateSegment(ctx, tenant(ctx), segmentFromProto(req.GetSegment()))
	return segmentToProto(sg), err
}

// GetSegment implements deliveryv1.DeliveryServiceServer.
func (s *Server) GetSegment(ctx context.Context, req *deliveryv1.GetSegmentRequest) (*deliveryv1.Segment, error) {
	sg, err := s.aud.GetSegment(ctx, tenant(ctx), req.GetId())
	return segmentToProto(sg), err
}

// ListSegments implements deliveryv1.DeliveryServiceServer.
func (s *Server) ListSegments(ctx context.Context, req *deliveryv1.ListSegmentsRequest) (*deliveryv1.ListSegmentsResponse, error) {
	ss, next, err := s.aud.ListSegmentsPage(ctx, tenant(ctx), req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	resp := &deliveryv1.ListSegmentsResponse{NextPageToken: next}
	for _, sg := range ss {
		resp.Segments = append(resp.Segments, segmentToProto(sg))
	}
	return resp, nil
}

// UpdateSegment implements deliveryv1.DeliveryServiceServer.
func (s *Server) UpdateSegment(ctx context.Context, req *deliveryv1.UpdateSegmentRequest) (*deliveryv1.Segment, error) {
	in := segmentFromProto(req.GetSegment())
	in.ID = req.GetSegment().GetId()
	mask, err := delivery.ParseSegmentMask(req.GetUpdateMask().GetPaths())
	if err != nil {
		return nil, err
	}
	sg, err := s.aud.UpdateSegmentFields(ctx, tenant(ctx), in, mask)
	return segmentToProto(sg), err
}

// DeleteSegment implements deliveryv1.DeliveryServiceServer.
func (s *Server) DeleteSegment(ctx context.Context, req *deliveryv1.DeleteSegmentRequest) (*emptypb.Empty, error) {
	if err := s.aud.DeleteSegment(ctx, tenant(ctx), req.GetId()); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// contactFromProto takes the fields a user sets.
func contactFromProto(p *deliveryv1.Contact) delivery.Contact {
	return delivery.Contact{
		UserID: p.GetUserId(), Email: p.GetEmail(), Phone: p.GetPhone(), Attributes: p.GetAttributes(),
		TimeZone: p.GetTimeZone(), Locale: p.GetLocale(),
		Consent: delivery.Consents{Email: consentFromProto(p.GetEmailConsent()), SMS: consentFromProto(p.GetSmsConsent())},
	}
}

func contactToProto(c delivery.Contact) *deliveryv1.Contact {
	if c.ID == "" {
		return nil
	}
	return &deliveryv1.Contact{
		Id: c.ID, UserId: c.UserID, Email: c.Email, Phone: c.Phone, Attributes: c.Attributes,
		TimeZone: c.TimeZone, Locale: c.Locale,
		EmailConsent: consentToProto(c.Consent.Email), SmsConsent: consentToProto(c.Consent.SMS),
		Suppressed: c.Suppressed, SuppressionReason: c.SuppressionReason,
		CreateTime: timestamppb.New(c.CreateTime), UpdateTime: timestamppb.New(c.UpdateTime), Etag: delivery.ContactEtag(c),
	}
}

// consentFromProto maps an unset consent to the zero Consent (unknown, no source).
func consentFromProto(p *deliveryv1.Consent) delivery.Consent {
	if p == nil {
		return delivery.Consent{}
	}
	c := delivery.Consent{State: consentStateFromProto(p.GetState()), Source: p.GetSource()}
	if p.GetTime() != nil {
		c.Time = p.GetTime().AsTime()
	}
	return c
}

func consentToProto(c delivery.Consent) *deliveryv1.Consent {
	p := &deliveryv1.Consent{
		State:  deliveryv1.Consent_State(deliveryv1.Consent_State_value["STATE_"+strings.ToUpper(string(c.State))]),
		Source: c.Source,
	}
	if c.State == "" {
		p.State = deliveryv1.Consent_STATE_UNKNOWN
	}
	if !c.Time.IsZero() {
		p.Time = timestamppb.New(c.Time)
	}
	return p
}

func segmentFromProto(p *deliveryv1.Segment) delivery.Segment {
	s := delivery.Segment{Name: p.GetName()}
	f := p.GetFilter()
	for _, a := range f.GetAttributes() {
		s.Filter.Attributes = append(s.Filter.Attributes, delivery.AttributeCondition{
			Key: a.GetKey(), Op: delivery.AttributeOp(enumSuffix(a.GetOp().String(), "OPERATOR_")), Values: a.GetValues(),
		})
	}
	for _, ch := range f.GetConsentGranted() {
		s.Filter.ConsentGranted = append(s.Filter.ConsentGranted, channelFromProto(ch))
	}
	if b := f.GetBehaviour(); b != nil {
		s.Filter.Behaviour = &delivery.BehaviourCondition{EventType: b.GetEventType(), CampaignID: b.GetCampaignId(), WithinDays: int(b.GetWithinDays())}
	}
	return s
}

func segmentToProto(s delivery.Segment) *deliveryv1.Segment {
	if s.ID == "" {
		return nil
	}
	p := &deliveryv1.Segment{Id: s.ID, Name: s.Name, Filter: &deliveryv1.SegmentFilter{},
		CreateTime: protoTime(s.CreateTime), UpdateTime: protoTime(s.UpdateTime)}
	for _, a := range s.Filter.Attributes {
		p.Filter.Attributes = append(p.Filter.Attributes, &deliveryv1.AttributeCondition{Key: a.Key, Values: a.Values,
			Op: deliveryv1.AttributeCondition_Operator(deliveryv1.AttributeCondition_Operator_value["OPERATOR_"+strings.ToUpper(string(a.Op))])})
	}
	for _, ch := range s.Filter.ConsentGranted {
		p.Filter.ConsentGranted = append(p.Filter.ConsentGranted, channelToProto(ch))
	}
	if b := s.Filter.Behaviour; b != nil {
		p.Filter.Behaviour = &deliveryv1.BehaviourCondition{EventType: b.EventType, CampaignId: b.CampaignID, WithinDays: int32(b.WithinDays)}
	}
	return p
}

// Enum values map to domain names by their suffix: CHANNEL_SMS ↔ "sms". Unspecified and
// unknown values map to names the domain rejects (or, for a consent state, to unknown).

func channelToProto(c delivery.Channel) deliveryv1.Channel {
	return deliveryv1.Channel(deliveryv1.Channel_value["CHANNEL_"+strings.ToUpper(string(c))])
}

func channelFromProto(c deliveryv1.Channel) delivery.Channel {
	return delivery.Channel(enumSuffix(c.String(), "CHANNEL_"))
}

// consentStateFromProto maps STATE_UNSPECIFIED to unknown, as the proto documents.
func consentStateFromProto(s deliveryv1.Consent_State) delivery.ConsentState {
	if s == deliveryv1.Consent_STATE_UNSPECIFIED {
		return delivery.ConsentUnknown
	}
	return delivery.ConsentState(enumSuffix(s.String(), "STATE_"))
}

func enumSuffix(name, prefix string) string {
	switch {
	case name == prefix+"UNSPECIFIED":
		return ""
	case !strings.HasPrefix(name, prefix):
		return "invalid:" + name // an unknown number
	}
	return strings.ToLower(strings.TrimPrefix(name, prefix))
}

func protoTime(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
