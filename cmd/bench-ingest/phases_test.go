package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
)

func TestParseWriterCounts(t *testing.T) {
	for in, want := range map[string][]int{"1,2": {1, 2}, "2": {2}, " 1 , 4 ": {1, 4}, "8,1": {8, 1}} {
		got, err := parseWriterCounts(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("parseWriterCounts(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "9", "1,,2", "a", "1,1", "-1"} {
		if got, err := parseWriterCounts(in); err == nil {
			t.Errorf("parseWriterCounts(%q) = %v, want an error", in, got)
		}
	}
}

func TestScaling(t *testing.T) {
	got := scaling("landed (steady)", []int{1, 2}, map[int]float64{1: 80000, 2: 120000})
	if len(got) != 1 || got[0].value != 150 || got[0].name != "landed (steady), 2 writers / 1 writer" || got[0].note != "(120000 vs 80000 ev/s)" {
		t.Fatalf("scaling of 1 and 2 writers = %+v", got)
	}
	// Each count against one writer, in the order run, whatever the place of the one-writer run.
	got = scaling("landed (steady)", []int{4, 1, 2}, map[int]float64{1: 100, 2: 150, 4: 50})
	if len(got) != 2 || got[0].value != 50 || got[1].value != 150 || !strings.Contains(got[0].name, "4 writers") {
		t.Fatalf("scaling of 4, 1 and 2 writers = %+v", got)
	}
	if got := scaling("landed (steady)", []int{2}, map[int]float64{2: 100}); got != nil {
		t.Fatalf("scaling without a one-writer run = %+v, want nothing", got)
	}
	if got := scaling("landed (steady)", []int{1, 2}, map[int]float64{1: 0, 2: 100}); got != nil {
		t.Fatalf("scaling against a zero one-writer rate = %+v, want nothing", got)
	}
}

// TestSteadyNames keeps the one-writer figures' names, which earlier runs' JSON and the docs
// use, and gives every other count its own.
func TestSteadyNames(t *testing.T) {
	if got := steadyName("(d) events landed in ClickHouse during the steady run", 1); got != "(d) events landed in ClickHouse during the steady run" {
		t.Errorf("one writer: %q", got)
	}
	if got := steadyName("(d) events landed in ClickHouse during the steady run", 2); got != "(d) events landed in ClickHouse during the steady run, 2 writers" {
		t.Errorf("two writers: %q", got)
	}
}

func TestLandedNote(t *testing.T) {
	for _, c := range []struct {
		landed, accepted uint64
		want             string
	}{
		{100, 100, "(100 of 100)"},
		{99, 100, "(99 of 100) NOT ALL LANDED"},
		{101, 100, "(101 of 100) MORE THAN ACCEPTED"},
	} {
		if got := landedNote(c.landed, c.accepted); got != c.want {
			t.Errorf("landedNote(%d, %d) = %q, want %q", c.landed, c.accepted, got, c.want)
		}
	}
}

// TestWriterConfig: writer i of n, each index its own lease identity, the writer's defaults
// otherwise.
func TestWriterConfig(t *testing.T) {
	a, b := writerConfig(0, 2), writerConfig(1, 2)
	if a.Index != 0 || a.Count != 2 || b.Index != 1 || b.Count != 2 {
		t.Fatalf("writer configs %+v, %+v", a, b)
	}
	if a.Identity == "" || a.Identity == b.Identity {
		t.Fatalf("identities %q and %q: want two distinct", a.Identity, b.Identity)
	}
	if a.BatchRows != 10000 || a.DedupWindow == 0 || a.MaxWait == 0 {
		t.Fatalf("writer config %+v: want the writer's defaults", a)
	}
}

// TestRequestReachesEveryWriter: the steady run knows every writer has started once one
// request's events landed, which holds only if a request has events in every partition, so in
// those of every writer of every count.
func TestRequestReachesEveryWriter(t *testing.T) {
	parts := map[int]bool{}
	for _, e := range request("w", 0, 0).GetEvents() {
		parts[natsjs.Partition(tenant, e.GetUserId())] = true
	}
	for n := 1; n <= natsjs.MaxWriters; n++ {
		for i := 0; i < n; i++ {
			hit := false
			for _, p := range natsjs.WriterPartitions(i, n) {
				hit = hit || parts[p]
			}
			if !hit {
				t.Errorf("writer %d of %d owns none of the partitions of a request (%v)", i, n, parts)
			}
		}
	}
}
