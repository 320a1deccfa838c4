package natsjs_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
)

// The names deploy/nats.conf gives the usage stream and the quotas bucket (issue 18; their
// packages, internal/platform/usage and internal/platform/quota, define them too).
const (
	usageStream   = "USAGE"
	usageConsumer = "billing-usage"
	quotasBucket  = "QUOTAS"
)

// watchAll watches every key of kv until the initial values are delivered, then stops: the
// create, flow control and delete of a watch's consumer.
func watchAll(t *testing.T, kv jetstream.KeyValue) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := kv.WatchAll(ctx)
	if err != nil {
		t.Fatalf("watch %s: %v", kv.Bucket(), err)
	}
	defer func() { _ = w.Stop() }()
	got := map[string]string{}
	for e := range w.Updates() {
		if e == nil {
			return got
		}
		if e.Operation() == jetstream.KeyValuePut {
			got[e.Key()] = string(e.Value())
		}
	}
	t.Fatalf("watch of %s ended before its initial values: %v", kv.Bucket(), ctx.Err())
	return nil
}

// The real deploy/nats.conf, issue 18's usage metering: analytics and billing create the stream
// USAGE when missing, analytics records query runs on usage.<tenant>, billing reads them
// through its own consumer billing-usage; billing creates the QUOTAS bucket and writes it, and
// reads the event stream's info (no consumer of it: a work queue only the writers consume);
// ingest and delivery read
// and watch the bucket — all without a permission violation. Refused: billing publishing
// anything but quota keys, updating or deleting the stream, making another consumer; anyone
// but analytics recording usage; anyone but billing creating the bucket or writing a quota;
// anyone changing the bucket; analytics, the gateway and dsr reading quotas.
func TestNATSUsageAndQuotaRights(t *testing.T) {
	srv, users := natstest.StartSecured(t)
	url := srv.ClientURL()
	ctx := context.Background()
	// A refused request gets no answer: it ends at its timeout.
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 300*time.Millisecond) }
	adminJS, _ := connectAs(t, url, users.Admin)
	// usage.StreamConfig's settings that matter here.
	usageConfig := jetstream.StreamConfig{Name: usageStream, Subjects: []string{"usage.>"}, Storage: jetstream.FileStorage,
		MaxAge: 7 * 24 * time.Hour, Duplicates: 10 * time.Minute}

	// analytics and billing at start, whoever is first (usage.EnsureStream: create when missing,
	// which answers with the stream when it exists with the same settings), then a query run.
	analyticsJS, analyticsErrs := connectAs(t, url, users.Analytics)
	billingJS, billingErrs := connectAs(t, url, users.Billing)
	for name, js := range map[string]jetstream.JetStream{"analytics": analyticsJS, "billing": billingJS} {
		if _, err := js.CreateStream(ctx, usageConfig); err != nil {
			t.Fatalf("%s creates the usage stream: %v", name, err)
		}
		if _, err := js.Stream(ctx, usageStream); err != nil {
			t.Fatalf("%s reads the usage stream's info: %v", name, err)
		}
	}
	if _, err := analyticsJS.Publish(ctx, "usage.t1", []byte(`{"id":"q1","tenant":"t1","meter":"analytics_queries","units":1}`), jetstream.WithMsgID("q1")); err != nil {
		t.Fatalf("analytics records a query run: %v", err)
	}

	// billing: its usage consumer (twice: a restart), pulled and acknowledged.
	pullOne := func(who string, cons jetstream.Consumer) {
		t.Helper()
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatalf("%s acknowledges: %v", who, err)
			}
		}
		if got != 1 || batch.Error() != nil {
			t.Fatalf("%s fetched %d messages (%v), want 1", who, got, batch.Error())
		}
	}
	var cons jetstream.Consumer
	for range 2 {
		var err error
		if cons, err = billingJS.CreateOrUpdateConsumer(ctx, usageStream, jetstream.ConsumerConfig{Durable: usageConsumer,
			FilterSubject: "usage.>", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatalf("billing creates its usage consumer: %v", err)
		}
	}
	if _, err := billingJS.Consumer(ctx, usageStream, usageConsumer); err != nil {
		t.Fatalf("billing reads its usage consumer's info: %v", err)
	}
	pullOne("billing (usage)", cons)

	// billing on the event stream: its info (the oldest batch bounds the quotas' as-of), and no
	// consumer of it.
	ingestJS, ingestErrs := connectAs(t, url, users.Ingest)
	if err := natsjs.EnsureStreams(ctx, ingestJS, natsjs.DefaultStream); err != nil {
		t.Fatal(err)
	}
	if _, err := natsjs.PublishPart(ctx, ingestJS, "t1", 0, "b1", []byte("batch"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := billingJS.Stream(ctx, natsjs.StreamName); err != nil {
		t.Fatalf("billing reads the event stream's info: %v", err)
	}
	{
		other, _ := connectAs(t, url, users.Billing) // a refusal on its own connection
		c, cancel := short()
		if _, err := other.CreateOrUpdateConsumer(c, natsjs.StreamName, jetstream.ConsumerConfig{Durable: "billing-metering",
			FilterSubject: natsjs.SubjectPrefix + ">", AckPolicy: jetstream.AckExplicitPolicy}); err == nil {
			t.Fatal("billing created a consumer of the event stream: it could take batches from the writers")
		}
		cancel()
	}

	// The quotas: billing creates the bucket (quota.OpenBucket), writes keys and deletes one;
	// ingest and delivery open it, read and watch.
	deliveryJS, deliveryErrs := connectAs(t, url, users.Delivery)
	kvConfig := jetstream.KeyValueConfig{Bucket: quotasBucket, History: 1, Storage: jetstream.FileStorage}
	if _, err := billingJS.CreateKeyValue(ctx, kvConfig); err != nil {
		t.Fatalf("billing creates the quotas bucket: %v", err)
	}
	billingKV, err := billingJS.KeyValue(ctx, quotasBucket)
	if err != nil {
		t.Fatalf("billing opens the quotas bucket: %v", err)
	}
	deliveryKV, err := deliveryJS.KeyValue(ctx, quotasBucket)
	if err != nil {
		t.Fatalf("delivery opens the quotas bucket: %v", err)
	}
	ingestKV, err := ingestJS.KeyValue(ctx, quotasBucket)
	if err != nil {
		t.Fatalf("ingest opens the quotas bucket: %v", err)
	}
	const quota = `{"as_of":"2026-11-29T12:00:00Z","quotas":[{"meter":"events_accepted","limit":1000,"hard":true,"period":"day","used":1}]}`
	for _, key := range []string{"quota.t1", "quota.t2"} {
		if _, err := billingKV.Put(ctx, key, []byte(quota)); err != nil {
			t.Fatalf("billing puts %s: %v", key, err)
		}
	}
	if err := billingKV.Delete(ctx, "quota.t2"); err != nil {
		t.Fatalf("billing deletes a key: %v", err)
	}
	if _, err := billingKV.Get(ctx, "quota.t1"); err != nil {
		t.Fatalf("billing reads a key: %v", err)
	}
	for name, kv := range map[string]jetstream.KeyValue{"ingest": ingestKV, "delivery": deliveryKV, "billing": billingKV} {
		if got := watchAll(t, kv); len(got) != 1 || got["quota.t1"] != quota {
			t.Errorf("%s watches the quotas %v, want quota.t1 alone", name, got)
		}
		if e, err := kv.Get(ctx, "quota.t1"); err != nil || string(e.Value()) != quota {
			t.Errorf("%s reads a key: %v", name, err)
		}
	}
	for name, errs := range map[string]func() []error{"analytics": analyticsErrs, "billing": billingErrs, "ingest": ingestErrs, "delivery": deliveryErrs} {
		if hasPermissionError(errs()) {
			t.Errorf("%s's permitted use met permission violations: %v", name, errs())
		}
	}

	// Refused to billing: publishing (usage, events, dead letters, privacy keys, audit), the
	// usage stream itself, other consumers, another bucket.
	usageBefore := natstest.StreamMsgs(t, adminJS, usageStream)
	eventsBefore := natstest.StreamMsgs(t, adminJS, natsjs.StreamName)
	billingRaw, billingRawErrs := connectAs(t, url, users.Billing)
	for _, subject := range []string{"usage.t1", natsjs.Subject("t1", 0), natsjs.DeadLetterSubj, "$KV.PRIVACY.policy.t1", "audit.billing"} {
		wctx, cancel := short()
		if _, err := billingRaw.Publish(wctx, subject, []byte("forged")); err == nil {
			t.Errorf("billing published on %s", subject)
		}
		cancel()
	}
	wctx, cancel := short()
	if err := billingRaw.DeleteStream(wctx, usageStream); err == nil {
		t.Error("billing deleted the usage stream")
	}
	cancel()
	if _, err := billingRaw.Conn().Request("$JS.API.STREAM.PURGE."+usageStream, nil, 300*time.Millisecond); err == nil {
		t.Error("billing purged the usage stream")
	}
	for stream, name := range map[string]string{usageStream: "sneaky", natsjs.StreamName: natsjs.WriterConsumerName(0)} {
		wctx, cancel := short()
		if _, err := billingRaw.CreateOrUpdateConsumer(wctx, stream, jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckExplicitPolicy}); err == nil {
			t.Errorf("billing created consumer %s of %s", name, stream)
		}
		cancel()
	}
	if _, err := billingRaw.Conn().Request("$JS.API.CONSUMER.MSG.NEXT.EVENTS."+natsjs.WriterConsumerName(0), []byte(`{"batch":1,"no_wait":true}`), 300*time.Millisecond); err == nil {
		t.Error("billing pulled from a writer's consumer")
	}
	wctx, cancel = short()
	if _, err := billingRaw.CreateKeyValue(wctx, jetstream.KeyValueConfig{Bucket: "OTHER"}); err == nil {
		t.Error("billing created another bucket")
	}
	cancel()
	wctx, cancel = short()
	if err := billingRaw.DeleteKeyValue(wctx, quotasBucket); err == nil {
		t.Error("billing deleted the quotas bucket")
	}
	cancel()

	// Refused to everyone, billing too: updating the usage stream or the quotas bucket.
	gatewayJS, gatewayErrs := connectAs(t, url, users.Gateway)
	dsrJS, dsrErrs := connectAs(t, url, users.DSR)
	for name, js := range map[string]jetstream.JetStream{"billing": billingRaw, "analytics": analyticsJS, "ingest": ingestJS, "delivery": deliveryJS} {
		updated := usageConfig
		updated.MaxAge = time.Hour
		wctx, cancel := short()
		if _, err := js.UpdateStream(wctx, updated); err == nil {
			t.Errorf("%s updated the usage stream", name)
		}
		cancel()
		wctx, cancel = short()
		if _, err := js.UpdateKeyValue(wctx, jetstream.KeyValueConfig{Bucket: quotasBucket, History: 5}); err == nil {
			t.Errorf("%s updated the quotas bucket", name)
		}
		cancel()
	}

	// Refused to everyone else: recording usage (all but analytics), consuming it, creating the
	// bucket, writing a quota or deleting the bucket; analytics, the gateway and dsr reading quotas.
	others := map[string]jetstream.JetStream{"ingest": ingestJS, "delivery": deliveryJS, "gateway": gatewayJS, "dsr": dsrJS, "analytics": analyticsJS}
	for name, js := range others {
		if name != "analytics" {
			wctx, cancel := short()
			if _, err := js.Publish(wctx, "usage.t1", []byte("forged")); err == nil {
				t.Errorf("%s recorded usage", name)
			}
			cancel()
		}
		wctx, cancel := short()
		if _, err := js.CreateOrUpdateConsumer(wctx, usageStream, jetstream.ConsumerConfig{Durable: usageConsumer, FilterSubject: "usage.>", AckPolicy: jetstream.AckExplicitPolicy}); err == nil {
			t.Errorf("%s created billing's usage consumer", name)
		}
		cancel()
		_, _ = js.Conn().Request("$KV."+quotasBucket+".quota.t1", []byte(`{"quotas":[]}`), 300*time.Millisecond)
		wctx, cancel = short()
		if _, err := js.Publish(wctx, "$KV."+quotasBucket+".quota.t3", []byte("forged")); err == nil {
			t.Errorf("%s wrote a quota", name)
		}
		cancel()
		wctx, cancel = short()
		if _, err := js.CreateKeyValue(wctx, kvConfig); err == nil {
			t.Errorf("%s created the quotas bucket", name)
		}
		cancel()
		wctx, cancel = short()
		if err := js.DeleteKeyValue(wctx, quotasBucket); err == nil {
			t.Errorf("%s deleted the quotas bucket", name)
		}
		cancel()
	}
	for name, js := range map[string]jetstream.JetStream{"analytics": analyticsJS, "gateway": gatewayJS, "dsr": dsrJS} {
		wctx, cancel := short()
		if _, err := js.KeyValue(wctx, quotasBucket); err == nil {
			t.Errorf("%s opened the quotas bucket", name)
		}
		cancel()
		if _, err := js.Conn().Request("$JS.API.DIRECT.GET.KV_"+quotasBucket+".$KV."+quotasBucket+".quota.t1", nil, 300*time.Millisecond); err == nil {
			t.Errorf("%s read a quota", name)
		}
	}

	if n := natstest.StreamMsgs(t, adminJS, usageStream); n != usageBefore {
		t.Errorf("the usage stream holds %d messages after forbidden publishes, had %d", n, usageBefore)
	}
	if n := natstest.StreamMsgs(t, adminJS, natsjs.StreamName); n != eventsBefore {
		t.Errorf("the event stream holds %d messages after forbidden publishes, had %d", n, eventsBefore)
	}
	adminKV, err := adminJS.KeyValue(ctx, quotasBucket)
	if err != nil {
		t.Fatalf("the quotas bucket after forbidden changes: %v", err)
	}
	if e, err := adminKV.Get(ctx, "quota.t1"); err != nil || string(e.Value()) != quota {
		t.Errorf("quota.t1 after forged writes: %v", err)
	}
	if _, err := adminKV.Get(ctx, "quota.t3"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("a forged quota is in the bucket: %v", err)
	}
	if _, err := adminJS.Consumer(ctx, usageStream, usageConsumer); err != nil {
		t.Errorf("billing's usage consumer after forbidden changes: %v", err)
	}
	if s, err := adminJS.Stream(ctx, usageStream); err != nil || s.CachedInfo().Config.MaxAge != usageConfig.MaxAge {
		t.Errorf("the usage stream after forbidden changes: %v", err)
	}
	if s, err := adminJS.Stream(ctx, "KV_"+quotasBucket); err != nil || s.CachedInfo().Config.MaxMsgsPerSubject != 1 {
		t.Errorf("the quotas bucket after forbidden changes: %v", err)
	}
	for name, errs := range map[string]func() []error{"billing": billingRawErrs, "ingest": ingestErrs, "delivery": deliveryErrs,
		"gateway": gatewayErrs, "dsr": dsrErrs, "analytics": analyticsErrs} {
		if !hasPermissionError(errs()) {
			t.Errorf("%s's forbidden requests met no permission violation: %v", name, errs())
		}
	}
}
