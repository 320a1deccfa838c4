package natsjs_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
)

// benchRate is the bench's landed rate (make bench-ingest, steady run), in events/s.
const benchRate = 95000

// encodings are the two forms of a batch: as ingest wrote it before, and compact.
var encodings = []struct {
	name   string
	encode func(testing.TB, []*ingestv1.AcceptedEvent) []byte
}{
	{"full", fullForm},
	{"compact", func(tb testing.TB, events []*ingestv1.AcceptedEvent) []byte {
		data, err := natsjs.EncodeBatch(events)
		if err != nil {
			tb.Fatal(err)
		}
		return data
	}},
}

// BenchmarkBatchEncoding encodes one 100-event batch shaped like the bench's, in each form,
// and reports its bytes an event.
//
//	go test -run '^$' -bench BatchEncoding ./internal/platform/natsjs
func BenchmarkBatchEncoding(b *testing.B) {
	for _, ids := range []struct{ name, tenant, source string }{{"bench-ids", benchTenant, benchSource}, {"uuid-ids", uuidTenant, uuidKey}} {
		events := accepted(b, ids.tenant, ids.source, 12345)
		for _, enc := range encodings {
			b.Run(enc.name+"/"+ids.name, func(b *testing.B) {
				var n int
				for b.Loop() {
					n = len(enc.encode(b, events))
				}
				b.ReportMetric(float64(n)/float64(len(events)), "bytes/event")
			})
		}
	}
}

// BenchmarkStreamBytes publishes b.N batches shaped like the bench's, as ingest does (message
// id, trace context), into the event stream of an embedded server, with and without S2, and
// reports per event: the bytes counted against MaxBytes (stream-B/event), the bytes on disk in
// the blocks the server has sealed (disk-B/event; S2 compresses a block when it is sealed, every
// 8 MB), and the minutes of outage the default MaxBytes holds at the bench's rate. Run it with
// enough batches to seal a few blocks:
//
//	go test -run '^$' -bench StreamBytes -benchtime 5000x ./internal/platform/natsjs
func BenchmarkStreamBytes(b *testing.B) {
	for _, enc := range encodings {
		for _, s2 := range []bool{false, true} {
			name := enc.name + "/none"
			if s2 {
				name = enc.name + "/s2"
			}
			b.Run(name, func(b *testing.B) { streamBytes(b, enc.encode, s2, false) })
		}
	}
	// As ingest publishes now: each 100-event request split into one message per partition
	// (the worst case: no coalescing of concurrent requests).
	b.Run("compact/s2/partitioned", func(b *testing.B) { streamBytes(b, encodings[1].encode, true, true) })
}

func streamBytes(b *testing.B, encode func(testing.TB, []*ingestv1.AcceptedEvent) []byte, s2, partitioned bool) {
	srv := natstest.StartServer(b)
	nc, js, err := natsjs.Connect(srv.ClientURL(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	if err := natsjs.EnsureStreams(ctx, js, natsjs.DefaultStream); err != nil {
		b.Fatal(err)
	}
	if !s2 { // the same stream as before S2 was turned on
		s, err := js.Stream(ctx, natsjs.StreamName)
		if err != nil {
			b.Fatal(err)
		}
		cfg := s.CachedInfo().Config
		cfg.Compression = jetstream.NoCompression
		if err := js.DeleteStream(ctx, natsjs.StreamName); err != nil {
			b.Fatal(err)
		}
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			b.Fatal(err)
		}
	}
	type message struct {
		part int // -1: the subject of the form before partitions
		data []byte
	}
	batches := make([][]message, 64)
	for i := range batches {
		events := accepted(b, benchTenant, benchSource, 50000+i)
		if !partitioned {
			batches[i] = []message{{-1, encode(b, events)}}
			continue
		}
		parts := map[int][]*ingestv1.AcceptedEvent{}
		for _, e := range events {
			subject := e.GetEvent().GetUserId()
			if subject == "" {
				subject = e.GetEvent().GetAnonymousId()
			}
			p := natsjs.Partition(e.GetTenantId(), subject)
			parts[p] = append(parts[p], e)
		}
		for p, evs := range parts {
			batches[i] = append(batches[i], message{p, encode(b, evs)})
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		hdr := nats.Header{}
		hdr.Set("traceparent", fmt.Sprintf("00-%032x-%016x-01", i+1, i+1))
		for _, m := range batches[i%len(batches)] {
			id := fmt.Sprintf("%064x.%d", i, m.part)
			var err error
			if m.part < 0 {
				_, err = natsjs.Publish(ctx, js, benchTenant, id, m.data, hdr)
			} else {
				_, err = natsjs.PublishPart(ctx, js, benchTenant, m.part, id, m.data, hdr)
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	s, err := js.Stream(ctx, natsjs.StreamName)
	if err != nil {
		b.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	perEvent := float64(info.State.Bytes) / float64(b.N*100)
	b.ReportMetric(perEvent, "stream-B/event")
	b.ReportMetric(float64(natsjs.DefaultStream.MaxBytes)/(perEvent*benchRate)/60, "min@95k")
	dir := filepath.Join(srv.JetStreamConfig().StoreDir, "$G", "streams", natsjs.StreamName, "msgs")
	var ratio float64
	meshtest.Eventually(b, 30*time.Second, func() bool {
		var ok bool
		ratio, ok = sealedRatio(b, dir, s2)
		return ok
	}, "the server did not compress its sealed blocks")
	if ratio > 0 {
		b.ReportMetric(perEvent*ratio, "disk-B/event")
	}
}

// sealedRatio is the bytes on disk of the sealed blocks in dir (all but the last) over their
// bytes before compression; ok is false while a sealed block is still to be compressed. It
// is 0 when no block is sealed yet.
func sealedRatio(tb testing.TB, dir string, compressed bool) (ratio float64, ok bool) {
	tb.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var blocks []int
	for _, e := range entries {
		if n, err := strconv.Atoi(strings.TrimSuffix(e.Name(), ".blk")); err == nil && strings.HasSuffix(e.Name(), ".blk") {
			blocks = append(blocks, n)
		}
	}
	slices.Sort(blocks)
	var disk, original int64
	for _, n := range blocks[:max(len(blocks)-1, 0)] {
		data, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("%d.blk", n)))
		if err != nil {
			tb.Fatal(err)
		}
		disk += int64(len(data))
		// A compressed block starts with "cmp", the algorithm and its size before (uvarint).
		if len(data) > 4 && string(data[:3]) == "cmp" {
			size, _ := binary.Uvarint(data[4:])
			original += int64(size)
		} else if compressed {
			return 0, false
		} else {
			original += int64(len(data))
		}
	}
	if original == 0 {
		return 0, true
	}
	return float64(disk) / float64(original), true
}
