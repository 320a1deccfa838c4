//go:build chaos

package main

import (
	"context"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
)

type nopSink struct{}

func (nopSink) Insert(context.Context, []writer.Row) error         { return nil }
func (nopSink) Settle(context.Context) (uint64, error)             { return 0, nil }
func (nopSink) SeqOffset(context.Context, uint64) (uint64, error)  { return 0, nil }
func (nopSink) Stored(context.Context, []uint64) ([]uint64, error) { return nil, nil }
func (nopSink) Seen(context.Context, []writer.EventKey) ([]writer.EventKey, error) {
	return nil, nil
}
func (nopSink) RecentIDs(context.Context, time.Time, func(writer.EventKey)) error { return nil }
func (nopSink) DropIDsBefore(context.Context, time.Time) error                    { return nil }

// The chaos build takes the fault flag (or its environment variable) and then wraps the
// writer's sink; without it the sink is left alone.
func TestChaosBuildHasTheFaultFlag(t *testing.T) {
	s, err := parse(requiredArgs)
	if err != nil {
		t.Fatal(err)
	}
	if _, wrapped := s.cfg.WrapSink(nopSink{}).(nopSink); !wrapped {
		t.Fatal("the sink is wrapped although no fault is asked for")
	}
	t.Setenv("CM_ANALYTICS_FAULT_EXIT_AFTER_INSERTS", "1")
	if s, err = parse(requiredArgs); err != nil {
		t.Fatal(err)
	}
	if _, plain := s.cfg.WrapSink(nopSink{}).(nopSink); plain {
		t.Fatal("-fault-exit-after-inserts did not wrap the sink")
	}
}
