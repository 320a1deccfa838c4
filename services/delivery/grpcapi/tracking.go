package grpcapi

import (
	"context"
	"net/http"
	"net/url"

	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/sendgrid"
	"github.com/campaignmesh/campaignmesh/services/delivery/twilio"
)

// MaxWebhookBody bounds a provider webhook's body as the gateway forwards it.
const MaxWebhookBody = 1 << 20

// InboundTenantParam is the query parameter of the inbound SMS webhook URL that carries the
// signed tenant token (delivery.TrackingLinks.InboundSMS makes the URL).
const InboundTenantParam = "cm_tenant"

// TrackingServer implements deliveryv1.TrackingServiceServer: the gateway's tracked links,
// pixel, unsubscribe and provider webhooks. It holds the providers' wire formats: it verifies
// a webhook's signature and turns its events into the domain's.
type TrackingServer struct {
	deliveryv1.UnimplementedTrackingServiceServer
	tracker  *delivery.Tracker
	sendgrid *sendgrid.Verifier
	twilio   *twilio.Validator
}

var _ deliveryv1.TrackingServiceServer = (*TrackingServer)(nil)

// NewTrackingServer returns the tracking server. sg and tw verify the providers' webhooks; a
// nil one means that provider's webhooks are not configured and are refused.
func NewTrackingServer(tr *delivery.Tracker, sg *sendgrid.Verifier, tw *twilio.Validator) *TrackingServer {
	return &TrackingServer{tracker: tr, sendgrid: sg, twilio: tw}
}

// TrackClick implements deliveryv1.TrackingServiceServer.
func (s *TrackingServer) TrackClick(ctx context.Context, req *deliveryv1.TrackClickRequest) (*deliveryv1.TrackClickResponse, error) {
	out, err := s.tracker.Click(ctx, req.GetToken(), req.GetUserAgent(), req.GetIp())
	if err != nil {
		return nil, err
	}
	return &deliveryv1.TrackClickResponse{TargetUrl: out.Target, Recorded: out.Recorded}, nil
}

// TrackOpen implements deliveryv1.TrackingServiceServer.
func (s *TrackingServer) TrackOpen(ctx context.Context, req *deliveryv1.TrackOpenRequest) (*deliveryv1.TrackOpenResponse, error) {
	if err := s.tracker.Open(ctx, req.GetToken(), req.GetUserAgent(), req.GetIp()); err != nil {
		return nil, err
	}
	return &deliveryv1.TrackOpenResponse{}, nil
}

// GetUnsubscribe implements deliveryv1.TrackingServiceServer.
func (s *TrackingServer) GetUnsubscribe(ctx context.Context, req *deliveryv1.GetUnsubscribeRequest) (*deliveryv1.GetUnsubscribeResponse, error) {
	if err := s.tracker.CheckUnsubscribe(ctx, req.GetToken()); err != nil {
		return nil, err
	}
	return &deliveryv1.GetUnsubscribeResponse{}, nil
}

// Unsubscribe implements deliveryv1.TrackingServiceServer.
func (s *TrackingServer) Unsubscribe(ctx context.Context, req *deliveryv1.UnsubscribeRequest) (*deliveryv1.UnsubscribeResponse, error) {
	if err := s.tracker.Unsubscribe(ctx, req.GetToken()); err != nil {
		return nil, err
	}
	return &deliveryv1.UnsubscribeResponse{}, nil
}

var (
	errBadSignature  = apperr.New(apperr.PermissionDenied, "BAD_SIGNATURE", "the webhook's signature does not verify")
	errNotConfigured = apperr.New(apperr.FailedPrecondition, "WEBHOOK_NOT_CONFIGURED", "this provider's webhook is not configured")
)

func badWebhook(format string, args ...any) error {
	var v apperr.Violations
	v.Add("body", format, args...)
	return v.Err()
}

// ReceiveProviderWebhook implements deliveryv1.TrackingServiceServer: verify, parse, hand to
// the domain. Nothing of a request is acted on before its signature verifies.
func (s *TrackingServer) ReceiveProviderWebhook(ctx context.Context, req *deliveryv1.ReceiveProviderWebhookRequest) (*deliveryv1.ReceiveProviderWebhookResponse, error) {
	if len(req.GetBody()) > MaxWebhookBody {
		return nil, badWebhook("at most %d bytes", MaxWebhookBody)
	}
	h := http.Header{}
	for k, v := range req.GetHeaders() {
		h.Set(k, v)
	}
	var err error
	switch req.GetKind() {
	case deliveryv1.WebhookKind_WEBHOOK_KIND_SENDGRID_EVENTS:
		err = s.sendgridEvents(ctx, h, req.GetBody())
	case deliveryv1.WebhookKind_WEBHOOK_KIND_TWILIO_STATUS, deliveryv1.WebhookKind_WEBHOOK_KIND_TWILIO_INBOUND:
		err = s.twilioWebhook(ctx, req.GetKind(), req.GetUrl(), h, req.GetBody())
	default:
		var v apperr.Violations
		v.Add("kind", "must name a webhook")
		err = v.Err()
	}
	if err != nil {
		return nil, err
	}
	return &deliveryv1.ReceiveProviderWebhookResponse{}, nil
}

func (s *TrackingServer) sendgridEvents(ctx context.Context, h http.Header, body []byte) error {
	if s.sendgrid == nil {
		return errNotConfigured
	}
	if err := s.sendgrid.Verify(h.Get(sendgrid.SignatureHeader), h.Get(sendgrid.TimestampHeader), body); err != nil {
		return errBadSignature
	}
	evs, err := sendgrid.ParseEvents(body)
	if err != nil {
		return badWebhook("is not an event webhook body")
	}
	out := make([]delivery.ProviderEvent, 0, len(evs))
	for _, e := range evs {
		out = append(out, delivery.ProviderEvent{Provider: delivery.WebhookSendGrid, MessageID: e.MessageID, Type: e.Event,
			Time: e.Timestamp, Ref: e.CustomArgs[sendgrid.RefArg], BounceType: e.BounceType})
	}
	return s.tracker.HandleProviderEvents(ctx, out)
}

func (s *TrackingServer) twilioWebhook(ctx context.Context, kind deliveryv1.WebhookKind, rawURL string, h http.Header, body []byte) error {
	if s.twilio == nil {
		return errNotConfigured
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		var v apperr.Violations
		v.Add("url", "must be the absolute url the provider called")
		return v.Err()
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return badWebhook("is not a form")
	}
	if !s.twilio.Validate(rawURL, form, h.Get(twilio.SignatureHeader)) {
		return errBadSignature
	}
	if kind == deliveryv1.WebhookKind_WEBHOOK_KIND_TWILIO_INBOUND {
		_, err := s.tracker.InboundSMS(ctx, u.Query().Get(InboundTenantParam), form.Get("From"), form.Get("Body"))
		return err
	}
	cb, err := twilio.ParseStatusCallback(form)
	if err != nil {
		return badWebhook("is not a status callback")
	}
	return s.tracker.HandleProviderEvents(ctx, []delivery.ProviderEvent{{Provider: delivery.WebhookTwilio, MessageID: cb.MessageSID,
		Type: cb.MessageStatus, Ref: u.Query().Get(twilio.RefParam), ErrorCode: cb.ErrorCode}})
}
