package deadletters_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/services/analytics/deadletters"
)

// streams is deploy/nats.conf's server: the store runs as analytics, the admin inspects.
type streams struct {
	analytics, admin jetstream.JetStream
}

func newStreams(t *testing.T) *streams {
	t.Helper()
	srv, users := natstest.StartSecured(t)
	connect := func(u natstest.User) jetstream.JetStream {
		nc, js, err := natsjs.Connect(srv.ClientURL(), u.Name, natsjs.WithUser(u.Name, u.Password))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return js
	}
	s := &streams{analytics: connect(users.Analytics), admin: connect(users.Admin)}
	if err := natsjs.EnsureStreams(context.Background(), s.admin, natsjs.DefaultStream); err != nil {
		t.Fatal(err)
	}
	return s
}

// deadLetter stores data in the dead-letter stream as the writer does (as analytics), from
// subject (none: a dead letter of before the subject header), and returns its sequence.
func (s *streams) deadLetter(t *testing.T, subject string, data []byte) uint64 {
	t.Helper()
	msg := &nats.Msg{Subject: natsjs.DeadLetterSubj, Data: data, Header: nats.Header{}}
	msg.Header.Set("Cm-Reason", "test")
	if subject != "" {
		msg.Header.Set(deadletters.SubjectHeader, subject)
	}
	ack, err := s.analytics.PublishMsg(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

func batch(t *testing.T, tenant string, subjects ...[2]string) []byte {
	t.Helper()
	var events []*ingestv1.AcceptedEvent
	now := timestamppb.New(time.Now())
	for i, s := range subjects {
		events = append(events, &ingestv1.AcceptedEvent{TenantId: tenant, ReceivedAt: now, CorrectedTime: now,
			Event: &ingestv1.Event{EventId: string(rune('a' + i)), Type: ingestv1.EventType_EVENT_TYPE_CLICK, UserId: s[0], AnonymousId: s[1]}})
	}
	data, err := natsjs.EncodeBatch(events)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// remaining are the sequences the dead-letter stream still holds.
func (s *streams) remaining(t *testing.T) map[uint64]bool {
	t.Helper()
	ctx := context.Background()
	st, err := s.admin.Stream(ctx, natsjs.DeadLetterName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]bool{}
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		if _, err := st.GetMsg(ctx, seq); err == nil {
			out[seq] = true
		} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Fatal(err)
		}
	}
	return out
}

// An erasure deletes exactly the dead letters of the tenant holding the subject's user or
// anonymous id — decodable batches by their events, undecodable ones by their bytes (plain or
// compressed) when the subject header or their bytes name the tenant — as the analytics user
// of deploy/nats.conf, over several fetches; another tenant's dead letters of the same ids stay,
// and a second call deletes nothing.
func TestDeleteSubjectDeletesTheSubjectsDeadLetters(t *testing.T) {
	s := newStreams(t)
	ctx := context.Background()
	gone := map[uint64]bool{}
	keep := map[uint64]bool{}
	add := func(into map[uint64]bool, subject string, data []byte) { into[s.deadLetter(t, subject, data)] = true }
	t1p := natsjs.Subject("t1", 3)
	add(gone, t1p, batch(t, "t1", [2]string{"u-gone", ""}))
	add(gone, t1p, batch(t, "t1", [2]string{"other", ""}, [2]string{"", "anon-gone"})) // one event of the subject among others
	add(gone, t1p, batch(t, "t1", [2]string{"linked", "anon-gone"}))
	add(gone, "", batch(t, "t1", [2]string{"u-gone", ""})) // no subject header: decodes, names t1
	add(gone, t1p, []byte("garbage holding u-gone"))
	add(gone, "", []byte("t1 garbage holding anon-gone, no header"))
	broken, _ := natsjs.EncodeBatch([]*ingestv1.AcceptedEvent{{TenantId: "t1", Event: &ingestv1.Event{UserId: "u-gone"}}})
	add(gone, t1p, append(broken[:len(broken)-1:len(broken)-1], 0xff)) // compressed, then cut: no longer decodes
	for range 150 {                                                    // more than a fetch
		add(keep, t1p, batch(t, "t1", [2]string{"other", "anon-other"}))
	}
	add(keep, natsjs.Subject("t2", 3), batch(t, "t2", [2]string{"u-gone", "anon-gone"})) // another tenant's subject
	add(keep, natsjs.Subject("t2", 3), []byte("garbage holding u-gone"))
	add(keep, "", []byte("garbage holding u-gone, no tenant named"))
	add(keep, t1p, []byte("garbage of t1 without the ids"))

	n, err := deadletters.NewStore(s.analytics).DeleteSubject(ctx, "t1", []string{"u-gone", "anon-gone"})
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(gone)) {
		t.Errorf("deleted %d dead letters, want %d", n, len(gone))
	}
	left := s.remaining(t)
	for seq := range gone {
		if left[seq] {
			t.Errorf("dead letter %d of the subject is left", seq)
		}
	}
	for seq := range keep {
		if !left[seq] {
			t.Errorf("dead letter %d, not the subject's, was deleted", seq)
		}
	}
	if n, err := deadletters.NewStore(s.analytics).DeleteSubject(ctx, "t1", []string{"u-gone", "anon-gone"}); err != nil || n != 0 {
		t.Errorf("second call: %d, %v; want 0 deleted", n, err)
	}
	// An empty stream, or no ids: nothing to do.
	if n, err := deadletters.NewStore(s.analytics).DeleteSubject(ctx, "t9", nil); err != nil || n != 0 {
		t.Errorf("no ids: %d, %v", n, err)
	}
}

// The analytics user reads the dead-letter stream and deletes from it, nothing more: it cannot
// delete messages of the event stream or purge the dead-letter stream.
func TestAnalyticsUserMayOnlyReadAndDeleteDeadLetters(t *testing.T) {
	s := newStreams(t)
	// A refused request has no answer: each waits a second.
	short := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		t.Cleanup(cancel)
		return ctx
	}
	ctx := short()
	seq := s.deadLetter(t, natsjs.Subject("t1", 0), []byte("x"))
	dlq, err := s.analytics.Stream(ctx, natsjs.DeadLetterName)
	if err != nil {
		t.Fatal(err)
	}
	if err := dlq.Purge(short()); err == nil {
		t.Error("the analytics user purged the dead-letter stream")
	}
	if _, err := s.analytics.CreateOrUpdateConsumer(short(), natsjs.DeadLetterName, jetstream.ConsumerConfig{Durable: "keep", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: natsjs.DeadLetterSubj}); err == nil {
		t.Error("the analytics user created a consumer with a filter on the dead-letter stream")
	}
	if err := s.analytics.DeleteStream(short(), natsjs.DeadLetterName); err == nil {
		t.Error("the analytics user deleted the dead-letter stream")
	}
	if !s.remaining(t)[seq] {
		t.Error("the dead letter is gone")
	}
}
