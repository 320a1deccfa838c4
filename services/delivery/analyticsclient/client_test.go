package analyticsclient_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/chtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

const campaignX, campaignY = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"

// A behaviour segment ("clicked campaign X in the last 30 days") is evaluated by the real
// delivery service asking the real analytics service over mTLS, which reads the tenant's events
// in ClickHouse: only contacts whose user id clicked that campaign within the window, of the
// tenant, match; pages of more than the candidates' limit are asked in pieces.
func TestBehaviourSegmentThroughAnalytics(t *testing.T) {
	t.Parallel()
	ca := mtlstest.NewCA(t)
	issuer := meshtest.NewIssuer(t)
	db := chtest.NewDatabase(t)
	an := servicetest.StartAnalytics(t, servicetest.AnalyticsOptions{CA: ca, Verifier: issuer.Verifier(), Database: db})
	d := servicetest.StartDelivery(t, servicetest.DeliveryOptions{CA: ca, Verifier: issuer.Verifier(), AnalyticsAddr: an.Addr()})

	now := time.Now().UTC()
	type ev struct {
		tenant, user, typ, campaign string
		ago                         time.Duration
	}
	events := []ev{
		{"t1", "u1", "click", campaignX, 2 * 24 * time.Hour},  // matches
		{"t1", "u1", "click", campaignX, 3 * 24 * time.Hour},  // twice: once in the answer
		{"t1", "u2", "click", campaignX, 40 * 24 * time.Hour}, // too long ago
		{"t1", "u3", "click", campaignY, time.Hour},           // another campaign
		{"t1", "u4", "impression", campaignX, time.Hour},      // another type
		{"t2", "u5", "click", campaignX, time.Hour},           // another tenant
	}
	// 1,500 more users clicked X: the evaluation asks about them in more than one call.
	for i := range 1500 {
		events = append(events, ev{"t1", fmt.Sprintf("bulk-%04d", i), "click", campaignX, time.Hour})
	}
	types := map[string]ingestv1.EventType{"click": ingestv1.EventType_EVENT_TYPE_CLICK, "impression": ingestv1.EventType_EVENT_TYPE_IMPRESSION}
	var rows []writer.Row
	for i, e := range events {
		when := now.Add(-e.ago)
		rows = append(rows, writer.Row{Seq: 1, Event: &ingestv1.AcceptedEvent{TenantId: e.tenant, ReceivedAt: timestamppb.New(when),
			CorrectedTime: timestamppb.New(when), Event: &ingestv1.Event{EventId: fmt.Sprint("e", i), Type: types[e.typ], Name: e.typ,
				UserId: e.user, CampaignId: e.campaign, Timestamp: timestamppb.New(when)}}})
	}
	conn, err := clickhouse.Open(context.Background(), chtest.Addr(), db, clickhouse.User(chtest.Writer(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := clickhouse.NewEventSink(conn).InsertAll(context.Background(), rows); err != nil {
		t.Fatal(err)
	}

	aud := d.Audiences()
	ctx := context.Background()
	for _, u := range []string{"u1", "u2", "u3", "u4", "u5"} {
		if _, err := aud.CreateContact(ctx, "t1", delivery.Contact{UserID: u}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := aud.CreateContact(ctx, "t1", delivery.Contact{Email: "no-user-id@example.com"}); err != nil {
		t.Fatal(err)
	}
	var bulk []delivery.ContactUpsert
	for i := range 1500 {
		bulk = append(bulk, delivery.ContactUpsert{UserID: fmt.Sprintf("bulk-%04d", i)})
	}
	if _, err := d.Store().UpsertContacts(ctx, "t1", bulk, now); err != nil {
		t.Fatal(err)
	}

	clickedX := delivery.Filter{Behaviour: &delivery.BehaviourCondition{EventType: "click", CampaignID: campaignX, WithinDays: 30}}
	var matched []string
	err = aud.EvaluateFilter(ctx, "t1", clickedX, func(page []delivery.Contact) error {
		for _, c := range page {
			matched = append(matched, c.UserID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(matched)
	if len(matched) != 1501 || !slices.Contains(matched, "u1") || slices.ContainsFunc(matched, func(u string) bool { return u[0] == 'u' && u != "u1" }) {
		t.Errorf("matched %d: %v…; want u1 and the 1,500 bulk users", len(matched), matched[:min(5, len(matched))])
	}
	n, err := aud.CountSegment(ctx, "t1", "", &delivery.Filter{Behaviour: &delivery.BehaviourCondition{EventType: "click", WithinDays: 60}})
	if err != nil || n.Contacts != 1503 {
		t.Errorf("clicked anything in 60 days: %+v %v, want 1503 (u1, u2, u3 and the bulk users)", n, err)
	}
}
