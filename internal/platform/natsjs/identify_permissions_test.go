package natsjs_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
)

// The real deploy/nats.conf, the identify stream: ingest creates and updates it and publishes
// identify copies; delivery creates, reads, pulls from and acknowledges its own consumer, and
// follows the PRIVACY bucket, without a permission violation. Refused: delivery publishing
// anything (identify, events, a privacy key), creating, deleting or purging the stream, making
// another consumer or reading the event stream; ingest consuming the identify stream; analytics
// and the gateway publishing identify copies.
func TestNATSIdentifyStreamRights(t *testing.T) {
	srv, users := natstest.StartSecured(t)
	url := srv.ClientURL()
	ctx := context.Background()
	// A refused request gets no answer: it ends at its timeout.
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 300*time.Millisecond) }
	adminJS, _ := connectAs(t, url, users.Admin)

	// ingest at start, twice (create, then update), and a copy; the event stream too, for
	// delivery to be refused it.
	ingestJS, ingestErrs := connectAs(t, url, users.Ingest)
	for range 2 {
		if err := natsjs.EnsureIdentifyStream(ctx, ingestJS); err != nil {
			t.Fatalf("ingest creates the identify stream: %v", err)
		}
	}
	if err := natsjs.EnsureStreams(ctx, ingestJS, natsjs.DefaultStream); err != nil {
		t.Fatal(err)
	}
	if _, err := natsjs.PublishIdentify(ctx, ingestJS, "t1", "b1.identify", []byte("batch"), nil); err != nil {
		t.Fatalf("ingest publishes an identify copy: %v", err)
	}
	if _, err := natsjs.PublishPart(ctx, ingestJS, "t1", 0, "b1.0", []byte("batch"), nil); err != nil {
		t.Fatal(err)
	}

	// delivery: its consumer (twice: a restart), pulled and acknowledged; the privacy bucket.
	deliveryJS, deliveryErrs := connectAs(t, url, users.Delivery)
	var cons jetstream.Consumer
	for range 2 {
		var err error
		if cons, err = deliveryJS.CreateOrUpdateConsumer(ctx, natsjs.IdentifyStream, natsjs.IdentifyConsumerConfig()); err != nil {
			t.Fatalf("delivery creates its consumer: %v", err)
		}
	}
	if _, err := deliveryJS.Consumer(ctx, natsjs.IdentifyStream, natsjs.IdentifyConsumerName); err != nil {
		t.Fatalf("delivery reads its consumer's info: %v", err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range batch.Messages() {
		got++
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("delivery acknowledges: %v", err)
		}
	}
	if got != 1 || batch.Error() != nil {
		t.Fatalf("delivery fetched %d messages (%v), want 1", got, batch.Error())
	}
	kv, err := privacy.OpenBucket(ctx, deliveryJS)
	if err != nil {
		t.Fatalf("delivery opens the privacy bucket: %v", err)
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	if _, err := privacy.Watch(watchCtx, kv, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("delivery watches the privacy bucket: %v", err)
	}
	stopWatch()
	if hasPermissionError(deliveryErrs()) || hasPermissionError(ingestErrs()) {
		t.Fatalf("permitted use met permission violations (delivery: %v; ingest: %v)", deliveryErrs(), ingestErrs())
	}

	// Refused to delivery: publishing, the stream itself, other consumers, the event stream.
	identifyBefore := natstest.StreamMsgs(t, adminJS, natsjs.IdentifyStream)
	eventsBefore := natstest.StreamMsgs(t, adminJS, natsjs.StreamName)
	for _, subject := range []string{natsjs.IdentifySubject("t1"), natsjs.Subject("t1", 0), natsjs.DeadLetterSubj, "$KV." + privacy.Bucket + "." + privacy.PolicyKey("t1")} {
		wctx, cancel := short()
		if _, err := deliveryJS.Publish(wctx, subject, []byte("forged")); err == nil {
			t.Errorf("delivery published on %s", subject)
		}
		cancel()
	}
	wctx, cancel := short()
	if err := natsjs.EnsureIdentifyStream(wctx, deliveryJS); err == nil {
		t.Error("delivery created or updated the identify stream")
	}
	cancel()
	wctx, cancel = short()
	if err := deliveryJS.DeleteStream(wctx, natsjs.IdentifyStream); err == nil {
		t.Error("delivery deleted the identify stream")
	}
	cancel()
	if _, err := deliveryJS.Conn().Request("$JS.API.STREAM.PURGE."+natsjs.IdentifyStream, nil, 300*time.Millisecond); err == nil {
		t.Error("delivery purged the identify stream")
	}
	for _, cfg := range []jetstream.ConsumerConfig{
		{Durable: "sneaky", FilterSubject: natsjs.IdentifySubjectPrefix + ">", AckPolicy: jetstream.AckExplicitPolicy},
		{Durable: natsjs.IdentifyConsumerName, FilterSubjects: []string{"identify.t1", "identify.t2"}, AckPolicy: jetstream.AckExplicitPolicy},
	} {
		wctx, cancel := short()
		if _, err := deliveryJS.CreateOrUpdateConsumer(wctx, natsjs.IdentifyStream, cfg); err == nil {
			t.Errorf("delivery created consumer %+v", cfg)
		}
		cancel()
	}
	wctx, cancel = short()
	if err := deliveryJS.DeleteConsumer(wctx, natsjs.IdentifyStream, natsjs.IdentifyConsumerName); err == nil {
		t.Error("delivery deleted its consumer")
	}
	cancel()
	wctx, cancel = short()
	if _, err := deliveryJS.Stream(wctx, natsjs.StreamName); err == nil {
		t.Error("delivery read the event stream's info")
	}
	cancel()
	for _, cfg := range []jetstream.ConsumerConfig{
		{Durable: "delivery-events", FilterSubject: natsjs.SubjectPrefix + ">", AckPolicy: jetstream.AckExplicitPolicy},
		natsjs.WriterConsumerConfig(0, 1),
	} {
		wctx, cancel := short()
		if _, err := deliveryJS.CreateOrUpdateConsumer(wctx, natsjs.StreamName, cfg); err == nil {
			t.Errorf("delivery created consumer %s of the event stream", cfg.Durable)
		}
		cancel()
	}
	if _, err := deliveryJS.Conn().Request("$JS.API.CONSUMER.MSG.NEXT.EVENTS."+natsjs.WriterConsumerName(0), []byte(`{"batch":1,"no_wait":true}`), 300*time.Millisecond); err == nil {
		t.Error("delivery pulled from a writer's consumer")
	}
	if sub, err := deliveryJS.Conn().SubscribeSync(natsjs.SubjectPrefix + ">"); err == nil {
		_ = deliveryJS.Conn().Flush()
		_, _ = sub.NextMsg(200 * time.Millisecond)
	}

	// Refused to ingest: consuming the identify stream. To analytics and the gateway:
	// publishing identify copies.
	ingestRaw, ingestRawErrs := connectAs(t, url, users.Ingest)
	wctx, cancel = short()
	if _, err := ingestRaw.CreateOrUpdateConsumer(wctx, natsjs.IdentifyStream, natsjs.IdentifyConsumerConfig()); err == nil {
		t.Error("ingest created delivery's consumer")
	}
	cancel()
	if _, err := ingestRaw.Conn().Request("$JS.API.CONSUMER.MSG.NEXT.IDENTIFY."+natsjs.IdentifyConsumerName, []byte(`{"batch":1,"no_wait":true}`), 300*time.Millisecond); err == nil {
		t.Error("ingest pulled from delivery's consumer")
	}
	analyticsJS, analyticsErrs := connectAs(t, url, users.Analytics)
	gatewayJS, gatewayErrs := connectAs(t, url, users.Gateway)
	for name, js := range map[string]jetstream.JetStream{"analytics": analyticsJS, "gateway": gatewayJS} {
		wctx, cancel := short()
		if _, err := natsjs.PublishIdentify(wctx, js, "t1", "forged", []byte("forged"), nil); err == nil {
			t.Errorf("%s published an identify copy", name)
		}
		cancel()
	}

	if n := natstest.StreamMsgs(t, adminJS, natsjs.IdentifyStream); n != identifyBefore {
		t.Errorf("the identify stream holds %d messages after forbidden publishes, had %d", n, identifyBefore)
	}
	if n := natstest.StreamMsgs(t, adminJS, natsjs.StreamName); n != eventsBefore {
		t.Errorf("the event stream holds %d messages after forbidden publishes, had %d", n, eventsBefore)
	}
	if s, err := adminJS.Stream(ctx, natsjs.IdentifyStream); err != nil || s.CachedInfo().Config.MaxBytes != natsjs.IdentifyStreamConfig().MaxBytes {
		t.Errorf("the identify stream after forbidden changes: %v", err)
	}
	if _, err := adminJS.Consumer(ctx, natsjs.IdentifyStream, natsjs.IdentifyConsumerName); err != nil {
		t.Errorf("delivery's consumer after forbidden changes: %v", err)
	}
	for name, errs := range map[string]func() []error{"delivery": deliveryErrs, "ingest": ingestRawErrs, "analytics": analyticsErrs, "gateway": gatewayErrs} {
		if !hasPermissionError(errs()) {
			t.Errorf("%s's forbidden requests met no permission violation: %v", name, errs())
		}
	}
}
