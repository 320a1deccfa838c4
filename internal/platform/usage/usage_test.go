package usage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/usage"
)

func connect(t *testing.T) jetstream.JetStream {
	t.Helper()
	nc, js, err := natsjs.Connect(natstest.Start(t), "usage-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return js
}

// fetchAll returns every message of the stream, in order, through an ephemeral consumer.
func fetchAll(t *testing.T, js jetstream.JetStream) []jetstream.Msg {
	t.Helper()
	ctx := context.Background()
	n := natstest.StreamMsgs(t, js, usage.StreamName)
	c, err := js.OrderedConsumer(ctx, usage.StreamName, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for uint64(len(out)) < n {
		batch, err := c.Fetch(int(n)-len(out), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			out = append(out, m)
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestPublishSameIDStoresOnce(t *testing.T) {
	js := connect(t)
	ctx := context.Background()
	if _, err := usage.EnsureStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	// A second EnsureStream (another process starting) opens the same stream.
	if _, err := usage.EnsureStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	u := usage.NewUnit("t1", usage.MeterAnalyticsQueries, time.Now())
	for range 2 { // a retry after a lost acknowledgement
		if err := usage.Publish(ctx, js, u); err != nil {
			t.Fatal(err)
		}
	}
	other := usage.NewUnit("t1", usage.MeterAnalyticsQueries, time.Now())
	if other.ID == u.ID {
		t.Fatal("two units got the same id")
	}
	if err := usage.Publish(ctx, js, other); err != nil {
		t.Fatal(err)
	}
	msgs := fetchAll(t, js)
	if len(msgs) != 2 {
		t.Fatalf("stream holds %d messages, want 2 (the retried unit once)", len(msgs))
	}
	got, err := usage.Decode(msgs[0])
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != u.ID || got.Tenant != "t1" || got.Meter != usage.MeterAnalyticsQueries || got.Units != 1 || !got.Time.Equal(u.Time) {
		t.Fatalf("decoded %+v, want %+v", got, u)
	}
	if msgs[0].Subject() != "usage.t1" || msgs[0].Headers().Get("Nats-Msg-Id") != u.ID {
		t.Fatalf("subject %s, msg id %q", msgs[0].Subject(), msgs[0].Headers().Get("Nats-Msg-Id"))
	}
}

func TestPublishWithoutStreamFails(t *testing.T) {
	js := connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := usage.Publish(ctx, js, usage.NewUnit("t1", usage.MeterAnalyticsQueries, time.Now())); err == nil {
		t.Fatal("publish without the stream succeeded: the unit is stored nowhere")
	}
}

func TestPublishRefusesInvalidUnits(t *testing.T) {
	js := connect(t)
	ctx := context.Background()
	if _, err := usage.EnsureStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	good := usage.NewUnit("t1", usage.MeterAnalyticsQueries, time.Now())
	for name, change := range map[string]func(*usage.Unit){
		"no id":         func(u *usage.Unit) { u.ID = "" },
		"wildcard":      func(u *usage.Unit) { u.Tenant = "t1.>" },
		"no tenant":     func(u *usage.Unit) { u.Tenant = "" },
		"unknown meter": func(u *usage.Unit) { u.Meter = "events_accepted_x" },
		"no units":      func(u *usage.Unit) { u.Units = 0 },
		"no time":       func(u *usage.Unit) { u.Time = time.Time{} },
	} {
		u := good
		change(&u)
		if err := usage.Publish(ctx, js, u); err == nil {
			t.Errorf("%s: published", name)
		}
	}
	if n := natstest.StreamMsgs(t, js, usage.StreamName); n != 0 {
		t.Fatalf("stream holds %d messages", n)
	}
}

func TestDecodeRefusesForeignTenant(t *testing.T) {
	js := connect(t)
	ctx := context.Background()
	if _, err := usage.EnsureStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	// A publisher allowed usage.t1 claims t2's unit in the body.
	body, _ := json.Marshal(usage.NewUnit("t2", usage.MeterAnalyticsQueries, time.Now()))
	if _, err := js.Publish(ctx, "usage.t1", body); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "usage.t1", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	msgs := fetchAll(t, js)
	if len(msgs) != 2 {
		t.Fatalf("%d messages", len(msgs))
	}
	if _, err := usage.Decode(msgs[0]); err == nil || !strings.Contains(err.Error(), "does not match subject") {
		t.Fatalf("decode of a body naming another tenant: %v", err)
	}
	if _, err := usage.Decode(msgs[1]); err == nil {
		t.Fatal("decode of a broken body succeeded")
	}
}

// TestPublishAllGroupsAndDecodes: units go out one message per tenant and at most
// MaxUnitsPerMessage units; DecodeAll gives each back once; the same units published again
// (a retry, a redelivered set) store nothing more; a message naming another tenant inside its
// array is refused whole.
func TestPublishAllGroupsAndDecodes(t *testing.T) {
	js := connect(t)
	ctx := context.Background()
	if _, err := usage.EnsureStream(ctx, js); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var units []usage.Unit
	for i := range usage.MaxUnitsPerMessage + 5 {
		units = append(units, usage.Unit{ID: fmt.Sprintf("ea-%d-x", i), Tenant: "t1", Meter: usage.MeterEventsAccepted, Units: 3, Time: now})
	}
	units = append(units, usage.Unit{ID: "ea-q", Tenant: "t2", Meter: usage.MeterEventsAccepted, Units: 7, Time: now})
	for range 2 {
		if err := usage.PublishAll(ctx, js, units); err != nil {
			t.Fatal(err)
		}
	}
	msgs := fetchAll(t, js)
	if len(msgs) != 3 {
		t.Fatalf("%d messages, want 3 (t1 in two, t2 in one; the repeat dropped)", len(msgs))
	}
	got := map[string]int64{}
	for _, m := range msgs {
		us, err := usage.DecodeAll(m)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range us {
			got[u.Tenant] += u.Units
		}
	}
	if got["t1"] != 3*int64(usage.MaxUnitsPerMessage+5) || got["t2"] != 7 {
		t.Fatalf("units per tenant %v", got)
	}

	forged := fmt.Sprintf(`[{"id":"a","tenant":"t1","meter":%q,"units":1,"time":%q},{"id":"b","tenant":"t2","meter":%q,"units":1,"time":%q}]`,
		usage.MeterEventsAccepted, now.Format(time.RFC3339Nano), usage.MeterEventsAccepted, now.Format(time.RFC3339Nano))
	if _, err := js.Publish(ctx, usage.Subject("t1"), []byte(forged)); err != nil {
		t.Fatal(err)
	}
	all := fetchAll(t, js)
	if _, err := usage.DecodeAll(all[len(all)-1]); err == nil {
		t.Fatal("a message of t1 carrying a unit of t2 was decoded")
	}
}
