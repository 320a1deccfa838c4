package natsjs_test

import (
	"context"
	"errors"
	"testing"

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
