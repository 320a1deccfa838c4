package natsjs_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	auditnats "github.com/campaignmesh/campaignmesh/internal/platform/audit/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
)

// startServer runs a JetStream server (fsync on every write) storing in dir, so a test can stop
// it and start it again on the same data.
func startServer(t *testing.T, dir string) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, SyncAlways: true, NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s
}

func connect(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// authLog stands for auth's AppendAuditRecords: it keeps each record id once and skips ids it
// holds, as auth does. failures makes the next calls fail as if auth were down; afterAppend
// runs once records are kept, before the answer leaves.
type authLog struct {
	mu          sync.Mutex
	held        map[string]int // times each id was delivered
	calls       int
	failures    int
	afterAppend func()
}

func newAuthLog() *authLog { return &authLog{held: map[string]int{}} }

func (a *authLog) AppendAuditRecords(_ context.Context, in *authv1.AppendAuditRecordsRequest, _ ...grpc.CallOption) (*authv1.AppendAuditRecordsResponse, error) {
	a.mu.Lock()
	a.calls++
	if a.failures > 0 {
		a.failures--
		a.mu.Unlock()
		return nil, status.Error(codes.Unavailable, "auth is down")
	}
	resp := &authv1.AppendAuditRecordsResponse{}
	for _, r := range in.GetRecords() {
		if a.held[r.GetId()] > 0 {
			resp.Duplicates++
		} else {
			resp.Appended++
		}
		a.held[r.GetId()]++
	}
	hook := a.afterAppend
	a.afterAppend = nil
	a.mu.Unlock()
	if hook != nil {
		hook()
	}
	return resp, nil
}

// state returns the ids auth holds, how many deliveries repeated an id, and the calls made.
func (a *authLog) state() (ids map[string]bool, repeats, calls int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ids = map[string]bool{}
	for id, n := range a.held {
		ids[id] = true
		repeats += n - 1
	}
	return ids, repeats, a.calls
}

func record() audit.Record {
	return audit.Record{ID: audit.NewID(), Time: time.Now().UTC(), Method: "/campaignmesh.ingest.v1.IngestService/IngestEvents",
		TenantID: "t1", Actor: "k1", ActorKind: "api_key", Outcome: codes.PermissionDenied, RequestID: "req-1", Service: "ingest"}
}

func streamMsgs(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	return natstest.StreamMsgs(t, js, auditnats.StreamName)
}

func run(t *testing.T, s *auditnats.Sink) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return cancel
}

// Record returns once the record is on disk: it is still there after the server restarts,
// nothing having delivered it; a retried Record (same id) is stored once; with the server
// gone, Record fails instead of claiming a record it did not store.
func TestRecordIsDurableBeforeItReturns(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	srv := startServer(t, dir)
	_, js := connect(t, srv.ClientURL())
	sink, err := auditnats.New(ctx, js, "ingest", newAuthLog(), slog.New(slog.DiscardHandler), auditnats.DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	r := record()
	for range 2 { // the second is a retry after, say, a lost acknowledgement
		if err := sink.Record(ctx, r); err != nil {
			t.Fatalf("record: %v", err)
		}
	}

	srv.Shutdown()
	srv.WaitForShutdown()
	if err := sink.Record(ctx, record()); err == nil {
		t.Fatal("Record with the server down returned nil")
	}
	srv = startServer(t, dir)
	_, js = connect(t, srv.ClientURL())
	if n := streamMsgs(t, js); n != 1 {
		t.Fatalf("stream holds %d records after a restart, want 1", n)
	}
	s, err := js.Stream(ctx, auditnats.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetLastMsgForSubject(ctx, auditnats.Subject("ingest"))
	if err != nil {
		t.Fatal(err)
	}
	var got authv1.AuditRecord
	if err := proto.Unmarshal(msg.Data, &got); err != nil {
		t.Fatal(err)
	}
	if got.GetId() != r.ID || got.GetRequestId() != r.RequestID || got.GetOutcome() != "PERMISSION_DENIED" {
		t.Fatalf("stored record = %v, want %+v", &got, r)
	}
}

// While auth fails, delivery is retried with backoff and the records wait in the stream; once
// auth answers, each reaches it once and the stream is empty.
func TestDeliveryIsRetriedWhileAuthFails(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t, t.TempDir())
	_, js := connect(t, srv.ClientURL())
	auth := newAuthLog()
	auth.failures = 3
	sink, err := auditnats.New(ctx, js, "analytics", auth, slog.New(slog.DiscardHandler), auditnats.DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for range 3 {
		r := record()
		if err := sink.Record(ctx, r); err != nil {
			t.Fatal(err)
		}
		want[r.ID] = true
	}
	run(t, sink)
	meshtest.Eventually(t, 20*time.Second, func() bool {
		ids, _, _ := auth.state()
		return len(ids) == len(want) && streamMsgs(t, js) == 0
	}, "records delivered after auth recovered")
	ids, repeats, calls := auth.state()
	for id := range want {
		if !ids[id] {
			t.Errorf("auth lacks record %s", id)
		}
	}
	if calls < 4 || repeats != 0 {
		t.Fatalf("auth answered %d calls with %d repeated records; want at least 3 failed calls then one delivery without repeats", calls, repeats)
	}
}

// A crash after auth has a batch but before the stream heard the acknowledgement: the restarted
// service gets the records again, auth skips them, and each is in auth's log once.
func TestRedeliveryAfterACrashBetweenAppendAndAck(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t, t.TempDir())
	cfg := auditnats.DefaultConfig
	cfg.AckWait = time.Second // how soon the stream offers unacknowledged records again

	nc1, js1 := connect(t, srv.ClientURL())
	auth := newAuthLog()
	sink1, err := auditnats.New(ctx, js1, "gateway", auth, slog.New(slog.DiscardHandler), cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for range 2 {
		r := record()
		r.Method, r.TenantID, r.Actor, r.ActorKind = "gateway.RateLimited", "", "", "anonymous"
		if err := sink1.Record(ctx, r); err != nil {
			t.Fatal(err)
		}
		want[r.ID] = true
	}
	crashed := make(chan struct{})
	auth.afterAppend = func() { nc1.Close(); close(crashed) } // the process dies with auth's answer on its way
	stop1 := run(t, sink1)
	<-crashed
	stop1()

	_, js2 := connect(t, srv.ClientURL()) // the service starts again
	sink2, err := auditnats.New(ctx, js2, "gateway", auth, slog.New(slog.DiscardHandler), cfg)
	if err != nil {
		t.Fatal(err)
	}
	run(t, sink2)
	meshtest.Eventually(t, 20*time.Second, func() bool {
		_, repeats, _ := auth.state()
		return repeats == len(want) && streamMsgs(t, js2) == 0
	}, "redelivered records acknowledged")
	ids, _, _ := auth.state()
	if len(ids) != len(want) {
		t.Fatalf("auth holds %d distinct records, want %d", len(ids), len(want))
	}
	for id := range want {
		if !ids[id] {
			t.Errorf("auth lacks record %s", id)
		}
	}
}
