// Package grpcapi serves the campaigns domain over gRPC (and, through the gateway, REST).
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

	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/idempotency"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/services/campaigns"
)

// ServiceName is the campaigns service's mesh identity and its name in audit records.
const ServiceName = "campaigns"

// ServerOptions are the platform options of the campaigns server, shared by main and the
// tests so both run the same chain: credentials checked by verifier, every audited call
// recorded through auditor (the service's audit outbox), idempotent creates kept in pool.
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

// Server implements campaignsv1.CampaignServiceServer.
type Server struct {
	campaignsv1.UnimplementedCampaignServiceServer
	svc *campaigns.Service
}

var _ campaignsv1.CampaignServiceServer = (*Server)(nil)

// NewServer returns the gRPC server of svc.
func NewServer(svc *campaigns.Service) *Server { return &Server{svc: svc} }

// CreateCampaign implements campaignsv1.CampaignServiceServer.
func (s *Server) CreateCampaign(ctx context.Context, req *campaignsv1.CreateCampaignRequest) (*campaignsv1.Campaign, error) {
	in, err := campaignFromProto(req.GetCampaign())
	if err != nil {
		return nil, err
	}
	c, err := s.svc.CreateCampaign(ctx, authn.FromContext(ctx), in)
	return campaignToProto(c), err
}

// GetCampaign implements campaignsv1.CampaignServiceServer.
func (s *Server) GetCampaign(ctx context.Context, req *campaignsv1.GetCampaignRequest) (*campaignsv1.Campaign, error) {
	c, err := s.svc.GetCampaign(ctx, authn.FromContext(ctx), req.GetId())
	return campaignToProto(c), err
}

// ListCampaigns implements campaignsv1.CampaignServiceServer.
func (s *Server) ListCampaigns(ctx context.Context, req *campaignsv1.ListCampaignsRequest) (*campaignsv1.ListCampaignsResponse, error) {
	r := campaigns.ListRequest{
		PageSize: req.GetPageSize(), PageToken: req.GetPageToken(), Tag: req.GetTag(), NamePrefix: req.GetNamePrefix(),
		WindowStart: optionalTime(req.GetWindowStartTime()), WindowEnd: optionalTime(req.GetWindowEndTime()), OrderBy: req.GetOrderBy(),
	}
	for _, st := range req.GetStates() {
		r.States = append(r.States, stateFromProto(st))
	}
	for _, ch := range req.GetChannels() {
		r.Channels = append(r.Channels, channelFromProto(ch))
	}
	cs, next, err := s.svc.ListCampaigns(ctx, authn.FromContext(ctx), r)
	if err != nil {
		return nil, err
	}
	resp := &campaignsv1.ListCampaignsResponse{NextPageToken: next}
	for _, c := range cs {
		resp.Campaigns = append(resp.Campaigns, campaignToProto(c))
	}
	return resp, nil
}

// UpdateCampaign implements campaignsv1.CampaignServiceServer.
func (s *Server) UpdateCampaign(ctx context.Context, req *campaignsv1.UpdateCampaignRequest) (*campaignsv1.Campaign, error) {
	in, err := campaignFromProto(req.GetCampaign())
	if err != nil {
		return nil, err
	}
	in.ID = req.GetCampaign().GetId()
	c, err := s.svc.UpdateCampaign(ctx, authn.FromContext(ctx), in, req.GetUpdateMask().GetPaths(), req.GetCampaign().GetEtag())
	return campaignToProto(c), err
}

// DeleteCampaign implements campaignsv1.CampaignServiceServer.
func (s *Server) DeleteCampaign(ctx context.Context, req *campaignsv1.DeleteCampaignRequest) (*emptypb.Empty, error) {
	if err := s.svc.DeleteCampaign(ctx, authn.FromContext(ctx), req.GetId(), req.GetEtag()); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

func (s *Server) transition(ctx context.Context, id, etag string, a campaigns.Action) (*campaignsv1.Campaign, error) {
	c, err := s.svc.Transition(ctx, authn.FromContext(ctx), id, a, etag)
	return campaignToProto(c), err
}

// ScheduleCampaign implements campaignsv1.CampaignServiceServer.
func (s *Server) ScheduleCampaign(ctx context.Context, req *campaignsv1.ScheduleCampaignRequest) (*campaignsv1.Campaign, error) {
	return s.transition(ctx, req.GetId(), req.GetEtag(), campaigns.ActSchedule)
}

// ActivateCampaign implements campaignsv1.CampaignServiceServer.
func (s *Server) ActivateCampaign(ctx context.Context, req *campaignsv1.ActivateCampaignRequest) (*campaignsv1.Campaign, error) {
	return s.transition(ctx, req.GetId(), req.GetEtag(), campaigns.ActActivate)
}

// PauseCampaign implements campaignsv1.CampaignServiceServer.
func (s *Server) PauseCampaign(ctx context.Context, req *campaignsv1.PauseCampaignRequest) (*campaignsv1.Campaign, error) {
	return s.transition(ctx, req.GetId(), req.GetEtag(), campaigns.ActPause)
}

// ResumeCampaign implements campaignsv1.CampaignServiceServer.
func (s *Server) ResumeCampaign(ctx context.Context, req *campaignsv1.ResumeCampaignRequest) (*campaignsv1.Campaign, error) {
	return s.transition(ctx, req.GetId(), req.GetEtag(), campaigns.ActResume)
}

// CompleteCampaign implements campaignsv1.CampaignServiceServer.
func (s *Server) CompleteCampaign(ctx context.Context, req *campaignsv1.CompleteCampaignRequest) (*campaignsv1.Campaign, error) {
	return s.transition(ctx, req.GetId(), req.GetEtag(), campaigns.ActComplete)
}

// CancelCampaign implements campaignsv1.CampaignServiceServer.
func (s *Server) CancelCampaign(ctx context.Context, req *campaignsv1.CancelCampaignRequest) (*campaignsv1.Campaign, error) {
	return s.transition(ctx, req.GetId(), req.GetEtag(), campaigns.ActCancel)
}

// ArchiveCampaign implements campaignsv1.CampaignServiceServer.
func (s *Server) ArchiveCampaign(ctx context.Context, req *campaignsv1.ArchiveCampaignRequest) (*campaignsv1.Campaign, error) {
	return s.transition(ctx, req.GetId(), req.GetEtag(), campaigns.ActArchive)
}

// ListCampaignTransitions implements campaignsv1.CampaignServiceServer.
func (s *Server) ListCampaignTransitions(ctx context.Context, req *campaignsv1.ListCampaignTransitionsRequest) (*campaignsv1.ListCampaignTransitionsResponse, error) {
	ts, next, err := s.svc.ListTransitions(ctx, authn.FromContext(ctx), req.GetId(), req.GetPageSize(), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	resp := &campaignsv1.ListCampaignTransitionsResponse{NextPageToken: next}
	for _, t := range ts {
		resp.Transitions = append(resp.Transitions, &campaignsv1.CampaignTransition{
			Id: t.ID, CampaignId: t.CampaignID, FromState: stateToProto(t.From), ToState: stateToProto(t.To),
			Trigger: t.Trigger, Actor: t.Actor, EffectiveTime: timestamppb.New(t.EffectiveTime), RecordTime: timestamppb.New(t.RecordTime),
		})
	}
	return resp, nil
}

// GetCampaignPacing implements campaignsv1.CampaignServiceServer.
func (s *Server) GetCampaignPacing(ctx context.Context, req *campaignsv1.GetCampaignPacingRequest) (*campaignsv1.CampaignPacing, error) {
	p, err := s.svc.Pacing(ctx, authn.FromContext(ctx), req.GetId())
	if err != nil {
		return nil, err
	}
	return &campaignsv1.CampaignPacing{
		CampaignId: p.CampaignID, AsOfTime: timestamppb.New(p.AsOf), CurrencyCode: p.Currency, Pacing: pacingToProto(p.Pacing),
		TotalBudgetMicros: p.TotalBudget, TotalSpendMicros: p.TotalSpend, DayStartTime: timestamppb.New(p.DayStart),
		DayEndTime: timestamppb.New(p.DayEnd), DayFraction: p.DayFraction, SpendTodayMicros: p.SpendToday,
		DailyAllowanceMicros: p.DailyAllowance, AllowedSpendMicros: p.Allowed, OnPace: p.OnPace, State: stateToProto(p.State),
	}, nil
}

// ListDeliveryCampaigns implements campaignsv1.CampaignServiceServer (internal: delivery).
func (s *Server) ListDeliveryCampaigns(ctx context.Context, req *campaignsv1.ListDeliveryCampaignsRequest) (*campaignsv1.ListDeliveryCampaignsResponse, error) {
	cs, next, err := s.svc.ListDeliveryCampaigns(ctx, campaigns.DeliveryRequest{
		PageSize: req.GetPageSize(), PageToken: req.GetPageToken(), TenantID: req.GetTenantId(), IDs: req.GetCampaignIds(),
	})
	if err != nil {
		return nil, err
	}
	resp := &campaignsv1.ListDeliveryCampaignsResponse{NextPageToken: next}
	for _, c := range cs {
		d := &campaignsv1.ListDeliveryCampaignsResponse_DeliveryCampaign{
			TenantId: c.TenantID, Id: c.ID, Channel: channelToProto(c.Channel), State: stateToProto(c.State),
			StateTime: timestamppb.New(c.StateTime),
		}
		for _, v := range c.Variants {
			d.Variants = append(d.Variants, &campaignsv1.Variant{Name: v.Name, Weight: int32(v.Weight)})
		}
		resp.Campaigns = append(resp.Campaigns, d)
	}
	return resp, nil
}

// campaignFromProto takes the fields a user sets. Wall-clock times that do not parse are
// reported as field violations.
func campaignFromProto(p *campaignsv1.Campaign) (campaigns.Campaign, error) {
	var v apperr.Violations
	c := campaigns.Campaign{
		Name: p.GetName(), Description: p.GetDescription(), Channel: channelFromProto(p.GetChannel()),
		Goal: p.GetGoal().GetConversionEvent(), Tags: p.GetTags(), Labels: p.GetLabels(),
		Schedule: campaigns.Schedule{TimeZone: p.GetSchedule().GetTimeZone()},
	}
	parse := func(field, raw string) campaigns.WallClock {
		if raw == "" {
			return campaigns.WallClock{}
		}
		w, err := campaigns.ParseWallClock(raw)
		if err != nil {
			v.Add("campaign.schedule."+field, "must be a wall-clock time YYYY-MM-DDTHH:MM[:SS] without an offset, from 1970")
		}
		return w
	}
	c.Schedule.Start = parse("start", p.GetSchedule().GetStart())
	c.Schedule.End = parse("end", p.GetSchedule().GetEnd())
	if b := p.GetBudget(); b != nil {
		c.Budget = campaigns.Budget{TotalMicros: b.GetTotalMicros(), DailyMicros: b.GetDailyMicros(), Currency: b.GetCurrencyCode(),
			Pacing: pacingFromProto(b.GetPacing())}
	}
	for _, x := range p.GetVariants() {
		c.Variants = append(c.Variants, campaigns.Variant{Name: x.GetName(), Weight: int(x.GetWeight())})
	}
	return c, v.Err()
}

func campaignToProto(c campaigns.Campaign) *campaignsv1.Campaign {
	if c.ID == "" {
		return nil
	}
	p := &campaignsv1.Campaign{
		Id: c.ID, Name: c.Name, Description: c.Description, Channel: channelToProto(c.Channel), State: stateToProto(c.State),
		Tags: c.Tags, Labels: c.Labels, Creator: c.Creator, Etag: c.Etag(),
		CreateTime: timestamppb.New(c.CreateTime), UpdateTime: timestamppb.New(c.UpdateTime), StateTime: timestamppb.New(c.StateTime),
		ResumeTime: protoTime(c.ResumeTime),
	}
	if c.Exhausted != "" {
		p.ExhaustedBudget = campaignsv1.ExhaustedBudget(campaignsv1.ExhaustedBudget_value["EXHAUSTED_BUDGET_"+strings.ToUpper(string(c.Exhausted))])
	}
	if s := c.Schedule; !s.Start.IsZero() || !s.End.IsZero() || s.TimeZone != "" {
		p.Schedule = &campaignsv1.Schedule{Start: s.Start.String(), End: s.End.String(), TimeZone: s.TimeZone,
			StartTime: protoTime(s.StartTime), EndTime: protoTime(s.EndTime)}
	}
	if !c.Budget.IsZero() {
		p.Budget = &campaignsv1.Budget{TotalMicros: c.Budget.TotalMicros, CurrencyCode: c.Budget.Currency, Pacing: pacingToProto(c.Budget.Pacing)}
		if c.Budget.DailyMicros > 0 {
			p.Budget.DailyMicros = &c.Budget.DailyMicros
		}
	}
	if c.Goal != "" {
		p.Goal = &campaignsv1.Goal{ConversionEvent: c.Goal}
	}
	for _, v := range c.Variants {
		p.Variants = append(p.Variants, &campaignsv1.Variant{Name: v.Name, Weight: int32(v.Weight)})
	}
	return p
}

// Enum values map to domain names by their suffix: STATE_BUDGET_EXHAUSTED ↔ "budget_exhausted".
// Unspecified and unknown values map to names the domain rejects.

func stateToProto(s campaigns.State) campaignsv1.Campaign_State {
	return campaignsv1.Campaign_State(campaignsv1.Campaign_State_value["STATE_"+strings.ToUpper(string(s))])
}

func stateFromProto(s campaignsv1.Campaign_State) campaigns.State {
	return campaigns.State(enumSuffix(s.String(), "STATE_"))
}

func channelToProto(c campaigns.Channel) campaignsv1.Channel {
	return campaignsv1.Channel(campaignsv1.Channel_value["CHANNEL_"+strings.ToUpper(string(c))])
}

func channelFromProto(c campaignsv1.Channel) campaigns.Channel {
	return campaigns.Channel(enumSuffix(c.String(), "CHANNEL_"))
}

func pacingToProto(p campaigns.Pacing) campaignsv1.Budget_Pacing {
	return campaignsv1.Budget_Pacing(campaignsv1.Budget_Pacing_value["PACING_"+strings.ToUpper(string(p))])
}

// pacingFromProto maps PACING_UNSPECIFIED to "" (the domain's default, ASAP).
func pacingFromProto(p campaignsv1.Budget_Pacing) campaigns.Pacing {
	return campaigns.Pacing(enumSuffix(p.String(), "PACING_"))
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

func protoTime(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}

func optionalTime(ts *timestamppb.Timestamp) *time.Time {
	if ts == nil {
		return nil
	}
	t := ts.AsTime()
	return &t
}
