package natsjs_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	auditnats "github.com/campaignmesh/campaignmesh/internal/platform/audit/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
)

// connectAs connects as u and records the server's asynchronous errors (permission violations).
func connectAs(t *testing.T, url string, u natstest.User) (jetstream.JetStream, func() []error) {
	_, js, errs := natstest.ConnectAs(t, url, u)
	return js, errs
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
	if _, err := natsjs.PublishPart(ctx, ingestJS, "tenant-1", 0, "b1", []byte("batch"), nil); err != nil {
		t.Fatalf("ingest publishes: %v", err)
	}

	// The writer: its consumer, pull, ack, dead-letter.
	writerJS, _ := connectAs(t, url, users.Analytics)
	if err := writerJS.DeleteConsumer(ctx, natsjs.StreamName, natsjs.WriterConsumerName(0)); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("writer deletes its consumer: %v", err)
	}
	cons, err := writerJS.CreateOrUpdateConsumer(ctx, natsjs.StreamName, natsjs.WriterConsumerConfig(0, 1))
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

	// Nobody but ingest publishes events, and ingest only on partitions' subjects.
	before := streamMsgs(t, url, users.Admin)
	for _, subject := range []string{natsjs.Subject("tenant-1", 1), natsjs.SubjectPrefix + "tenant-1"} {
		wctx, cancel := short()
		if _, err := writerJS.Publish(wctx, subject, []byte("forged")); err == nil {
			t.Fatalf("the writer's user published an event batch on %s", subject)
		}
		cancel()
	}
	wctx, cancel := short()
	if _, err := natsjs.Publish(wctx, ingestJS, "tenant-1", "old-form", []byte("batch"), nil); err == nil {
		t.Fatal("ingest published on the subject of the form before partitions")
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
	if _, err := ingestRaw.Consumer(ictx, natsjs.StreamName, natsjs.WriterConsumerName(0)); err == nil {
		t.Fatal("ingest read the writer's consumer")
	}
	cancel()
	ictx, cancel = short()
	if _, err := ingestRaw.CreateOrUpdateConsumer(ictx, natsjs.StreamName, natsjs.WriterConsumerConfig(1, 2)); err == nil {
		t.Fatal("ingest created a writer's consumer")
	}
	cancel()
	ictx, cancel = short()
	if _, err := natsjs.AcquireWriterLease(ictx, ingestRaw, 0, "ingest"); err == nil {
		t.Fatal("ingest took a writer's lease")
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

// The real deploy/nats.conf, writers: the analytics user creates (in each API form), pulls,
// acknowledges and deletes the writers' consumers analytics-writer-0…7, deletes the consumer
// of the single writer before partitions, and keeps its leases in EVENTS_WRITERS; nothing
// else: no other consumer, no other bucket, not the stream itself. Nobody else touches leases.
func TestNATSWritersHaveOnlyTheirRights(t *testing.T) {
	srv, users := natstest.StartSecured(t)
	url := srv.ClientURL()
	ctx := context.Background()
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 2*time.Second) }
	adminJS, _ := connectAs(t, url, users.Admin)
	ingestJS, _ := connectAs(t, url, users.Ingest)
	if err := natsjs.EnsureStreams(ctx, ingestJS, natsjs.DefaultStream); err != nil {
		t.Fatal(err)
	}
	if _, err := natsjs.PublishPart(ctx, ingestJS, "tenant-1", 1, "b1", []byte("batch"), nil); err != nil {
		t.Fatal(err)
	}
	// The single writer's consumer of a run before partitions.
	if _, err := adminJS.CreateOrUpdateConsumer(ctx, natsjs.StreamName, jetstream.ConsumerConfig{Durable: natsjs.LegacyWriterConsumer, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	writerJS, writerErrs := connectAs(t, url, users.Analytics)

	// Kept: removing stale consumers, creating with several filters, with one (in the subject),
	// and in the older form; pulling and acknowledging.
	if err := natsjs.RemoveStaleWriterConsumers(ctx, writerJS, 0, 2); err != nil {
		t.Fatalf("writer removes the stale consumers: %v", err)
	}
	if _, err := adminJS.Consumer(ctx, natsjs.StreamName, natsjs.LegacyWriterConsumer); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("the v1 consumer after the writer removed it: %v", err)
	}
	if _, err := writerJS.CreateOrUpdateConsumer(ctx, natsjs.StreamName, natsjs.WriterConsumerConfig(0, 2)); err != nil {
		t.Fatalf("writer 0 of 2 creates its consumer (several filters): %v", err)
	}
	one := natsjs.WriterConsumerConfig(1, 2)
	one.FilterSubjects, one.FilterSubject = nil, "events.*.1"
	cons, err := writerJS.CreateOrUpdateConsumer(ctx, natsjs.StreamName, one)
	if err != nil {
		t.Fatalf("writer 1 creates its consumer (one filter, in the request's subject): %v", err)
	}
	legacy := `{"stream_name":"EVENTS","config":{"durable_name":"analytics-writer-3","filter_subject":"events.*.3","ack_policy":"explicit","deliver_policy":"all"}}`
	reply, err := writerJS.Conn().Request("$JS.API.CONSUMER.DURABLE.CREATE.EVENTS.analytics-writer-3", []byte(legacy), 2*time.Second)
	if err != nil {
		t.Fatalf("writer 3 creates its consumer in the older form: %v", err)
	}
	if strings.Contains(string(reply.Data), `"error"`) {
		t.Fatalf("writer 3 creates its consumer in the older form: %s", reply.Data)
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
	if got != 1 {
		t.Fatalf("writer 1 fetched %d messages (%v), want 1", got, batch.Error())
	}
	if err := natsjs.RemoveStaleWriterConsumers(ctx, writerJS, 0, 1); err != nil {
		t.Fatalf("writer 0 of 1 removes the consumers of writers 1 and 3: %v", err)
	}

	// Kept: the lease, taken, refreshed, closed, taken by another identity.
	lease, err := natsjs.AcquireWriterLease(ctx, writerJS, 0, "writer-a", shortLease)
	if err != nil {
		t.Fatalf("writer takes its lease: %v", err)
	}
	kv, err := adminJS.KeyValue(ctx, natsjs.WriterLeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	first, err := kv.Get(ctx, "w0")
	if err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 5*time.Second, func() bool {
		e, err := kv.Get(ctx, "w0")
		return err == nil && e.Revision() > first.Revision()
	}, "the writer did not refresh its lease")
	if !lease.Held() {
		t.Fatal("the refreshed lease is not held")
	}

	// Refused: ingest and the gateway write a lease key.
	gatewayJS, gatewayErrs := connectAs(t, url, users.Gateway)
	ingestRaw, ingestErrs := connectAs(t, url, users.Ingest)
	for _, js := range []jetstream.JetStream{ingestRaw, gatewayJS} {
		_, _ = js.Conn().Request("$KV."+natsjs.WriterLeaseBucket+".w0", []byte("forged"), 500*time.Millisecond)
		ictx, cancel := short()
		if _, err := natsjs.AcquireWriterLease(ictx, js, 5, "forged"); err == nil {
			t.Fatal("a user other than analytics took a writer's lease")
		}
		cancel()
	}
	if e, err := kv.Get(ctx, "w0"); err != nil || string(e.Value()) != "writer-a" {
		t.Fatalf("lease key w0 holds %q (%v) after forged writes, want writer-a's", e.Value(), err)
	}
	if !hasPermissionError(ingestErrs()) || !hasPermissionError(gatewayErrs()) {
		t.Fatalf("forged lease writes without permission violations (ingest: %v; gateway: %v)", ingestErrs(), gatewayErrs())
	}
	lease.Close()
	next, err := natsjs.AcquireWriterLease(ctx, writerJS, 0, "writer-b", shortLease)
	if err != nil {
		t.Fatalf("another writer takes the closed lease: %v", err)
	}
	next.Close()

	// Refused: other consumers (by name, or the v1 consumer again), the stream, other buckets.
	for _, name := range []string{"other", "analytics-writer-8", natsjs.LegacyWriterConsumer} {
		wctx, cancel := short()
		if _, err := writerJS.CreateOrUpdateConsumer(wctx, natsjs.StreamName, jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckExplicitPolicy, FilterSubjects: []string{"events.*.5"}}); err == nil {
			t.Fatalf("the writer's user created consumer %s", name)
		}
		cancel()
	}
	wctx, cancel := short()
	if err := writerJS.DeleteStream(wctx, natsjs.StreamName); err == nil {
		t.Fatal("the writer's user deleted the event stream")
	}
	cancel()
	if _, err := writerJS.Conn().Request("$JS.API.STREAM.PURGE.EVENTS", nil, time.Second); err == nil {
		t.Fatal("the writer's user purged the event stream")
	}
	other, err := adminJS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "OTHER"})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = writerJS.Conn().Request("$KV.OTHER.k", []byte("forged"), 500*time.Millisecond)
	if _, err := other.Get(ctx, "k"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the writer's user wrote to another bucket: %v", err)
	}
	wctx, cancel = short()
	if _, err := writerJS.CreateOrUpdateKeyValue(wctx, jetstream.KeyValueConfig{Bucket: "MINE"}); err == nil {
		t.Fatal("the writer's user created another bucket")
	}
	cancel()
	if !hasPermissionError(writerErrs()) {
		t.Fatalf("forbidden requests without permission violations: %v", writerErrs())
	}
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
	return natstest.StreamMsgs(t, js, natsjs.StreamName)
}

// auditCollector stands for auth's AppendAuditRecords: it keeps the ids delivered to it.
type auditCollector struct {
	mu  sync.Mutex
	ids map[string]bool
}

func (a *auditCollector) AppendAuditRecords(_ context.Context, in *authv1.AppendAuditRecordsRequest, _ ...grpc.CallOption) (*authv1.AppendAuditRecordsResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range in.GetRecords() {
		a.ids[r.GetId()] = true
	}
	return &authv1.AppendAuditRecordsResponse{Appended: int64(len(in.GetRecords()))}, nil
}

func (a *auditCollector) has(id string) bool { a.mu.Lock(); defer a.mu.Unlock(); return a.ids[id] }

// The real deploy/nats.conf, audit records: ingest, analytics and the gateway each create the
// audit stream and their own consumer, store their records and deliver them; none publishes on
// another's subject, takes another's consumer (by name or by filter), reads another's records or
// removes the stream; the gateway has no right on the event stream.
func TestNATSUsersHaveOnlyTheirAuditRights(t *testing.T) {
	srv, users := natstest.StartSecured(t)
	url := srv.ClientURL()
	ctx := context.Background()
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 2*time.Second) }
	adminJS, _ := connectAs(t, url, users.Admin)

	// Before any consumer exists: ingest asks for its own consumer name on its own create
	// subject, but filtered on analytics' records. The server holds the filter to the subject.
	ingestJS, ingestErrs := connectAs(t, url, users.Ingest)
	if _, err := auditnats.New(ctx, ingestJS, "ingest", &auditCollector{ids: map[string]bool{}}, slog.New(slog.DiscardHandler), auditnats.DefaultConfig); err != nil {
		t.Fatalf("ingest creates the audit stream and its consumer: %v", err)
	}
	if err := adminJS.DeleteConsumer(ctx, auditnats.StreamName, auditnats.ConsumerName("ingest")); err != nil {
		t.Fatal(err)
	}
	body := `{"stream_name":"AUDIT","config":{"durable_name":"audit-ingest","filter_subject":"audit.analytics","ack_policy":"explicit"},"action":""}`
	reply, err := ingestJS.Conn().Request("$JS.API.CONSUMER.CREATE.AUDIT.audit-ingest.audit.ingest", []byte(body), 2*time.Second)
	if err != nil || !strings.Contains(string(reply.Data), `"error"`) {
		t.Fatalf("ingest created a consumer filtered on analytics' records: %v %s", err, reply.Data)
	}

	for _, u := range []natstest.User{users.Ingest, users.Analytics, users.Gateway} {
		js, _ := connectAs(t, url, u)
		auth := &auditCollector{ids: map[string]bool{}}
		sink, err := auditnats.New(ctx, js, u.Name, auth, slog.New(slog.DiscardHandler), auditnats.DefaultConfig)
		if err != nil {
			t.Fatalf("%s creates the audit stream and its consumer: %v", u.Name, err)
		}
		r := audit.Record{ID: audit.NewID(), Time: time.Now(), Method: u.Name + ".Probe", ActorKind: "anonymous", Service: u.Name}
		if err := sink.Record(ctx, r); err != nil {
			t.Fatalf("%s stores an audit record: %v", u.Name, err)
		}
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { _ = sink.Run(runCtx); close(done) }()
		t.Cleanup(stop)
		meshtest.Eventually(t, 10*time.Second, func() bool { return auth.has(r.ID) && consumerPending(t, adminJS, u.Name) == 0 },
			"%s's audit record was not delivered and acknowledged", u.Name)
		stop()
		<-done
	}

	// Another's subject, consumer and records; the stream itself.
	before := auditMsgs(t, adminJS)
	ictx, cancel := short()
	if _, err := ingestJS.Publish(ictx, auditnats.Subject("analytics"), []byte("forged")); err == nil {
		t.Fatal("ingest published on analytics' audit subject")
	}
	cancel()
	if after := auditMsgs(t, adminJS); after != before {
		t.Fatalf("audit stream holds %d messages after a forbidden publish, had %d", after, before)
	}
	ictx, cancel = short()
	if _, err := ingestJS.CreateOrUpdateConsumer(ictx, auditnats.StreamName, jetstream.ConsumerConfig{
		Durable: auditnats.ConsumerName("analytics"), FilterSubject: auditnats.Subject("analytics"), AckPolicy: jetstream.AckExplicitPolicy}); err == nil {
		t.Fatal("ingest created analytics' audit consumer")
	}
	cancel()
	ictx, cancel = short()
	if _, err := ingestJS.CreateOrUpdateConsumer(ictx, auditnats.StreamName, jetstream.ConsumerConfig{
		Durable: "audit-all", AckPolicy: jetstream.AckExplicitPolicy}); err == nil {
		t.Fatal("ingest created an unfiltered audit consumer")
	}
	cancel()
	gatewayRaw, gatewayErrs := connectAs(t, url, users.Gateway)
	if _, err := gatewayRaw.Conn().Request("$JS.API.CONSUMER.MSG.NEXT.AUDIT.audit-ingest", []byte(`{"batch":1,"no_wait":true}`), time.Second); err == nil {
		t.Fatal("the gateway pulled from ingest's audit consumer")
	}
	ictx, cancel = short()
	if err := gatewayRaw.DeleteStream(ictx, auditnats.StreamName); err == nil {
		t.Fatal("the gateway deleted the audit stream")
	}
	cancel()
	if _, err := ingestJS.Conn().Request("$JS.API.STREAM.PURGE.AUDIT", nil, time.Second); err == nil {
		t.Fatal("ingest purged the audit stream")
	}

	// The gateway has nothing of the event stream.
	ictx, cancel = short()
	if err := natsjs.EnsureStreams(ictx, gatewayRaw, natsjs.DefaultStream); err == nil {
		t.Fatal("the gateway created the event stream")
	}
	cancel()
	ictx, cancel = short()
	if _, err := gatewayRaw.Publish(ictx, natsjs.SubjectPrefix+"tenant-1", []byte("forged")); err == nil {
		t.Fatal("the gateway published an event batch")
	}
	cancel()
	if !hasPermissionError(gatewayErrs()) || !hasPermissionError(ingestErrs()) {
		t.Fatalf("forbidden requests without permission violations (gateway: %v; ingest: %v)", gatewayErrs(), ingestErrs())
	}
}

func auditMsgs(t *testing.T, admin jetstream.JetStream) uint64 {
	t.Helper()
	return natstest.StreamMsgs(t, admin, auditnats.StreamName)
}

// consumerPending counts service's records not yet delivered or not yet acknowledged.
func consumerPending(t *testing.T, admin jetstream.JetStream, service string) uint64 {
	t.Helper()
	return natstest.ConsumerPending(t, admin, auditnats.StreamName, auditnats.ConsumerName(service))
}
