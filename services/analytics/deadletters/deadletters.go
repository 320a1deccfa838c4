// Package deadletters erases a data subject from the dead-letter stream (natsjs.DeadLetterName):
// the batches the writer could not store — undecodable, or forged for another tenant or
// partition — are kept there for 30 days with their reason, and may hold the subject's events.
// A subject's erasure (the analytics participant) deletes every such message, so nothing of the
// subject stays in analytics' keeping.
package deadletters

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats.go/jetstream"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
)

// SubjectHeader is the header of a dead letter naming the event stream subject its batch was
// published on (events.<tenant>.<p>, or events.<tenant>): the writer sets it, so a dead letter
// that does not decode still tells its tenant.
const SubjectHeader = "Cm-Subject"

// Store is the dead-letter stream as an erasure needs it.
type Store struct {
	js jetstream.JetStream
	// fetch is how many messages a scan takes at a time: its memory is about fetch messages
	// (a batch is at most 2 MiB, the event stream's MaxMsgSize: 32 MiB at most).
	fetch int
}

// NewStore returns the dead-letter stream reached through js. The NATS user needs: stream info
// of EVENTS_DLQ, creating, pulling from and deleting its own ephemeral ordered consumers on it
// (names are random), and deleting messages of it (see deploy/nats.conf, user analytics).
func NewStore(js jetstream.JetStream) *Store { return &Store{js: js, fetch: 16} }

// DeleteSubject deletes, and erases from disk, every dead letter of tenant that holds an event
// whose user id or anonymous id is among ids, and returns how many it deleted. A message is of
// the tenant when its events or the subject it came on (SubjectHeader) name it; one that does not
// decode is deleted when it is of the tenant (or, without SubjectHeader, holds the tenant's id)
// and holds any of ids as bytes — a conservative match: it may take other poison of the tenant
// too, never the subject's data left behind. It reads the stream once, in order, up to its last
// message when the call began, so its memory is bounded by a fetch, whatever the stream holds;
// calling it again after a success deletes nothing more.
func (s *Store) DeleteSubject(ctx context.Context, tenant string, ids []string) (int64, error) {
	if tenant == "" || len(ids) == 0 {
		return 0, nil
	}
	stream, err := s.js.Stream(ctx, natsjs.DeadLetterName)
	if err != nil {
		return 0, fmt.Errorf("dead-letter stream: %w", err)
	}
	state := stream.CachedInfo().State
	if state.Msgs == 0 {
		return 0, nil
	}
	last := state.LastSeq
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{InactiveThreshold: time.Minute})
	if err != nil {
		return 0, fmt.Errorf("read dead-letter stream: %w", err)
	}
	m := newMatcher(tenant, ids)
	var deleted int64
	// A fetch asks for no more than the stream holds beyond what was read (the last message's
	// NumPending), so it returns as soon as they came rather than waiting out its time.
	pending := state.Msgs
	for {
		batch, err := cons.Fetch(int(min(uint64(s.fetch), pending)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return deleted, fmt.Errorf("read dead-letter stream: %w", err)
		}
		n, done := 0, false
		for msg := range batch.Messages() {
			n++
			meta, err := msg.Metadata()
			if err != nil {
				return deleted, fmt.Errorf("read dead-letter stream: %w", err)
			}
			if meta.Sequence.Stream > last {
				done = true
				break
			}
			if m.matches(msg) {
				// Erased, not only marked deleted: the bytes are overwritten on disk.
				if err := stream.SecureDeleteMsg(ctx, meta.Sequence.Stream); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
					return deleted, fmt.Errorf("delete dead letter %d: %w", meta.Sequence.Stream, err)
				}
				deleted++
			}
			if meta.Sequence.Stream == last || meta.NumPending == 0 {
				done = true
			}
			pending = meta.NumPending
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrNoMessages) {
			return deleted, fmt.Errorf("read dead-letter stream: %w", err)
		}
		if done || n == 0 { // n == 0: the rest aged out or was deleted meanwhile
			return deleted, nil
		}
	}
}

// matcher tells a subject's dead letters.
type matcher struct {
	tenant string
	ids    map[string]struct{}
	raw    [][]byte
}

func newMatcher(tenant string, ids []string) *matcher {
	m := &matcher{tenant: tenant, ids: make(map[string]struct{}, len(ids))}
	for _, id := range ids {
		if id == "" {
			continue
		}
		m.ids[id] = struct{}{}
		m.raw = append(m.raw, []byte(id))
	}
	return m
}

func (m *matcher) matches(msg jetstream.Msg) bool {
	subjectTenant, known := "", false
	if subj := msg.Headers().Get(SubjectHeader); subj != "" {
		subjectTenant, _, known = natsjs.ParseSubject(subj)
	}
	b, err := natsjs.DecodeBatch(msg.Data())
	if err == nil && len(b.GetEvents()) > 0 {
		for _, e := range b.GetEvents() {
			if (e.GetTenantId() == m.tenant || subjectTenant == m.tenant) && m.holds(e) {
				return true
			}
		}
		return false
	}
	if known && subjectTenant != m.tenant {
		return false
	}
	// Undecodable: look for the ids in its bytes, and in its decompressed bytes when it
	// decompresses (batches are S2-compressed, behind a zero byte).
	data := msg.Data()
	views := [][]byte{data}
	if len(data) > 1 && data[0] == 0 {
		if n, err := s2.DecodedLen(data[1:]); err == nil && n <= 4<<20 {
			if plain, err := s2.Decode(make([]byte, n), data[1:]); err == nil {
				views = append(views, plain)
			}
		}
	}
	for _, v := range views {
		if !known && !bytes.Contains(v, []byte(m.tenant)) {
			continue
		}
		for _, id := range m.raw {
			if bytes.Contains(v, id) {
				return true
			}
		}
	}
	return false
}

func (m *matcher) holds(e *ingestv1.AcceptedEvent) bool {
	for _, id := range []string{e.GetEvent().GetUserId(), e.GetEvent().GetAnonymousId()} {
		if _, ok := m.ids[id]; ok && id != "" {
			return true
		}
	}
	return false
}
