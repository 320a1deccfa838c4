package natsjs_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
)

func TestPublishDeduplicatesAndRefusesWhenFull(t *testing.T) {
	nc, js, err := natsjs.Connect(natstest.Start(t), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	cfg := natsjs.DefaultStream
	cfg.MaxBytes = 64 << 10
	if err := natsjs.EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	if err := natsjs.EnsureStreams(ctx, js, cfg); err != nil { // idempotent
		t.Fatalf("second EnsureStreams: %v", err)
	}
	a1, err := natsjs.Publish(ctx, js, "t1", "batch-1", []byte("one"), nil)
	if err != nil || a1.Duplicate {
		t.Fatalf("first publish: %v %v", a1, err)
	}
	a2, err := natsjs.Publish(ctx, js, "t1", "batch-1", []byte("one"), nil)
	if err != nil || !a2.Duplicate || a2.Sequence != a1.Sequence {
		t.Fatalf("retried publish: %+v %v; want a duplicate of sequence %d", a2, err, a1.Sequence)
	}
	big := make([]byte, 20<<10)
	var full error
	for i := 0; i < 10 && full == nil; i++ {
		_, full = natsjs.Publish(ctx, js, "t1", "big-"+string(rune('a'+i)), big, nil)
	}
	if !errors.Is(full, natsjs.ErrStreamFull) {
		t.Fatalf("publishing past MaxBytes: %v, want ErrStreamFull", full)
	}
	s, err := js.Stream(ctx, natsjs.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil || info.State.Bytes > uint64(cfg.MaxBytes) {
		t.Fatalf("stream holds %d bytes, limit %d (%v)", info.State.Bytes, cfg.MaxBytes, err)
	}
}

// Both streams store S2-compressed blocks under the configured bounds, and a stream an older
// version created (uncompressed, 1 GiB) is updated in place without losing its backlog.
func TestEnsureStreamsCompressesAndUpdatesAnOlderStream(t *testing.T) {
	nc, js, err := natsjs.Connect(natstest.Start(t), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	// The event stream as the previous version created it, with a backlog.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: natsjs.StreamName, Subjects: []string{natsjs.SubjectPrefix + ">"},
		Storage: jetstream.FileStorage, Retention: jetstream.WorkQueuePolicy, Discard: jetstream.DiscardNew,
		MaxBytes: 1 << 30, MaxAge: 7 * 24 * time.Hour, Duplicates: 10 * time.Minute, MaxMsgSize: 2 << 20}); err != nil {
		t.Fatal(err)
	}
	if _, err := natsjs.Publish(ctx, js, "t1", "old-1", []byte("backlog"), nil); err != nil {
		t.Fatal(err)
	}
	if err := natsjs.EnsureStreams(ctx, js, natsjs.DefaultStream); err != nil {
		t.Fatalf("EnsureStreams over an older stream: %v", err)
	}
	for name, maxBytes := range map[string]int64{natsjs.StreamName: natsjs.DefaultStream.MaxBytes, natsjs.DeadLetterName: natsjs.DefaultStream.MaxBytes / 4} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if cfg := s.CachedInfo().Config; cfg.Compression != jetstream.S2Compression || cfg.MaxBytes != maxBytes {
			t.Errorf("stream %s: compression %v, max bytes %d; want s2 and %d", name, cfg.Compression, cfg.MaxBytes, maxBytes)
		}
	}
	if n := natstest.StreamMsgs(t, js, natsjs.StreamName); n != 1 {
		t.Fatalf("the older stream's backlog: %d messages after the update, want 1", n)
	}
}

// A server whose JetStream storage limit cannot hold the stream's bound refuses to create it;
// the error says which setting to change.
func TestEnsureStreamsSaysWhenTheServerHasNoRoom(t *testing.T) {
	s := natstest.StartServerWith(t, func(o *server.Options) { o.JetStreamMaxStore = 1 << 30 })
	nc, js, err := natsjs.Connect(s.ClientURL(), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	err = natsjs.EnsureStreams(context.Background(), js, natsjs.DefaultStream)
	if err == nil || !strings.Contains(err.Error(), "-stream-max-bytes") {
		t.Fatalf("EnsureStreams on a server with a 1 GiB storage limit: %v, want an error naming -stream-max-bytes", err)
	}
}
