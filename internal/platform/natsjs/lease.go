package natsjs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// WriterLeaseBucket is the JetStream key-value bucket of the writers' leases: key w<index>
// holds the identity of the process writing as that index.
const WriterLeaseBucket = "EVENTS_WRITERS"

// The lease's times. A key lives WriterLeaseTTL after its last write (the bucket's TTL); its
// holder rewrites it every WriterLeaseRefresh and stops counting on it WriterLeaseHold after
// the last rewrite that succeeded (measured from before it was sent), a margin of 10 s before
// another process can take the key: a writer that cannot refresh stops writing before another
// may start.
const (
	WriterLeaseTTL     = 30 * time.Second
	WriterLeaseRefresh = 10 * time.Second
	WriterLeaseHold    = 20 * time.Second
)

// ErrWriterLeaseHeld is AcquireWriterLease's error when another process holds the index.
var ErrWriterLeaseHeld = errors.New("writer index is leased by another process")

// LeaseOption changes a lease's times (tests).
type LeaseOption func(*leaseTimes)

type leaseTimes struct{ ttl, refresh, hold time.Duration }

// WithLeaseTimes sets the bucket's TTL, the refresh period and the hold time (refresh < hold <
// ttl). The TTL is the bucket's: every writer of a deployment must use the same.
func WithLeaseTimes(ttl, refresh, hold time.Duration) LeaseOption {
	return func(t *leaseTimes) { t.ttl, t.refresh, t.hold = ttl, refresh, hold }
}

// WriterLease is one process's exclusive right to write as a writer index: two processes
// started with the same index would each insert the other's partitions' events and their
// watermarks would no longer prove what is stored. The lease is a key of WriterLeaseBucket
// taken with a revision-checked write, kept alive by a goroutine, given up by Close.
type WriterLease struct {
	kv            jetstream.KeyValue
	key, identity string
	times         leaseTimes

	base   time.Time    // monotonic origin of lastOK
	lastOK atomic.Int64 // when the last successful write was sent, since base
	closed atomic.Bool
	rev    uint64 // the key's revision written last; the refresh goroutine's, then Close's

	lost     chan struct{}
	lostOnce sync.Once
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

// AcquireWriterLease takes key w<index> of WriterLeaseBucket (created when missing) for
// identity (say hostname, pid and start time): it creates the key, or, when the key holds
// identity already (the same process coming back, or one restarted with its identity),
// rewrites it at the revision it read. A key holding another identity is not touched:
// ErrWriterLeaseHeld, until the holder closes its lease or stops refreshing it for the TTL.
// The caller retries then. The lease refreshes itself until Close.
func AcquireWriterLease(ctx context.Context, js jetstream.JetStream, index int, identity string, opts ...LeaseOption) (*WriterLease, error) {
	t := leaseTimes{ttl: WriterLeaseTTL, refresh: WriterLeaseRefresh, hold: WriterLeaseHold}
	for _, o := range opts {
		o(&t)
	}
	if !(0 < t.refresh && t.refresh < t.hold && t.hold < t.ttl) {
		return nil, fmt.Errorf("writer lease times: want 0 < refresh %s < hold %s < ttl %s", t.refresh, t.hold, t.ttl)
	}
	if identity == "" || index < 0 || index >= MaxWriters {
		return nil, fmt.Errorf("writer lease: index %d (0 to %d) and a non-empty identity are required", index, MaxWriters-1)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: WriterLeaseBucket, Description: "analytics writer leases: w<index> = identity of the process writing as that index",
		TTL: t.ttl, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", WriterLeaseBucket, err)
	}
	l := &WriterLease{kv: kv, key: "w" + strconv.Itoa(index), identity: identity, times: t, base: time.Now(),
		lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	if err := l.take(ctx); err != nil {
		return nil, err
	}
	go l.run()
	return l, nil
}

// take writes the key for the first time. The key may lapse or be closed between the tries,
// hence the few rounds.
func (l *WriterLease) take(ctx context.Context) error {
	for range 3 {
		sent := time.Now()
		rev, err := l.kv.Create(ctx, l.key, []byte(l.identity))
		if errors.Is(err, jetstream.ErrKeyExists) {
			var e jetstream.KeyValueEntry
			e, err = l.kv.Get(ctx, l.key)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				continue // lapsed or deleted since: create again
			}
			if err != nil {
				return fmt.Errorf("read writer lease %s: %w", l.key, err)
			}
			if holder := string(e.Value()); holder != l.identity {
				return fmt.Errorf("%w: %s is held by %q (it lapses %s after its holder's last refresh)", ErrWriterLeaseHeld, l.key, holder, l.times.ttl)
			}
			sent = time.Now()
			rev, err = l.kv.Update(ctx, l.key, []byte(l.identity), e.Revision())
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue // written by someone since we read it: look again
			}
		}
		if err != nil {
			return fmt.Errorf("take writer lease %s: %w", l.key, err)
		}
		l.rev = rev
		l.lastOK.Store(int64(sent.Sub(l.base)))
		return nil
	}
	return fmt.Errorf("take writer lease %s: it keeps changing hands", l.key)
}

// run refreshes the key every refresh period at the revision written last, until Close, or
// until the lease is lost: the key was written by another (or lapsed: the revision no longer
// matches), or no refresh succeeded for the hold time.
func (l *WriterLease) run() {
	defer close(l.done)
	tick := time.NewTicker(l.times.refresh)
	defer tick.Stop()
	expiry := time.NewTimer(l.remaining())
	defer expiry.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-expiry.C:
			l.markLost()
			return
		case <-tick.C:
			// Half a period: a hung request must not hold the loop past the next tick.
			ctx, cancel := context.WithTimeout(context.Background(), l.times.refresh/2)
			sent := time.Now()
			rev, err := l.kv.Update(ctx, l.key, []byte(l.identity), l.rev)
			cancel()
			switch {
			case err == nil:
				l.rev = rev
				l.lastOK.Store(int64(sent.Sub(l.base)))
				expiry.Reset(l.remaining())
			case errors.Is(err, jetstream.ErrKeyExists):
				l.markLost()
				return
			}
			// Any other error (NATS away): try again at the next tick; expiry ends it.
		}
	}
}

// remaining is how long the lease is held without another successful refresh.
func (l *WriterLease) remaining() time.Duration {
	return time.Duration(l.lastOK.Load()) + l.times.hold - time.Since(l.base)
}

func (l *WriterLease) markLost() { l.lostOnce.Do(func() { close(l.lost) }) }

// Held says whether the lease may be counted on now: not closed, not lost, and the last
// successful write sent less than the hold time ago. A writer checks it before each insert.
func (l *WriterLease) Held() bool {
	select {
	case <-l.lost:
		return false
	default:
	}
	return !l.closed.Load() && l.remaining() > 0
}

// Lost is closed when the lease is lost: another process wrote the key, or no refresh
// succeeded for the hold time. A lost lease is not taken back; the writer stops and its
// process starts over.
func (l *WriterLease) Lost() <-chan struct{} { return l.lost }

// Close stops refreshing and deletes the key if it is still ours (the delete is checked
// against the revision written last), so a successor need not wait for the TTL. A failed delete
// only leaves the key to lapse.
func (l *WriterLease) Close() {
	l.stopOnce.Do(func() {
		l.closed.Store(true)
		close(l.stop)
		<-l.done
		// Bounded briefly: a process stopping must not wait on NATS; the key lapses anyway.
		ctx, cancel := context.WithTimeout(context.Background(), min(l.times.refresh, 2*time.Second))
		defer cancel()
		_ = l.kv.Delete(ctx, l.key, jetstream.LastRevision(l.rev))
	})
}
