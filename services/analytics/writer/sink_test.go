package writer_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer/writerfault"
)

// memSink is an in-memory writer.Sink that keeps the contract of the interface (atomic
// inserts of one month with their commits, watermarks per partition and month, one offset per
// stream incarnation, the keys of the events stored), fails on demand, and records every breach
// of the exactly-once argument it sees: a row inserted whose partition, month and sequence are
// stored already (twice), rows above the watermark out of order, an event (tenant and event id)
// inserted again, commits that do not match the rows, or a row whose message was acknowledged
// before its insert.
type memSink struct {
	// acked tells whether the message at a stream sequence was acknowledged already.
	acked func(seq uint64) bool

	mu       sync.Mutex
	stored   []writer.Row
	sets     [][]writer.Row // what each stored insert held
	attempts int            // inserts tried
	settles  int            // settles tried
	lookups  int            // Stored calls
	seenKeys int            // keys asked about in Seen calls
	// forgetBefore: the keys of events received before it are dropped (DropIDsBefore).
	forgetBefore time.Time
	watermarks   map[writer.PartMonth]uint64
	committed    map[writer.PartMonth][]uint64 // the sequences the stored commits list
	epochs       map[uint64]uint64
	// The next failInserts inserts fail storing nothing; the next loseAnswers store their
	// rows and fail all the same (the answer was lost); the next failSettles settles fail.
	failInserts, loseAnswers, failSettles int
	problems                              []string
}

func newMemSink(s *streams) *memSink {
	return &memSink{epochs: map[uint64]uint64{}, watermarks: map[writer.PartMonth]uint64{}, committed: map[writer.PartMonth][]uint64{},
		acked: func(seq uint64) bool {
			stream, err := s.admin.Stream(context.Background(), natsjs.StreamName)
			if err != nil {
				return false
			}
			// The work-queue stream deletes a message when it is acknowledged.
			_, err = stream.GetMsg(context.Background(), seq)
			return errors.Is(err, jetstream.ErrMsgNotFound)
		}}
}

func pmOf(r writer.Row) writer.PartMonth {
	return writer.PartMonth{Part: r.Part, Month: writer.MonthOf(r.Event.GetCorrectedTime().AsTime())}
}

func (m *memSink) Insert(ctx context.Context, month uint32, rows []writer.Row, commits []writer.Commit) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var early []uint64
	for _, r := range rows {
		if !slices.Contains(early, r.Seq) && m.acked(r.Seq) {
			early = append(early, r.Seq)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.attempts++
	for _, seq := range early {
		m.problems = append(m.problems, fmt.Sprintf("message %d acknowledged before its insert", seq))
	}
	if m.failInserts > 0 {
		m.failInserts--
		return errors.New("store down")
	}
	// The commits are the rows' partitions and sequences.
	want := map[int][]uint64{}
	for _, r := range rows {
		if pmOf(r).Month != month {
			m.problems = append(m.problems, fmt.Sprintf("event %s of month %d in the block of %d", r.Event.GetEvent().GetEventId(), pmOf(r).Month, month))
		}
		if !slices.Contains(want[r.Part], r.Seq) {
			want[r.Part] = append(want[r.Part], r.Seq)
		}
	}
	if len(commits) != len(want) {
		m.problems = append(m.problems, fmt.Sprintf("%d commits for rows of %d partitions", len(commits), len(want)))
	}
	for _, c := range commits {
		seqs := want[c.Part]
		slices.Sort(seqs)
		if !slices.Equal(seqs, c.Seqs) {
			m.problems = append(m.problems, fmt.Sprintf("commit of partition %d lists %v, the rows %v", c.Part, c.Seqs, seqs))
		}
	}
	// Rows above the watermark come in stream order; below it only batches not stored yet
	// (redelivered late) may come.
	last := map[writer.PartMonth]uint64{}
	for i, r := range rows {
		pm := pmOf(r)
		if slices.Contains(m.committed[pm], r.Seq) {
			m.problems = append(m.problems, fmt.Sprintf("event %s (seq %d) inserted again", r.Event.GetEvent().GetEventId(), r.Seq))
		}
		if k := keyOf(r); m.hasKey(k) || slices.ContainsFunc(rows[:i], func(o writer.Row) bool { return keyOf(o) == k }) {
			m.problems = append(m.problems, fmt.Sprintf("event %s of tenant %s (seq %d) inserted again", k.EventID, k.Tenant, r.Seq))
		}
		if r.Seq > m.watermarks[pm] {
			if r.Seq < last[pm] {
				m.problems = append(m.problems, fmt.Sprintf("event %s (seq %d) inserted out of order", r.Event.GetEvent().GetEventId(), r.Seq))
			}
			last[pm] = r.Seq
		}
	}
	m.stored = append(m.stored, rows...)
	m.sets = append(m.sets, slices.Clone(rows))
	for _, c := range commits {
		pm := writer.PartMonth{Part: c.Part, Month: month}
		m.committed[pm] = append(m.committed[pm], c.Seqs...)
		m.watermarks[pm] = max(m.watermarks[pm], c.Seqs[len(c.Seqs)-1])
	}
	if m.loseAnswers > 0 {
		m.loseAnswers--
		return errors.New("connection reset before the answer")
	}
	return nil
}

func (m *memSink) Settle(ctx context.Context, parts []int) (map[writer.PartMonth]uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.settles++
	if m.failSettles > 0 {
		m.failSettles--
		return nil, errors.New("store down")
	}
	out := map[writer.PartMonth]uint64{}
	for pm, w := range m.watermarks {
		if parts == nil || slices.Contains(parts, pm.Part) {
			out[pm] = w
		}
	}
	return out, ctx.Err()
}

// raise raises every partition's watermark of the current month by n, past batches not stored.
func (m *memSink) raise(n uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	month := writer.MonthOf(time.Now())
	var top uint64
	for _, w := range m.watermarks {
		top = max(top, w)
	}
	for p := range natsjs.Partitions {
		m.watermarks[writer.PartMonth{Part: p, Month: month}] = top + n
	}
}

func (m *memSink) Stored(ctx context.Context, pm writer.PartMonth, seqs []uint64) ([]uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lookups++
	var out []uint64
	for _, q := range seqs {
		if slices.Contains(m.committed[pm], q) {
			out = append(out, q)
		}
	}
	return out, ctx.Err()
}

func keyOf(r writer.Row) writer.EventKey {
	return writer.EventKey{Tenant: r.Event.GetTenantId(), EventID: r.Event.GetEvent().GetEventId()}
}

// hasKey tells whether the event of k is stored and its key not dropped; m.mu is held.
func (m *memSink) hasKey(k writer.EventKey) bool {
	return slices.ContainsFunc(m.stored, func(r writer.Row) bool { return keyOf(r) == k })
}

// known tells whether the key of r is still kept (not dropped by DropIDsBefore); m.mu is held.
func (m *memSink) known(r writer.Row) bool {
	return !r.Event.GetReceivedAt().AsTime().Before(m.forgetBefore)
}

func (m *memSink) Seen(ctx context.Context, keys []writer.EventKey) ([]writer.EventKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seenKeys += len(keys)
	var out []writer.EventKey
	for _, k := range keys {
		if slices.ContainsFunc(m.stored, func(r writer.Row) bool { return keyOf(r) == k && m.known(r) }) {
			out = append(out, k)
		}
	}
	return out, ctx.Err()
}

func (m *memSink) RecentIDs(ctx context.Context, since time.Time, fn func(writer.EventKey)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.stored {
		if m.known(r) && !r.Event.GetReceivedAt().AsTime().Before(since) {
			fn(keyOf(r))
		}
	}
	return ctx.Err()
}

func (m *memSink) DropIDsBefore(_ context.Context, before time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if before.After(m.forgetBefore) {
		m.forgetBefore = before
	}
	return nil
}

func (m *memSink) SeqOffset(_ context.Context, streamCreated, watermark uint64) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.epochs[streamCreated]
	if !ok {
		o = watermark
		m.epochs[streamCreated] = o
	}
	return o, nil
}

// counts is how often each event id is stored.
func (m *memSink) counts() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{}
	for _, r := range m.stored {
		out[r.Event.GetEvent().GetEventId()]++
	}
	return out
}

// keyCounts is how often each event (tenant and event id) is stored, and rows how many rows
// are: what a count over the stored rows, such as the rollup's, answers.
func (m *memSink) keyCounts() (counts map[writer.EventKey]int, rows int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	counts = map[writer.EventKey]int{}
	for _, r := range m.stored {
		counts[keyOf(r)]++
	}
	return counts, len(m.stored)
}

func (m *memSink) stats() (attempts, inserts int, problems []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.attempts, len(m.sets), slices.Clone(m.problems)
}

// run starts a writer into sink until cancel; stopped checks that Run then returns nil.
func (s *streams) run(t *testing.T, sink writer.Sink, cfg writer.Config, opts ...writer.Option) (cancel context.CancelFunc, result <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return cancel, s.runCtx(ctx, sink, cfg, opts...)
}

func (s *streams) runCtx(ctx context.Context, sink writer.Sink, cfg writer.Config, opts ...writer.Option) <-chan error {
	res := make(chan error, 1)
	w := writer.New(s.writerJS, []writer.Sink{sink}, cfg, slog.New(slog.DiscardHandler), nil, opts...)
	go func() { res <- w.Run(ctx) }()
	return res
}

func stopped(t *testing.T, cancel context.CancelFunc, result <-chan error) {
	t.Helper()
	cancel()
	select {
	case err := <-result:
		if err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
}

// inStream is how many messages the work-queue stream still holds (not acknowledged).
func (s *streams) inStream(t *testing.T) uint64 {
	t.Helper()
	stream, err := s.admin.Stream(context.Background(), natsjs.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// deadLetters are the reasons of the messages in the dead-letter stream.
func (s *streams) deadLetters(t *testing.T) []string {
	t.Helper()
	ctx := context.Background()
	dlq, err := s.admin.Stream(ctx, natsjs.DeadLetterName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := dlq.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		msg, err := dlq.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, msg.Header.Get("Cm-Reason"))
	}
	return out
}

// publishRaw stores data on tenant's subject of the form before partitions (as the admin: ingest
// may no longer publish there), as a forged or broken publisher would.
func (s *streams) publishRaw(t *testing.T, tenant, msgID string, data []byte) {
	t.Helper()
	if _, err := natsjs.Publish(context.Background(), s.admin, tenant, msgID, data, nil); err != nil {
		t.Fatal(err)
	}
}

func batchOf(tenant string, ids ...string) []byte {
	b := &ingestv1.AcceptedBatch{}
	now := timestamppb.Now()
	for _, id := range ids {
		b.Events = append(b.Events, &ingestv1.AcceptedEvent{TenantId: tenant, ReceivedAt: now, CorrectedTime: now,
			Event: &ingestv1.Event{EventId: id, Type: ingestv1.EventType_EVENT_TYPE_CLICK, UserId: "u"}})
	}
	data, _ := proto.Marshal(b)
	return data
}

var quick = writer.Config{BatchRows: 10000, MaxWait: 100 * time.Millisecond}

// The writer's order, ack, watermark, dead-letter and retry rules against a sink that fails on
// demand, on a real JetStream. Every case ends with each acknowledged event stored exactly
// once, every row inserted above the watermark in stream order, no message acknowledged before
// its insert, and the stream empty.
func TestWriterProtocol(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  writer.Config
		// sink sets up failures; publish fills the stream before the writer starts.
		sink    func(*memSink)
		publish func(t *testing.T, s *streams)
		// crashAfter > 0: a first writer crashes right after that many inserts, before its
		// acks (writerfault); afterCrash publishes more before the second writer starts.
		crashAfter int
		afterCrash func(t *testing.T, s *streams, m *memSink)
		want       []string // the event ids stored, each once
		wantDead   []string // what the dead-letter reasons contain, in order
		check      func(t *testing.T, m *memSink)
	}{{
		name: "batches are inserted in stream order and acknowledged after",
		publish: func(t *testing.T, s *streams) {
			s.publish(t, "b1", ids("a", 10)...)
			s.publish(t, "b2", ids("b", 10)...)
			s.publish(t, "b3", ids("c", 10)...)
		},
		want: slices.Concat(ids("a", 10), ids("b", 10), ids("c", 10)),
	}, {
		name: "an insert that fails is retried and nothing is acknowledged before it succeeds",
		sink: func(m *memSink) { m.failInserts = 2 },
		publish: func(t *testing.T, s *streams) {
			s.publish(t, "b1", ids("a", 10)...)
		},
		want: ids("a", 10),
		check: func(t *testing.T, m *memSink) {
			if attempts, inserts, _ := m.stats(); attempts != 3 || inserts != 1 {
				t.Errorf("%d insert attempts storing %d sets, want 3 attempts and 1 set", attempts, inserts)
			}
		},
	}, {
		name: "an insert whose answer is lost is not inserted again",
		sink: func(m *memSink) { m.loseAnswers = 1 },
		publish: func(t *testing.T, s *streams) {
			s.publish(t, "b1", ids("a", 10)...)
		},
		want: ids("a", 10),
		check: func(t *testing.T, m *memSink) {
			if attempts, inserts, _ := m.stats(); attempts != 1 || inserts != 1 {
				t.Errorf("%d insert attempts storing %d sets, want 1 of each (the settle shows it landed)", attempts, inserts)
			}
		},
	}, {
		name: "a store down at start is waited for",
		sink: func(m *memSink) { m.failSettles = 3 },
		publish: func(t *testing.T, s *streams) {
			s.publish(t, "b1", ids("a", 10)...)
		},
		want: ids("a", 10),
	}, {
		name:       "a crash between insert and ack: the next writer skips what is at or below the watermark",
		crashAfter: 1,
		publish: func(t *testing.T, s *streams) {
			s.publish(t, "b1", ids("a", 10)...)
			s.publish(t, "b2", ids("b", 10)...)
		},
		afterCrash: func(t *testing.T, s *streams, _ *memSink) {
			s.publish(t, "b3", ids("c", 10)...)
		},
		want: slices.Concat(ids("a", 10), ids("b", 10), ids("c", 10)),
		check: func(t *testing.T, m *memSink) {
			if _, inserts, _ := m.stats(); inserts != 2 {
				t.Errorf("%d sets stored, want 2 (the crashed one and the batch published after)", inserts)
			}
		},
	}, {
		// A batch delivered but not received (a fetch that ended as the server sent it, a
		// broken connection) comes again after the ack wait, behind newer sets that raised the
		// watermark. Here the watermark is raised past batches the sink does not have.
		name:       "a batch delivered below the watermark that is not stored is inserted, not skipped",
		crashAfter: 1,
		publish: func(t *testing.T, s *streams) {
			s.publish(t, "b1", ids("a", 10)...)
		},
		afterCrash: func(t *testing.T, s *streams, m *memSink) {
			s.publish(t, "b2", ids("b", 10)...)
			s.publish(t, "b3", ids("c", 10)...)
			m.raise(10)
		},
		want: slices.Concat(ids("a", 10), ids("b", 10), ids("c", 10)),
		check: func(t *testing.T, m *memSink) {
			if _, inserts, _ := m.stats(); inserts != 2 {
				t.Errorf("%d sets stored, want 2 (the crashed one, then the late batches)", inserts)
			}
		},
	}, {
		name: "a message that is no batch goes to the dead-letter stream",
		publish: func(t *testing.T, s *streams) {
			s.publishRaw(t, "t1", "poison", []byte("not a batch"))
			s.publishRaw(t, "t1", "empty", batchOf("t1"))
			s.publish(t, "good", ids("g", 10)...)
		},
		want:     ids("g", 10),
		wantDead: []string{"undecodable batch", "undecodable batch"},
	}, {
		name: "a batch on another tenant's subject goes to the dead-letter stream",
		publish: func(t *testing.T, s *streams) {
			s.publishRaw(t, "tenant-b", "forged", batchOf("tenant-a", "forged"))
			s.publish(t, "good", ids("g", 10)...)
		},
		want:     ids("g", 10),
		wantDead: []string{`tenant mismatch: event 0 has tenant "tenant-a" on subject "events.tenant-b"`},
	}, {
		// MaxWait is far longer than the test waits: only the size bound can write the set.
		name: "a set is inserted as soon as it holds BatchRows rows",
		cfg:  writer.Config{BatchRows: 10, MaxWait: time.Hour},
		publish: func(t *testing.T, s *streams) {
			s.publish(t, "b1", ids("a", 5)...)
			s.publish(t, "b2", ids("b", 5)...)
		},
		want: slices.Concat(ids("a", 5), ids("b", 5)),
	}, {
		name: "a set smaller than BatchRows is inserted after MaxWait",
		cfg:  writer.Config{BatchRows: 1000000, MaxWait: 100 * time.Millisecond},
		publish: func(t *testing.T, s *streams) {
			s.publish(t, "b1", ids("a", 3)...)
		},
		want: ids("a", 3),
		check: func(t *testing.T, m *memSink) {
			if _, inserts, _ := m.stats(); inserts != 1 {
				t.Errorf("%d sets stored, want 1", inserts)
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStreams(t)
			m := newMemSink(s)
			if tc.sink != nil {
				tc.sink(m)
			}
			cfg := tc.cfg
			if cfg == (writer.Config{}) {
				cfg = quick
			}
			tc.publish(t, s)
			published := s.inStream(t)
			if tc.crashAfter > 0 {
				// The crash stops the writer by cancelling its context, after the insert.
				ctx, crash := context.WithCancel(context.Background())
				t.Cleanup(crash)
				res := s.runCtx(ctx, writerfault.CrashAfterInserts(m, tc.crashAfter, crash), cfg)
				select {
				case err := <-res:
					if err != nil {
						t.Fatalf("crashed Run = %v, want nil", err)
					}
				case <-time.After(15 * time.Second):
					t.Fatal("the writer did not reach the injected crash")
				}
				if n := s.inStream(t); n != published {
					t.Fatalf("after the crash %d of %d messages are unacknowledged, want all", n, published)
				}
				if len(m.counts()) == 0 {
					t.Fatal("the crashed writer stored nothing")
				}
				if tc.afterCrash != nil {
					tc.afterCrash(t, s, m)
				}
			}
			cancel, result := s.run(t, m, cfg)
			meshtest.Eventually(t, 20*time.Second, func() bool {
				return s.inStream(t) == 0 && len(m.counts()) >= len(tc.want)
			}, "the writer did not store and acknowledge every batch")
			stopped(t, cancel, result)

			counts := m.counts()
			for _, id := range tc.want {
				if counts[id] != 1 {
					t.Errorf("event %s stored %d times, want once", id, counts[id])
				}
			}
			if len(counts) != len(tc.want) {
				t.Errorf("%d events stored, want %d", len(counts), len(tc.want))
			}
			if _, _, problems := m.stats(); len(problems) > 0 {
				t.Errorf("exactly-once breaches:\n%s", strings.Join(problems, "\n"))
			}
			dead := s.deadLetters(t)
			if len(dead) != len(tc.wantDead) {
				t.Errorf("dead letters %q, want %d", dead, len(tc.wantDead))
			}
			for i := range min(len(dead), len(tc.wantDead)) {
				if !strings.Contains(dead[i], tc.wantDead[i]) {
					t.Errorf("dead letter %d reason %q, want it to contain %q", i, dead[i], tc.wantDead[i])
				}
			}
			if tc.check != nil {
				tc.check(t, m)
			}
		})
	}
}

// A writer retrying a store that is down stops when its context ends, returns nil and
// acknowledges nothing.
func TestWriterStopsWhenCancelledWhileRetrying(t *testing.T) {
	for _, tc := range []struct {
		name     string
		sink     func(*memSink)
		retrying func(*memSink) bool
	}{{
		name:     "the watermark at start",
		sink:     func(m *memSink) { m.failSettles = 1 << 30 },
		retrying: func(m *memSink) bool { m.mu.Lock(); defer m.mu.Unlock(); return m.settles >= 2 },
	}, {
		name:     "an insert",
		sink:     func(m *memSink) { m.failInserts = 1 << 30 },
		retrying: func(m *memSink) bool { attempts, _, _ := m.stats(); return attempts >= 2 },
	}} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStreams(t)
			m := newMemSink(s)
			tc.sink(m)
			s.publish(t, "b1", ids("a", 10)...)
			cancel, result := s.run(t, m, quick)
			meshtest.Eventually(t, 20*time.Second, func() bool { return tc.retrying(m) }, "the writer is not retrying")
			stopped(t, cancel, result)
			if n := len(m.counts()); n != 0 {
				t.Errorf("%d events stored, want none", n)
			}
			if n := s.inStream(t); n != 1 {
				t.Errorf("%d messages left unacknowledged, want 1", n)
			}
		})
	}
}

// Run returns the error that stops it: the stream or the writer's consumer deleted under it
// (also in the middle of collecting a set, which is written first), or a configuration that
// bounds no set.
func TestRunReturnsTheFatalError(t *testing.T) {
	deleteStream := func(t *testing.T, s *streams) {
		if err := s.admin.DeleteStream(context.Background(), natsjs.StreamName); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		cfg  writer.Config
		// ready tells when to break things; nil: at once.
		ready  func(s *streams, m *memSink) bool
		breaks func(t *testing.T, s *streams)
		want   string   // in the error
		stored []string // written before Run returned
	}{{
		name:   "stream deleted while idle",
		cfg:    quick,
		ready:  func(s *streams, m *memSink) bool { return len(m.counts()) == 10 },
		breaks: deleteStream,
		want:   "stream " + natsjs.StreamName,
		stored: ids("a", 10),
	}, {
		name:  "consumer deleted while idle",
		cfg:   quick,
		ready: func(s *streams, m *memSink) bool { return len(m.counts()) == 10 },
		breaks: func(t *testing.T, s *streams) {
			if err := s.admin.DeleteConsumer(context.Background(), natsjs.StreamName, writer.ConsumerName); err != nil {
				t.Fatal(err)
			}
		},
		want:   "consumer " + writer.ConsumerName,
		stored: ids("a", 10),
	}, {
		// The batch is delivered and the writer waits for more (MaxWait is an hour).
		name: "stream deleted while a set is collected",
		cfg:  writer.Config{BatchRows: 1000000, MaxWait: time.Hour},
		ready: func(s *streams, m *memSink) bool {
			c, err := s.admin.Consumer(context.Background(), natsjs.StreamName, writer.ConsumerName)
			if err != nil {
				return false
			}
			info, err := c.Info(context.Background())
			return err == nil && info.NumAckPending == 1
		},
		breaks: deleteStream,
		want:   "stream " + natsjs.StreamName,
		stored: ids("a", 10),
	}, {
		name:   "configuration bounds no set",
		cfg:    writer.Config{BatchRows: 0, MaxWait: time.Second},
		breaks: func(*testing.T, *streams) {},
		want:   "batch rows (0)",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStreams(t)
			m := newMemSink(s)
			s.publish(t, "b1", ids("a", 10)...)
			_, result := s.run(t, m, tc.cfg)
			if tc.ready != nil {
				meshtest.Eventually(t, 20*time.Second, func() bool { return tc.ready(s, m) }, "not ready to break")
			}
			tc.breaks(t, s)
			select {
			case err := <-result:
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Run = %v, want an error naming %q", err, tc.want)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("Run did not return")
			}
			counts := m.counts()
			for _, id := range tc.stored {
				if counts[id] != 1 {
					t.Errorf("event %s stored %d times, want once", id, counts[id])
				}
			}
			if len(counts) != len(tc.stored) {
				t.Errorf("%d events stored, want %d", len(counts), len(tc.stored))
			}
		})
	}
}
