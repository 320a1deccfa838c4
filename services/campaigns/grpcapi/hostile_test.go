package grpcapi_test

import (
	"math"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
)

// Hostile but well-formed input — unknown enum numbers, extreme integers, times at the ends
// of their range, long strings, garbage tokens and ids — is refused as bad input or answered,
// never INTERNAL: nothing of it may reach PostgreSQL as a value it cannot take.
func TestHostileInputIsNeverInternal(t *testing.T) {
	e := newEnv(t)
	f := e.tenantWithRoles(t, "hostile")
	ctx := as(f.tokens[rbac.Admin])
	c, err := e.client.CreateCampaign(ctx, &campaignsv1.CreateCampaignRequest{Campaign: newDraft("base")})
	if err != nil {
		t.Fatal(err)
	}
	draft := func(edit func(*campaignsv1.Campaign)) *campaignsv1.Campaign {
		d := newDraft("hostile")
		edit(d)
		return d
	}
	long := strings.Repeat("é", 100_000)
	minTime, maxTime := &timestamppb.Timestamp{Seconds: -62135596800}, &timestamppb.Timestamp{Seconds: 253402300799, Nanos: 999999999}
	creates := map[string]*campaignsv1.Campaign{
		"unknown channel": draft(func(d *campaignsv1.Campaign) { d.Channel = 12345 }),
		"unknown pacing":  draft(func(d *campaignsv1.Campaign) { d.Budget.Pacing = -7 }),
		"max budget": draft(func(d *campaignsv1.Campaign) {
			d.Budget.TotalMicros = math.MaxInt64
			d.Budget.DailyMicros = proto.Int64(math.MaxInt64)
		}),
		"negative budget": draft(func(d *campaignsv1.Campaign) { d.Budget.TotalMicros = math.MinInt64 }),
		"max weight": draft(func(d *campaignsv1.Campaign) {
			d.Variants[0].Weight = math.MaxInt32
			d.Variants[1].Weight = math.MaxInt32
		}),
		"negative weight": draft(func(d *campaignsv1.Campaign) { d.Variants[0].Weight = math.MinInt32 }),
		"far schedule": draft(func(d *campaignsv1.Campaign) {
			d.Schedule.Start, d.Schedule.End = "9999-12-31T23:59", "0001-01-01T00:00"
		}),
		"year 10000":    draft(func(d *campaignsv1.Campaign) { d.Schedule.Start = "10000-01-01T00:00" }),
		"zone Go only":  draft(func(d *campaignsv1.Campaign) { d.Schedule.TimeZone = "right/UTC" }),
		"long name":     draft(func(d *campaignsv1.Campaign) { d.Name = long }),
		"long label":    draft(func(d *campaignsv1.Campaign) { d.Labels = map[string]string{long: long} }),
		"many tags":     draft(func(d *campaignsv1.Campaign) { d.Tags = strings.Split(strings.Repeat("t,", 10000), ",") }),
		"long currency": draft(func(d *campaignsv1.Campaign) { d.Budget.CurrencyCode = long }),
		"long goal":     draft(func(d *campaignsv1.Campaign) { d.Goal.ConversionEvent = long }),
		"many variants": draft(func(d *campaignsv1.Campaign) { d.Variants = append(d.Variants, make([]*campaignsv1.Variant, 5000)...) }),
		"nil variant":   draft(func(d *campaignsv1.Campaign) { d.Variants = []*campaignsv1.Variant{nil} }),
		"no schedule":   draft(func(d *campaignsv1.Campaign) { d.Schedule = nil; d.Budget = nil; d.Goal = nil }),
	}
	check := func(what string, err error) {
		t.Helper()
		if c := status.Code(err); c == codes.Internal || c == codes.Unknown {
			t.Errorf("%s: %v", what, err)
		}
	}
	for name, d := range creates {
		_, err := e.client.CreateCampaign(ctx, &campaignsv1.CreateCampaignRequest{Campaign: d, RequestId: name})
		check("create with "+name, err)
	}
	for name, req := range map[string]*campaignsv1.ListCampaignsRequest{
		"huge page size":      {PageSize: math.MaxInt32},
		"negative page size":  {PageSize: math.MinInt32},
		"unknown state":       {States: []campaignsv1.Campaign_State{12345, -1}},
		"unknown channel":     {Channels: []campaignsv1.Channel{999}},
		"garbage token":       {PageToken: long},
		"base64 token":        {PageToken: "eyJmIjoieCIsImkiOiJ5In0"},
		"window at the ends":  {WindowStartTime: minTime, WindowEndTime: maxTime},
		"window reversed":     {WindowStartTime: maxTime, WindowEndTime: minTime},
		"odd order":           {OrderBy: "name desc; DROP TABLE campaigns"},
		"long order":          {OrderBy: long},
		"long prefix":         {NamePrefix: long, Tag: long},
		"like metacharacters": {NamePrefix: `%_\`},
	} {
		_, err := e.client.ListCampaigns(ctx, req)
		check("list with "+name, err)
	}
	for name, id := range map[string]string{"not a uuid": "x", "long": long, "uuid-like": "ffffffff-ffff-ffff-ffff-fffffffffffg", "upper uuid": strings.ToUpper(c.GetId())} {
		_, err := e.client.GetCampaign(ctx, &campaignsv1.GetCampaignRequest{Id: id})
		check("get "+name, err)
		_, err = e.client.ListCampaignTransitions(ctx, &campaignsv1.ListCampaignTransitionsRequest{Id: id, PageToken: long})
		check("transitions of "+name, err)
		_, err = e.client.GetCampaignPacing(ctx, &campaignsv1.GetCampaignPacingRequest{Id: id})
		check("pacing of "+name, err)
		_, err = e.client.ScheduleCampaign(ctx, &campaignsv1.ScheduleCampaignRequest{Id: id, Etag: long})
		check("schedule "+name, err)
		_, err = e.client.DeleteCampaign(ctx, &campaignsv1.DeleteCampaignRequest{Id: id, Etag: long})
		check("delete "+name, err)
	}
	for name, req := range map[string]*campaignsv1.UpdateCampaignRequest{
		"garbage mask":  {Campaign: &campaignsv1.Campaign{Id: c.GetId(), Etag: c.GetEtag()}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{long, "budget.daily_micros.x", ""}}},
		"garbage etag":  {Campaign: &campaignsv1.Campaign{Id: c.GetId(), Etag: long, Name: "x"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}},
		"no campaign":   {},
		"extreme times": {Campaign: &campaignsv1.Campaign{Id: c.GetId(), Etag: c.GetEtag(), Schedule: &campaignsv1.Schedule{Start: "0000-01-01T00:00", TimeZone: "Etc/GMT-14"}}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"schedule"}}},
	} {
		_, err := e.client.UpdateCampaign(ctx, req)
		check("update with "+name, err)
	}
}
