package natsjs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// WriterConsumerPrefix begins the name of every analytics writer's durable consumer:
// analytics-writer-<index> (WriterConsumerName).
const WriterConsumerPrefix = "analytics-writer-"

// LegacyWriterConsumer is the one unfiltered consumer of the single writer before partitions.
// On a work-queue stream it would overlap every filtered consumer, so the server refuses those
// while it exists: writers delete it (RemoveStaleWriterConsumers).
const LegacyWriterConsumer = "analytics-writer"

// MaxWriters bounds the writer count: a writer owns at least one partition.
const MaxWriters = Partitions

// WriterPartitions are the partitions writer index of count owns: those p with
// p % count == index, so count writers own every partition once. Nil when index is out of
// range or count is not 1…MaxWriters.
func WriterPartitions(index, count int) []int {
	if count < 1 || count > MaxWriters || index < 0 || index >= count {
		return nil
	}
	var parts []int
	for p := index; p < Partitions; p += count {
		parts = append(parts, p)
	}
	return parts
}

// WriterConsumerName is the durable consumer of writer index: analytics-writer-<index>.
func WriterConsumerName(index int) string { return WriterConsumerPrefix + strconv.Itoa(index) }

// WriterSubjects are the subjects writer index of count reads: events.*.<p> for each partition
// it owns, and for writer 0 also events.*, where messages published before partitions are (a
// tenant's whole batch, whose events may belong to several partitions).
func WriterSubjects(index, count int) []string {
	parts := WriterPartitions(index, count)
	subjects := make([]string, 0, len(parts)+1)
	for _, p := range parts {
		subjects = append(subjects, SubjectPrefix+"*."+strconv.Itoa(p))
	}
	if index == 0 && len(parts) > 0 {
		subjects = append(subjects, SubjectPrefix+"*")
	}
	return subjects
}

// WriterConsumerConfig is the durable pull consumer of writer index of count: filtered on its
// subjects (WriterSubjects), so the work-queue stream accepts the writers' consumers side by
// side (it refuses consumers whose filters overlap); acknowledged one message at a time after
// ClickHouse has its events; redelivered without limit (a batch is never given up: poison goes
// to the dead-letter stream by the writer's decision); from the first message the stream
// holds. Writers recreate it at start, so a restarted writer gets its unacknowledged messages
// first, in stream order.
func WriterConsumerConfig(index, count int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: WriterConsumerName(index), FilterSubjects: WriterSubjects(index, count),
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
		MaxAckPending: 100000, MaxDeliver: -1, DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// RemoveStaleWriterConsumers deletes the consumers that would keep writer index of count from
// creating its own or would read partitions no writer of count owns: the unfiltered consumer
// of the single writer before partitions (LegacyWriterConsumer) and those of writers count and
// up, left by a run with more writers. Their unacknowledged messages stay in the work-queue
// stream for the writers of count. Missing consumers are not an error.
func RemoveStaleWriterConsumers(ctx context.Context, js jetstream.JetStream, index, count int) error {
	if count < 1 || count > MaxWriters || index < 0 || index >= count {
		return fmt.Errorf("writer %d of %d: the index must be below the count, the count 1 to %d", index, count, MaxWriters)
	}
	stale := []string{LegacyWriterConsumer}
	for j := count; j < MaxWriters; j++ {
		stale = append(stale, WriterConsumerName(j))
	}
	for _, name := range stale {
		if err := js.DeleteConsumer(ctx, StreamName, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("delete stale consumer %s: %w", name, err)
		}
	}
	return nil
}
