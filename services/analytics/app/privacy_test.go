package app_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/chtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/analytics/app"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
)

// The service, given -privacy-key-file, loads the PRIVACY bucket before its writer consumes:
// events of a subject suppressed while they waited in the stream never land, the others do;
// both the writer's and retention's series are on /metrics.
func TestWriterDropsSuppressedSubjectsWithThePrivacyKey(t *testing.T) {
	key := make([]byte, privacy.MinKeyBytes)
	_, _ = rand.Read(key)
	keyFile := filepath.Join(t.TempDir(), "privacy-key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h, err := privacy.NewHasher(key)
	if err != nil {
		t.Fatal(err)
	}
	o := options(t)
	o.Database = chtest.NewDatabase(t)
	o.Config = func(c *app.Config) {
		c.PrivacyKeyFile, c.RetentionDelay = keyFile, 0
		// What the stream and the bucket hold when the service starts.
		nc, js, err := natsjs.Connect(c.NATS.URL, "test")
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		ctx := context.Background()
		now := timestamppb.Now()
		for i, user := range []string{"gone", "stay", "gone", "stay", "stay"} {
			e := &ingestv1.AcceptedEvent{TenantId: "t1", ReceivedAt: now, CorrectedTime: now,
				Event: &ingestv1.Event{EventId: fmt.Sprint("e", i), Type: ingestv1.EventType_EVENT_TYPE_CLICK, UserId: user, CampaignId: "c1"}}
			data, _ := proto.Marshal(&ingestv1.AcceptedBatch{Events: []*ingestv1.AcceptedEvent{e}})
			if _, err := natsjs.PublishPart(ctx, js, "t1", writer.PartOf(e), e.Event.EventId, data, nil); err != nil {
				t.Fatal(err)
			}
		}
		kv, err := privacy.OpenBucket(ctx, js)
		if err != nil {
			t.Fatal(err)
		}
		if err := privacy.PutSuppression(ctx, kv, "t1", h.SubjectHash("t1", "gone"), "dsr-1"); err != nil {
			t.Fatal(err)
		}
	}
	a := servicetest.StartAnalytics(t, o)
	conn, err := clickhouse.OpenReader(context.Background(), chtest.Addr(), o.Database, clickhouse.User(chtest.Writer(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	count := func(q string) uint64 {
		var n uint64
		if err := conn.QueryRow(context.Background(), q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	meshtest.Eventually(t, 15*time.Second, func() bool {
		return strings.Contains(servicetest.AdminGet(t, a.AdminAddr(), "/metrics"), "writer_suppressed_rows_total 2")
	}, "the writer did not drop the suppressed subject's 2 rows")
	meshtest.Eventually(t, 15*time.Second, func() bool { return count(`SELECT count() FROM events WHERE tenant_id != ''`) == 3 },
		"the other subject's 3 rows did not land")
	if n := count(`SELECT count() FROM events WHERE user_id = 'gone'`); n != 0 {
		t.Errorf("%d rows of the suppressed subject landed", n)
	}
	meshtest.Eventually(t, 15*time.Second, func() bool {
		return strings.Contains(servicetest.AdminGet(t, a.AdminAddr(), "/metrics"), "retention_runs_total 1")
	}, "retention did not run right after start (RetentionDelay 0)")
}
