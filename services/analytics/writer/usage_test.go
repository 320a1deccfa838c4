package writer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/usage"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
)

// usageUnits reads every message of the USAGE stream: the units by id (billing keys them so: a
// unit that comes again counts once), and how many messages the stream holds.
func usageUnits(t *testing.T, js jetstream.JetStream) (map[string]usage.Unit, int) {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, usage.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	units := map[string]usage.Unit{}
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var us []usage.Unit
		if err := json.Unmarshal(m.Data, &us); err != nil {
			t.Fatal(err)
		}
		for _, u := range us {
			if prev, ok := units[u.ID]; ok && prev.Units != u.Units {
				t.Errorf("unit %s came again with %d units, first with %d", u.ID, u.Units, prev.Units)
			}
			units[u.ID] = u
		}
	}
	return units, int(info.State.Msgs)
}

// TestAcceptedUsageOnceThroughACrash: every event of every batch — the repeat of a stored
// event and a day's split too — is one events_accepted unit on USAGE, and a writer that dies
// after inserting, before acknowledging, leaves the redelivered batches' units counted once.
func TestAcceptedUsageOnceThroughACrash(t *testing.T) {
	p := newPipeline(t)
	p.opts = []writer.Option{writer.WithAcceptedUsage()}
	if _, err := usage.EnsureStream(context.Background(), p.writerJS); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		p.publish(t, fmt.Sprint("batch-", i), ids(fmt.Sprint("e", i), 20)...)
	}
	p.publish(t, "batch-repeat", "e0-0", "e0-1") // accepted again by ingest, stored once
	today := time.Now().UTC()
	yesterday := today.Add(-24 * time.Hour)
	p.publishEvents(t, "t1", "batch-days", event("d1", "u", yesterday), event("d2", "u", today), event("d3", "u", today))

	done, _ := p.start(t, 1) // inserts, then dies before acknowledging
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("writer did not insert")
	}
	p.start(t, 0)
	p.waitFor(t, `SELECT count() FROM events WHERE tenant_id != ''`, 103)
	meshtest.Eventually(t, 15*time.Second, func() bool {
		c, err := p.admin.Consumer(context.Background(), natsjs.StreamName, writer.ConsumerName)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, "the writer did not acknowledge every batch")

	units, msgs := usageUnits(t, p.admin)
	if msgs >= len(units) {
		t.Errorf("USAGE holds %d messages for %d units: want them grouped (a message per set and tenant)", msgs, len(units))
	}
	perDay := map[string]int64{}
	for _, u := range units {
		if u.Tenant != "t1" || u.Meter != usage.MeterEventsAccepted {
			t.Errorf("unit %+v: want tenant t1, meter %s", u, usage.MeterEventsAccepted)
		}
		perDay[u.Time.Format(time.DateOnly)] += u.Units
	}
	want := map[string]int64{today.Format(time.DateOnly): 100 + 2 + 2, yesterday.Format(time.DateOnly): 1}
	if len(perDay) != len(want) || perDay[today.Format(time.DateOnly)] != want[today.Format(time.DateOnly)] ||
		perDay[yesterday.Format(time.DateOnly)] != want[yesterday.Format(time.DateOnly)] {
		t.Errorf("accepted units per day = %v, want %v", perDay, want)
	}
}

// TestAcceptedUsageBeforeAnyAck: while the units cannot be recorded (no USAGE stream), the
// writer neither inserts nor acknowledges; once they can, it goes on.
func TestAcceptedUsageBeforeAnyAck(t *testing.T) {
	p := newPipeline(t)
	p.opts = []writer.Option{writer.WithAcceptedUsage()}
	p.publish(t, "batch-0", ids("e", 10)...)
	p.start(t, 0)
	meshtest.Eventually(t, 15*time.Second, func() bool {
		c, err := p.admin.Consumer(context.Background(), natsjs.StreamName, writer.ConsumerName)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumAckPending == 1
	}, "the writer did not take the batch")
	if n := p.count(t, `SELECT count() FROM events WHERE tenant_id != ''`); n != 0 {
		t.Fatalf("%d rows inserted before their accepted units were recorded", n)
	}
	if _, err := usage.EnsureStream(context.Background(), p.writerJS); err != nil {
		t.Fatal(err)
	}
	p.waitFor(t, `SELECT count() FROM events WHERE tenant_id != ''`, 10)
	if units, _ := usageUnits(t, p.admin); len(units) != 1 {
		t.Fatalf("units = %v, want the batch's one", units)
	}
}
