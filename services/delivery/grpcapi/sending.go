package grpcapi

import (
	"context"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

// SendingServer implements deliveryv1.SendingServiceServer: the ledger, read only.
type SendingServer struct {
	deliveryv1.UnimplementedSendingServiceServer
	sending *delivery.Sending
}

var _ deliveryv1.SendingServiceServer = (*SendingServer)(nil)

// NewSendingServer returns the gRPC server of the sending reports.
func NewSendingServer(s *delivery.Sending) *SendingServer { return &SendingServer{sending: s} }

// GetCampaignDelivery implements deliveryv1.SendingServiceServer.
func (s *SendingServer) GetCampaignDelivery(ctx context.Context, req *deliveryv1.GetCampaignDeliveryRequest) (*deliveryv1.CampaignDelivery, error) {
	p, err := s.sending.CampaignDelivery(ctx, tenant(ctx), req.GetCampaignId())
	if err != nil {
		return nil, err
	}
	out := &deliveryv1.CampaignDelivery{CampaignId: req.GetCampaignId(), Counts: countsToProto(p.Counts.ByState),
		StartTime: optionalTimestamp(p.StartTime), FinishTime: optionalTimestamp(p.FinishTime)}
	names := make([]string, 0, len(p.Counts.ByVariant))
	for v := range p.Counts.ByVariant {
		names = append(names, v)
	}
	sort.Strings(names)
	for _, v := range names {
		out.Variants = append(out.Variants, &deliveryv1.CampaignDelivery_VariantCounts{Variant: v, Counts: countsToProto(p.Counts.ByVariant[v])})
	}
	if h := p.QuotaHold; h != nil {
		out.QuotaHold = &deliveryv1.QuotaHold{Quota: h.Meter, Limit: h.Limit, Period: h.Period, Used: h.Used, ResetsAt: timestamppb.New(h.ResetsAt)}
	}
	return out, nil
}

// ListCampaignRecipients implements deliveryv1.SendingServiceServer. The address is not
// returned: the contact id leads to it for those who may read contacts.
func (s *SendingServer) ListCampaignRecipients(ctx context.Context, req *deliveryv1.ListCampaignRecipientsRequest) (*deliveryv1.ListCampaignRecipientsResponse, error) {
	es, next, err := s.sending.CampaignRecipients(ctx, tenant(ctx), req.GetCampaignId(), req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	out := &deliveryv1.ListCampaignRecipientsResponse{NextPageToken: next}
	for _, e := range es {
		out.Recipients = append(out.Recipients, &deliveryv1.CampaignRecipient{
			Id: e.ID, ContactId: e.ContactID, Variant: e.Variant,
			State:    deliveryv1.RecipientState(deliveryv1.RecipientState_value["RECIPIENT_STATE_"+strings.ToUpper(string(e.State))]),
			Attempts: int32(e.Attempt), Reason: e.Reason, ProviderMessageId: e.ProviderID,
			NotBeforeTime: optionalTimestamp(e.NotBefore), AttemptTime: optionalTimestamp(e.AttemptTime),
			CreateTime: timestamppb.New(e.CreateTime), UpdateTime: timestamppb.New(e.UpdateTime),
		})
	}
	return out, nil
}

func countsToProto(m map[delivery.RecipientState]int) *deliveryv1.DeliveryCounts {
	c := &deliveryv1.DeliveryCounts{
		Pending: int64(m[delivery.StatePending]), Sending: int64(m[delivery.StateSending]), Sent: int64(m[delivery.StateSent]),
		Failed: int64(m[delivery.StateFailed]), Skipped: int64(m[delivery.StateSkipped]), Unknown: int64(m[delivery.StateUnknown]),
	}
	c.Total = c.Pending + c.Sending + c.Sent + c.Failed + c.Skipped + c.Unknown
	return c
}

func optionalTimestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
