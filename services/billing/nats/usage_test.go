package nats

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/services/billing"
)

// publishUnit publishes a unit as analytics does (the plan's JSON, Nats-Msg-Id = its id).
func publishUnit(ctx context.Context, t *testing.T, js jetstream.JetStream, subjectTenant string, u unitJSON) {
	t.Helper()
	b, _ := json.Marshal(u)
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: usageSubjectPrefix + subjectTenant, Data: b}, jetstream.WithMsgID(u.ID)); err != nil {
		t.Fatal(err)
	}
}

func TestUsageConsumerCountsEveryUnitOnceAcrossACrashBeforeTheAck(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js, store := connect(t), openStore(t)
	// The stream as internal/platform/usage configures it.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: UsageStream, Subjects: []string{usageSubjectPrefix + ">"},
		Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy, MaxAge: 7 * 24 * time.Hour, Duplicates: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)
	want := map[string]int64{}
	for i := range 30 {
		tenant := fmt.Sprint("t", i%2)
		publishUnit(ctx, t, js, tenant, unitJSON{ID: fmt.Sprint("q", i), Tenant: tenant, Meter: "analytics_queries", Units: 1, Time: at})
		want[tenant]++
	}
	publishUnit(ctx, t, js, "t0", unitJSON{ID: "q0", Tenant: "t0", Meter: "analytics_queries", Units: 1, Time: at})     // a retried publish
	publishUnit(ctx, t, js, "t0", unitJSON{ID: "forged", Tenant: "t1", Meter: "analytics_queries", Units: 1, Time: at}) // another tenant's
	publishUnit(ctx, t, js, "t0", unitJSON{ID: "gauge", Tenant: "t0", Meter: "storage_bytes", Units: 5, Time: at})      // not a unit meter

	killed := make(chan struct{})
	first := NewUsageConsumer(js, store, ConsumerConfig{Fetch: 10, AckWait: time.Second}, quiet)
	var once sync.Once
	first.beforeAck = func() bool { once.Do(func() { close(killed) }); return false }
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()
	<-killed
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	second := NewUsageConsumer(js, store, ConsumerConfig{Fetch: 10, AckWait: time.Second}, quiet)
	ctx2, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = second.Run(ctx2) }()
	counted := func() map[string]int64 {
		c, err := store.UnitCounts(ctx, billing.Day(at))
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int64{}
		for tenant, m := range c {
			out[tenant] = m[billing.AnalyticsQueries]
		}
		return out
	}
	meshtest.Within(30*time.Second, func() bool {
		return natstest.ConsumerPending(t, js, UsageStream, UsageConsumerName) == 0 && fmt.Sprint(counted()) == fmt.Sprint(want)
	})
	if got := counted(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("analytics queries %v, want %v", got, want)
	}
	if n := natstest.ConsumerPending(t, js, UsageStream, UsageConsumerName); n != 0 {
		t.Fatalf("%d units still pending", n)
	}
}
