package grpcapi

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/emptypb"

	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/twilio"
)

// MessagesServer implements deliveryv1.MessagesServiceServer.
type MessagesServer struct {
	deliveryv1.UnimplementedMessagesServiceServer
	m *delivery.Messages
}

var _ deliveryv1.MessagesServiceServer = (*MessagesServer)(nil)

// NewMessagesServer returns the gRPC server of the content, sender identity and test send use
// cases.
func NewMessagesServer(m *delivery.Messages) *MessagesServer { return &MessagesServer{m: m} }

// SetCampaignContent implements deliveryv1.MessagesServiceServer.
func (s *MessagesServer) SetCampaignContent(ctx context.Context, req *deliveryv1.SetCampaignContentRequest) (*deliveryv1.CampaignContent, error) {
	rev, err := delivery.ParseContentEtag(req.GetContent().GetEtag())
	if err != nil {
		return nil, err
	}
	c, err := contentFromProto(req.GetCampaignId(), req.GetContent())
	if err != nil {
		return nil, err
	}
	out, err := s.m.SetCampaignContent(ctx, tenant(ctx), c, rev)
	if err != nil {
		return nil, err
	}
	return contentToProto(out), nil
}

// GetCampaignContent implements deliveryv1.MessagesServiceServer.
func (s *MessagesServer) GetCampaignContent(ctx context.Context, req *deliveryv1.GetCampaignContentRequest) (*deliveryv1.CampaignContent, error) {
	out, err := s.m.GetCampaignContent(ctx, tenant(ctx), req.GetCampaignId())
	if err != nil {
		return nil, err
	}
	return contentToProto(out), nil
}

// PreviewMessage implements deliveryv1.MessagesServiceServer.
func (s *MessagesServer) PreviewMessage(ctx context.Context, req *deliveryv1.PreviewMessageRequest) (*deliveryv1.PreviewMessageResponse, error) {
	if err := contactAccess(ctx, req.GetContactId()); err != nil {
		return nil, err
	}
	p, err := s.m.PreviewMessage(ctx, tenant(ctx), previewInput(req.GetCampaignId(), req.GetVariant(), req.GetContactId(), req.GetSample()))
	if err != nil {
		return nil, err
	}
	resp := &deliveryv1.PreviewMessageResponse{Channel: channelToProto(p.Channel), Subject: p.Subject, HtmlBody: p.HTML,
		TextBody: p.Text, SmsBody: p.SMS, ListUnsubscribeUrl: p.ListUnsubscribeURL}
	if p.Channel == delivery.ChannelSMS {
		// As sent: the Twilio adapter appends its reference marker to every body.
		info := twilio.Segments(p.SMS + twilio.Marker("00000000-0000-0000-0000-000000000000"))
		resp.Sms = &deliveryv1.SmsInfo{Characters: int32(p.SMSLength), Encoding: string(info.Encoding),
			Units: int32(info.Units), Segments: int32(info.Segments)}
		for _, r := range info.NonGSM {
			resp.Sms.NonGsmCharacters = append(resp.Sms.NonGsmCharacters, string(r))
		}
	}
	return resp, nil
}

// SendTestMessage implements deliveryv1.MessagesServiceServer.
func (s *MessagesServer) SendTestMessage(ctx context.Context, req *deliveryv1.SendTestMessageRequest) (*deliveryv1.SendTestMessageResponse, error) {
	if err := contactAccess(ctx, req.GetContactId()); err != nil {
		return nil, err
	}
	sent, err := s.m.SendTestMessage(ctx, tenant(ctx), delivery.TestSend{To: req.GetTo(),
		PreviewInput: previewInput(req.GetCampaignId(), req.GetVariant(), req.GetContactId(), req.GetSample())})
	if err != nil {
		return nil, err
	}
	return &deliveryv1.SendTestMessageResponse{Ref: sent.Ref, ProviderMessageId: sent.ProviderID}, nil
}

// CreateSenderIdentity implements deliveryv1.MessagesServiceServer.
func (s *MessagesServer) CreateSenderIdentity(ctx context.Context, req *deliveryv1.CreateSenderIdentityRequest) (*deliveryv1.SenderIdentity, error) {
	p := req.GetSenderIdentity()
	out, err := s.m.CreateSenderIdentity(ctx, tenant(ctx), delivery.SenderIdentity{
		Channel: channelFromProto(p.GetChannel()), FromEmail: p.GetFromEmail(), FromName: p.GetFromName(), ReplyTo: p.GetReplyTo(),
		MessagingServiceSID: p.GetMessagingServiceSid(), FromNumber: p.GetFromNumber(),
	})
	if err != nil {
		return nil, err
	}
	return identityToProto(out), nil
}

// ListSenderIdentities implements deliveryv1.MessagesServiceServer.
func (s *MessagesServer) ListSenderIdentities(ctx context.Context, _ *deliveryv1.ListSenderIdentitiesRequest) (*deliveryv1.ListSenderIdentitiesResponse, error) {
	ids, err := s.m.ListSenderIdentities(ctx, tenant(ctx))
	if err != nil {
		return nil, err
	}
	resp := &deliveryv1.ListSenderIdentitiesResponse{}
	for _, id := range ids {
		resp.SenderIdentities = append(resp.SenderIdentities, identityToProto(id))
	}
	return resp, nil
}

// VerifySenderIdentity implements deliveryv1.MessagesServiceServer.
func (s *MessagesServer) VerifySenderIdentity(ctx context.Context, req *deliveryv1.VerifySenderIdentityRequest) (*deliveryv1.SenderIdentity, error) {
	out, err := s.m.VerifySenderIdentity(ctx, tenant(ctx), req.GetId())
	if err != nil {
		return nil, err
	}
	return identityToProto(out), nil
}

// DeleteSenderIdentity implements deliveryv1.MessagesServiceServer.
func (s *MessagesServer) DeleteSenderIdentity(ctx context.Context, req *deliveryv1.DeleteSenderIdentityRequest) (*emptypb.Empty, error) {
	if err := s.m.DeleteSenderIdentity(ctx, tenant(ctx), req.GetId()); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// contactAccess refuses to render a contact's data for a caller that may not read contacts:
// messages.send alone (an API key's scope) must not become a way to read personal data.
func contactAccess(ctx context.Context, contactID string) error {
	if contactID != "" && !authn.FromContext(ctx).Has(rbac.ContactsRead) {
		return apperr.New(apperr.PermissionDenied, "CONTACTS_READ_REQUIRED", "rendering for a contact needs the permission %s", rbac.ContactsRead)
	}
	return nil
}

func previewInput(campaignID, variant, contactID string, s *deliveryv1.SampleContact) delivery.PreviewInput {
	return delivery.PreviewInput{CampaignID: campaignID, Variant: variant, ContactID: contactID, Sample: delivery.Contact{
		Email: s.GetEmail(), Phone: s.GetPhone(), Locale: s.GetLocale(), TimeZone: s.GetTimeZone(), Attributes: s.GetAttributes(),
	}}
}

// clock parses "HH:MM" into an offset from midnight; "" is nil.
func clock(field, s string) (*time.Duration, error) {
	if s == "" {
		return nil, nil
	}
	t, err := time.Parse("15:04", s)
	if err != nil {
		var v apperr.Violations
		v.Add(field, "must be a time of day as HH:MM, e.g. 21:00")
		return nil, v.Err()
	}
	d := time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute
	return &d, nil
}

func clockString(d time.Duration) string {
	return fmt.Sprintf("%02d:%02d", int(d/time.Hour), int(d%time.Hour/time.Minute))
}

func contentFromProto(campaignID string, p *deliveryv1.CampaignContent) (delivery.CampaignContent, error) {
	c := delivery.CampaignContent{
		CampaignID: campaignID, Channel: channelFromProto(p.GetChannel()), SegmentID: p.GetSegmentId(),
		SenderIdentityID: p.GetSenderIdentityId(), NoSMSStopFooter: p.GetNoSmsStopFooter(),
		MessageCost: delivery.Money{Micros: p.GetMessageCost().GetAmountMicros(), Currency: p.GetMessageCost().GetCurrencyCode()},
		ClickCost:   delivery.Money{Micros: p.GetClickCost().GetAmountMicros(), Currency: p.GetClickCost().GetCurrencyCode()},
	}
	start, err1 := clock("content.quiet_hours_start", p.GetQuietHoursStart())
	end, err2 := clock("content.quiet_hours_end", p.GetQuietHoursEnd())
	at, err3 := clock("content.send_at_local_time", p.GetSendAtLocalTime())
	if err := apperr.First(err1, err2, err3); err != nil {
		return c, err
	}
	if (start == nil) != (end == nil) {
		var v apperr.Violations
		v.Add("content.quiet_hours_end", "quiet hours need both a start and an end")
		return c, v.Err()
	}
	if start != nil {
		c.QuietHours = delivery.QuietHours{Start: *start, End: *end}
	}
	c.SendAtLocalTime = at
	c.Variants = make([]delivery.VariantContent, 0, len(p.GetVariants()))
	for _, v := range p.GetVariants() {
		c.Variants = append(c.Variants, delivery.VariantContent{Name: v.GetName(), Subject: v.GetSubject(),
			HTMLBody: v.GetHtmlBody(), TextBody: v.GetTextBody(), SMSBody: v.GetSmsBody()})
	}
	return c, nil
}

func contentToProto(c delivery.CampaignContent) *deliveryv1.CampaignContent {
	p := &deliveryv1.CampaignContent{
		CampaignId: c.CampaignID, Channel: channelToProto(c.Channel), SegmentId: c.SegmentID, SenderIdentityId: c.SenderIdentityID,
		NoSmsStopFooter: c.NoSMSStopFooter, Etag: delivery.ContentEtag(c),
		MessageCost: &deliveryv1.Money{AmountMicros: c.MessageCost.Micros, CurrencyCode: c.MessageCost.Currency},
		ClickCost:   &deliveryv1.Money{AmountMicros: c.ClickCost.Micros, CurrencyCode: c.ClickCost.Currency},
		CreateTime:  protoTime(c.CreateTime), UpdateTime: protoTime(c.UpdateTime),
	}
	if !c.QuietHours.IsZero() {
		p.QuietHoursStart, p.QuietHoursEnd = clockString(c.QuietHours.Start), clockString(c.QuietHours.End)
	}
	if c.SendAtLocalTime != nil {
		p.SendAtLocalTime = clockString(*c.SendAtLocalTime)
	}
	for _, v := range c.Variants {
		p.Variants = append(p.Variants, &deliveryv1.VariantContent{Name: v.Name, Subject: v.Subject, HtmlBody: v.HTMLBody,
			TextBody: v.TextBody, SmsBody: v.SMSBody})
	}
	return p
}

func identityToProto(s delivery.SenderIdentity) *deliveryv1.SenderIdentity {
	return &deliveryv1.SenderIdentity{
		Id: s.ID, Channel: channelToProto(s.Channel), FromEmail: s.FromEmail, FromName: s.FromName, ReplyTo: s.ReplyTo,
		MessagingServiceSid: s.MessagingServiceSID, FromNumber: s.FromNumber, Verified: s.Verified,
		CreateTime: protoTime(s.CreateTime), UpdateTime: protoTime(s.UpdateTime),
	}
}
