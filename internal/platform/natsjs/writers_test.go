package natsjs_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
)

// Every writer count splits the partitions: each partition has exactly one owner.
func TestWriterPartitionsCoverEveryPartitionOnce(t *testing.T) {
	for count := 1; count <= natsjs.MaxWriters; count++ {
		owner := map[int]int{}
		for i := range count {
			for _, p := range natsjs.WriterPartitions(i, count) {
				if prev, dup := owner[p]; dup {
					t.Fatalf("%d writers: partition %d owned by %d and %d", count, p, prev, i)
				}
				if p%count != i {
					t.Fatalf("%d writers: writer %d owns %d", count, i, p)
				}
				owner[p] = i
			}
		}
		if len(owner) != natsjs.Partitions {
			t.Fatalf("%d writers own %d partitions, want %d", count, len(owner), natsjs.Partitions)
		}
	}
	for _, c := range [][2]int{{0, 0}, {1, 1}, {-1, 2}, {0, natsjs.MaxWriters + 1}} {
		if got := natsjs.WriterPartitions(c[0], c[1]); got != nil {
			t.Errorf("WriterPartitions(%d, %d) = %v, want nil", c[0], c[1], got)
		}
	}
	if got := natsjs.WriterConsumerName(3); got != "analytics-writer-3" {
		t.Errorf("WriterConsumerName(3) = %q", got)
	}
}

// writerStream is a fresh event stream with one message on every partition subject of tenant
// t and one of the form before partitions; it returns the subjects published.
func writerStream(t *testing.T) (jetstream.JetStream, []string) {
	t.Helper()
	nc, js, err := natsjs.Connect(natstest.Start(t), "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := context.Background()
	if err := natsjs.EnsureStreams(ctx, js, natsjs.DefaultStream); err != nil {
		t.Fatal(err)
	}
	var subjects []string
	for p := range natsjs.Partitions {
		if _, err := natsjs.PublishPart(ctx, js, "t", p, fmt.Sprint("m", p), []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
		subjects = append(subjects, natsjs.Subject("t", p))
	}
	if _, err := natsjs.Publish(ctx, js, "t", "old", []byte("x"), nil); err != nil {
		t.Fatal(err)
	}
	return js, append(subjects, "events.t")
}

// startWriterConsumer does what a writer does at start: removes the stale consumers and its
// own, then creates its own.
func startWriterConsumer(ctx context.Context, js jetstream.JetStream, index, count int) (jetstream.Consumer, error) {
	if err := natsjs.RemoveStaleWriterConsumers(ctx, js, index, count); err != nil {
		return nil, err
	}
	if err := js.DeleteConsumer(ctx, natsjs.StreamName, natsjs.WriterConsumerName(index)); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, err
	}
	return js.CreateOrUpdateConsumer(ctx, natsjs.StreamName, natsjs.WriterConsumerConfig(index, count))
}

// drain fetches (and acknowledges when ack) every message c has for now and returns their
// subjects, sorted.
func drain(t *testing.T, c jetstream.Consumer, ack bool) []string {
	t.Helper()
	var subjects []string
	for {
		b, err := c.Fetch(100, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range b.Messages() {
			n++
			subjects = append(subjects, m.Subject())
			if ack {
				if err := m.DoubleAck(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
		}
		if n == 0 {
			slices.Sort(subjects)
			return subjects
		}
	}
}

// Writers 0 and 1 of 2 read disjoint partitions that together are the whole stream, side by
// side on the work queue; the messages of the form before partitions go to writer 0.
func TestWriterConsumersSplitTheStream(t *testing.T) {
	js, subjects := writerStream(t)
	ctx := context.Background()
	c0, err := startWriterConsumer(ctx, js, 0, 2)
	if err != nil {
		t.Fatalf("writer 0 of 2: %v", err)
	}
	c1, err := startWriterConsumer(ctx, js, 1, 2)
	if err != nil {
		t.Fatalf("writer 1 of 2 beside writer 0: %v", err)
	}
	got0, got1 := drain(t, c0, true), drain(t, c1, true)
	want0 := []string{"events.t", "events.t.0", "events.t.2", "events.t.4", "events.t.6"}
	want1 := []string{"events.t.1", "events.t.3", "events.t.5", "events.t.7"}
	if !slices.Equal(got0, want0) || !slices.Equal(got1, want1) {
		t.Fatalf("writer 0 read %v, writer 1 %v; want %v and %v", got0, got1, want0, want1)
	}
	if all := slices.Sorted(slices.Values(append(got0, got1...))); !slices.Equal(all, slices.Sorted(slices.Values(subjects))) {
		t.Fatalf("the writers read %v, the stream had %v", all, subjects)
	}
	if info, err := c1.Info(ctx); err != nil || !slices.Equal(info.Config.FilterSubjects, []string{"events.*.1", "events.*.3", "events.*.5", "events.*.7"}) {
		t.Fatalf("writer 1's consumer filters %v (%v)", info.Config.FilterSubjects, err)
	}
}

// With as many writers as partitions each consumer has one partition's filter (the client
// then still sends the filter list, the API form without a filter in the subject).
func TestEightWritersReadAPartitionEach(t *testing.T) {
	js, _ := writerStream(t)
	ctx := context.Background()
	for i := range natsjs.MaxWriters {
		c, err := startWriterConsumer(ctx, js, i, natsjs.MaxWriters)
		if err != nil {
			t.Fatalf("writer %d of 8: %v", i, err)
		}
		want := []string{natsjs.Subject("t", i)}
		if i == 0 {
			want = []string{"events.t", "events.t.0"}
		}
		if got := drain(t, c, true); !slices.Equal(got, want) {
			t.Fatalf("writer %d of 8 read %v, want %v", i, got, want)
		}
	}
}

// The work-queue stream refuses a consumer whose filters overlap another's. So the unfiltered
// consumer of the single writer before partitions, or the consumers of a run with another
// writer count, block the writers' consumers until they are removed; messages left
// unacknowledged by a removed consumer go to the new owner.
func TestWorkQueueRefusesOverlappingWriterConsumers(t *testing.T) {
	js, subjects := writerStream(t)
	ctx := context.Background()

	// Upgrade: the v1 writer's consumer exists, with messages delivered but not acknowledged.
	legacy, err := js.CreateOrUpdateConsumer(ctx, natsjs.StreamName, jetstream.ConsumerConfig{Durable: natsjs.LegacyWriterConsumer,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		t.Fatal(err)
	}
	if got := drain(t, legacy, false); len(got) != len(subjects) {
		t.Fatalf("the v1 consumer read %v", got)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, natsjs.StreamName, natsjs.WriterConsumerConfig(0, 1)); err == nil {
		t.Fatal("writer 0 of 1 created its consumer beside the v1 consumer")
	}
	c0, err := startWriterConsumer(ctx, js, 0, 1)
	if err != nil {
		t.Fatalf("writer 0 of 1 after removing the v1 consumer: %v", err)
	}
	if got := drain(t, c0, false); !slices.Equal(got, slices.Sorted(slices.Values(subjects))) {
		t.Fatalf("writer 0 of 1 read %v, want the v1 consumer's unacknowledged %v", got, subjects)
	}

	// 1 → 2 writers: writer 1 of 2 is refused while writer 0 still runs as the only writer (its
	// consumer reads every partition); it gets its consumer once writer 0 restarted with 2.
	if _, err := startWriterConsumer(ctx, js, 1, 2); err == nil {
		t.Fatal("writer 1 of 2 created its consumer while writer 0 of 1 reads every partition")
	}
	if _, err := startWriterConsumer(ctx, js, 0, 2); err != nil {
		t.Fatalf("writer 0 restarted as 0 of 2: %v", err)
	}
	c1, err := startWriterConsumer(ctx, js, 1, 2)
	if err != nil {
		t.Fatalf("writer 1 of 2 after writer 0's restart: %v", err)
	}
	if got := drain(t, c1, false); !slices.Equal(got, []string{"events.t.1", "events.t.3", "events.t.5", "events.t.7"}) {
		t.Fatalf("writer 1 of 2 read %v", got)
	}

	// 2 → 1: writer 1's consumer is stale; writer 0 of 1 removes it and reads its messages.
	c0, err = startWriterConsumer(ctx, js, 0, 1)
	if err != nil {
		t.Fatalf("writer 0 of 1 beside the stale consumer of writer 1: %v", err)
	}
	if _, err := js.Consumer(ctx, natsjs.StreamName, natsjs.WriterConsumerName(1)); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("the stale consumer of writer 1: %v, want it removed", err)
	}
	if got := drain(t, c0, true); !slices.Equal(got, slices.Sorted(slices.Values(subjects))) {
		t.Fatalf("writer 0 of 1 read %v, want %v", got, subjects)
	}
	if n := natstest.StreamMsgs(t, js, natsjs.StreamName); n != 0 {
		t.Fatalf("the stream holds %d messages after writer 0 acknowledged all", n)
	}
}
