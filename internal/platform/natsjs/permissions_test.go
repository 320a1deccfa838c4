package natsjs_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
)

// connectAs connects as u and records the server's asynchronous errors (permission violations).
func connectAs(t *testing.T, url string, u natstest.User) (jetstream.JetStream, func() []error) {
	t.Helper()
	var mu sync.Mutex
	var errs []error
	nc, err := nats.Connect(url, nats.UserInfo(u.Name, u.Password), nats.CustomInboxPrefix(natsjs.InboxPrefix(u.Name)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}))
	if err != nil {
		t.Fatalf("connect as %s: %v", u.Name, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js, func() []error { mu.Lock(); defer mu.Unlock(); return append([]error(nil), errs...) }
}

// The real deploy/nats.conf: ingest publishes, the writer consumes, nobody else does either, and
// nobody connects without credentials.
func TestNATSUsersHaveOnlyTheirRights(t *testing.T) {
	srv, users := natstest.StartSecured(t)
	url := srv.ClientURL()
	ctx := context.Background()
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 2*time.Second) }

	if nc, err := nats.Connect(url); err == nil {
		nc.Close()
		t.Fatal("an anonymous client connected")
	}
	if nc, err := nats.Connect(url, nats.UserInfo("ingest", "wrong")); err == nil {
		nc.Close()
		t.Fatal("a wrong password was accepted")
	}

	// ingest: creates the streams (it does so at start) and publishes a batch.
	nc, ingestJS, err := natsjs.Connect(url, "ingest", natsjs.WithUser(users.Ingest.Name, users.Ingest.Password))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := natsjs.EnsureStreams(ctx, ingestJS, natsjs.DefaultStream); err != nil {
		t.Fatalf("ingest creates the streams: %v", err)
	}
	if _, err := natsjs.Publish(ctx, ingestJS, "tenant-1", "b1", []byte("batch"), nil); err != nil {
		t.Fatalf("ingest publishes: %v", err)
	}

	// The writer: its consumer, pull, ack, dead-letter.
	writerJS, _ := connectAs(t, url, users.Analytics)
	if err := writerJS.DeleteConsumer(ctx, natsjs.StreamName, "analytics-writer"); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("writer deletes its consumer: %v", err)
	}
	cons, err := writerJS.CreateOrUpdateConsumer(ctx, natsjs.StreamName, jetstream.ConsumerConfig{Durable: "analytics-writer", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("writer creates its consumer: %v", err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range batch.Messages() {
		got++
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("writer acks: %v", err)
		}
	}
	if got != 1 || batch.Error() != nil {
		t.Fatalf("writer fetched %d messages (%v), want 1", got, batch.Error())
	}
	if _, err := writerJS.Publish(ctx, natsjs.DeadLetterSubj, []byte("poison")); err != nil {
		t.Fatalf("writer dead-letters: %v", err)
	}
	if _, err := writerJS.Stream(ctx, natsjs.StreamName); err != nil {
		t.Fatalf("writer reads the stream's info: %v", err)
	}

	// Nobody but ingest publishes events.
	before := streamMsgs(t, url, users.Admin)
	wctx, cancel := short()
	if _, err := writerJS.Publish(wctx, natsjs.SubjectPrefix+"tenant-1", []byte("forged")); err == nil {
		t.Fatal("the writer's user published an event batch")
	}
	cancel()
	if after := streamMsgs(t, url, users.Admin); after != before {
		t.Fatalf("stream holds %d messages after a forbidden publish, had %d", after, before)
	}

	// ingest neither consumes nor makes other consumers, and cannot read the writer's inbox.
	ingestRaw, ingestErrs := connectAs(t, url, users.Ingest)
	ictx, cancel := short()
	if _, err := ingestRaw.CreateOrUpdateConsumer(ictx, natsjs.StreamName, jetstream.ConsumerConfig{Durable: "sneaky", AckPolicy: jetstream.AckExplicitPolicy}); err == nil {
		t.Fatal("ingest created a consumer")
	}
	cancel()
	ictx, cancel = short()
	if _, err := ingestRaw.Consumer(ictx, natsjs.StreamName, "analytics-writer"); err == nil {
		t.Fatal("ingest read the writer's consumer")
	}
	cancel()
	sub, err := ingestRaw.Conn().SubscribeSync(natsjs.SubjectPrefix + ">")
	if err == nil {
		_ = ingestRaw.Conn().Flush()
		_, _ = sub.NextMsg(200 * time.Millisecond)
	}
	if !hasPermissionError(ingestErrs()) {
		t.Fatalf("ingest subscribed to events.> without a permission violation (errors: %v)", ingestErrs())
	}
	// The writer may not create other consumers either (e.g. to read another stream's position).
	wctx, cancel = short()
	if _, err := writerJS.CreateOrUpdateConsumer(wctx, natsjs.StreamName, jetstream.ConsumerConfig{Durable: "other", AckPolicy: jetstream.AckExplicitPolicy}); err == nil {
		t.Fatal("the writer's user created another consumer")
	}
	cancel()
}

func hasPermissionError(errs []error) bool {
	for _, err := range errs {
		if errors.Is(err, nats.ErrPermissionViolation) {
			return true
		}
	}
	return false
}

func streamMsgs(t *testing.T, url string, admin natstest.User) uint64 {
	t.Helper()
	js, _ := connectAs(t, url, admin)
	s, err := js.Stream(context.Background(), natsjs.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}
