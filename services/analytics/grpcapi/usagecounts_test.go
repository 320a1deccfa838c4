package grpcapi_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/chtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/analytics/app"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
)

// Events go through the stream and the writer (one batch delivered twice, as a retry after a
// lost acknowledgement would): GetUsageCounts reports each tenant's stored events per day of
// receipt, once each, as a direct count of the table does, and a storage estimate.
func TestUsageCountsOfEventsThroughTheWriter(t *testing.T) {
	db := chtest.NewDatabase(t)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	ca := mtlstest.NewCA(t)
	var natsURL string
	a := servicetest.StartAnalytics(t, servicetest.AnalyticsOptions{CA: ca, Database: db,
		Verifier: authn.Verifier{Tokens: authn.NewJWTVerifier(authn.StaticKeys{"k": pub})},
		Config:   func(c *app.Config) { natsURL = c.NATS.URL }})
	nc, js, err := natsjs.Connect(natsURL, "usage-test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	today := time.Now().UTC().Truncate(24 * time.Hour)
	yesterday := today.Add(-24 * time.Hour)
	batch := func(tenant, prefix string, n int, received time.Time) []byte {
		var events []*ingestv1.AcceptedEvent
		for i := range n {
			events = append(events, &ingestv1.AcceptedEvent{TenantId: tenant, ReceivedAt: timestamppb.New(received), CorrectedTime: timestamppb.New(received),
				Event: &ingestv1.Event{EventId: fmt.Sprint(prefix, i), Type: ingestv1.EventType_EVENT_TYPE_CLICK, Name: "tap", UserId: "u", CampaignId: "c"}})
		}
		data, err := proto.Marshal(&ingestv1.AcceptedBatch{Events: events})
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	for _, b := range []struct {
		tenant, msgID string
		data          []byte
	}{
		{"t1", "a", batch("t1", "a", 5, today.Add(time.Minute))},
		{"t1", "b", batch("t1", "b", 2, yesterday.Add(23*time.Hour))},
		{"t2", "c", batch("t2", "c", 3, today)},
		{"t1", "a-again", batch("t1", "a", 5, today.Add(time.Minute))}, // the same events again
	} {
		if _, err := natsjs.PublishPart(ctx, js, b.tenant, natsjs.Partition(b.tenant, "u"), b.msgID, b.data, nil); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := clickhouse.OpenReader(ctx, chtest.Addr(), db, clickhouse.User(chtest.Writer(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	count := func(q string, args ...any) uint64 {
		var n uint64
		if err := conn.QueryRow(ctx, q, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	meshtest.Eventually(t, 20*time.Second, func() bool {
		c, err := js.Consumer(ctx, natsjs.StreamName, natsjs.WriterConsumerName(0))
		if err != nil {
			return false // not created yet
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.AckFloor.Stream == 4
	}, "the writer did not take every batch")
	if n := count(`SELECT count() FROM events_local WHERE tenant_id != ''`); n != 10 {
		t.Fatalf("%d events stored, want 10", n)
	}

	e := &env{addr: a.Addr(), ca: ca}
	c := e.client(t, "billing")
	for day, want := range map[time.Time]map[string]uint64{today: {"t1": 5, "t2": 3}, yesterday: {"t1": 2, "t2": 0}} {
		resp, err := c.GetUsageCounts(ctx, &analyticsv1.GetUsageCountsRequest{Day: day.Format(time.DateOnly)})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetTenants()) != len(want) {
			t.Fatalf("%s: %v", day.Format(time.DateOnly), resp.GetTenants())
		}
		for _, u := range resp.GetTenants() {
			// The independent count: the table itself.
			direct := count(`SELECT count() FROM events_local WHERE tenant_id = ? AND received_ms >= ? AND received_ms < ?`,
				u.GetTenantId(), uint64(day.UnixMilli()), uint64(day.Add(24*time.Hour).UnixMilli()))
			if uint64(u.GetEventsStored()) != want[u.GetTenantId()] || uint64(u.GetEventsStored()) != direct {
				t.Errorf("%s %s: %d events stored, want %d (the table: %d)", day.Format(time.DateOnly), u.GetTenantId(), u.GetEventsStored(), want[u.GetTenantId()], direct)
			}
			if u.GetStorageBytes() <= 0 {
				t.Errorf("%s: storage %d bytes", u.GetTenantId(), u.GetStorageBytes())
			}
		}
	}
	for _, day := range []string{"", "2026-13-01", "1999-12-31", today.Add(48 * time.Hour).Format(time.DateOnly), "today"} {
		if _, err := c.GetUsageCounts(ctx, &analyticsv1.GetUsageCountsRequest{Day: day}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("day %q: %v, want INVALID_ARGUMENT", day, err)
		}
	}
}
