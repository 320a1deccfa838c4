package postgres_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/kek"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/services/dsr"
	"github.com/campaignmesh/campaignmesh/services/dsr/postgres"
	"github.com/campaignmesh/campaignmesh/services/dsr/receipt"
)

// fakeParticipant is a participant service in-process: it links a user id to one anonymous
// id, exports records, erases after a number of polls, and counts every call. fail makes the
// next calls fail with a code.
type fakeParticipant struct {
	name    string
	records int
	mu      sync.Mutex
	calls   map[string]int
	started map[string]bool
	polls   map[string]int
	fail    string
	// doneEvents is the events count of a finished erasure (5 unless a test lowers it: a
	// participant restarted after deleting finds nothing left to count).
	doneEvents int64
}

func newFake(name string, records int) *fakeParticipant {
	return &fakeParticipant{name: name, records: records, calls: map[string]int{}, started: map[string]bool{}, polls: map[string]int{}, doneEvents: 5}
}

func (f *fakeParticipant) Name() string { return f.name }

func (f *fakeParticipant) call(what string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[what]++
	if f.fail != "" {
		return &dsr.CallError{Code: f.fail, Err: errors.New("raw internal detail: connection refused to 10.0.0.1")}
	}
	return nil
}

func (f *fakeParticipant) setFail(code string) { f.mu.Lock(); f.fail = code; f.mu.Unlock() }

func (f *fakeParticipant) count(what string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[what]
}

func (f *fakeParticipant) Resolve(_ context.Context, _, _ string, ids []dsr.Identifier) ([]dsr.Identifier, error) {
	if err := f.call("resolve"); err != nil {
		return nil, err
	}
	var out []dsr.Identifier
	for _, id := range ids {
		if id.Kind == dsr.UserID && f.name == "analytics" {
			out = append(out, dsr.Identifier{Kind: dsr.AnonymousID, Value: "anon-of-" + id.Value})
		}
	}
	return out, nil
}

func (f *fakeParticipant) Export(_ context.Context, _, _ string, _ []dsr.Identifier, emit func(string, []byte) error) error {
	if err := f.call("export"); err != nil {
		return err
	}
	pad := strings.Repeat("x", 3000)
	for i := range f.records {
		if err := emit("event", []byte(fmt.Sprintf(`{"n": %d, "pad": %q}`, i, pad))); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeParticipant) StartErasure(_ context.Context, _, req string, _ []dsr.Identifier) (dsr.ErasureStatus, error) {
	if err := f.call("start"); err != nil {
		return dsr.ErasureStatus{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.started[req] = true
	return dsr.ErasureStatus{Counts: map[string]int64{"events": 0}, Remaining: 5}, nil
}

func (f *fakeParticipant) GetErasure(_ context.Context, _, req string) (dsr.ErasureStatus, error) {
	if err := f.call("get"); err != nil {
		return dsr.ErasureStatus{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.started[req] {
		return dsr.ErasureStatus{}, &dsr.CallError{Code: "NOT_FOUND", Err: errors.New("unknown")}
	}
	f.polls[req]++
	if f.polls[req] < 2 {
		return dsr.ErasureStatus{Counts: map[string]int64{"events": 2}, Remaining: 3}, nil
	}
	return dsr.ErasureStatus{Done: true, Counts: map[string]int64{"events": f.doneEvents}}, nil
}

// memBucket is the PRIVACY bucket's contents (the NATS adapter has its own test).
type memBucket struct {
	mu       sync.Mutex
	sup      map[string]string
	policies map[string]privacy.Policy
}

func newBucket() *memBucket {
	return &memBucket{sup: map[string]string{}, policies: map[string]privacy.Policy{}}
}

func (b *memBucket) PutSuppression(_ context.Context, t, h, r string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sup[t+"."+h] = r
	return nil
}

func (b *memBucket) DeleteSuppression(_ context.Context, t, h string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.sup, t+"."+h)
	return nil
}

func (b *memBucket) PutPolicy(_ context.Context, t string, p privacy.Policy) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.policies[t] = p
	return nil
}

func (b *memBucket) SuppressionKeys(_ context.Context, fn func(string, string)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k := range b.sup {
		t, h, _ := strings.Cut(k, ".")
		fn(t, h)
	}
	return nil
}

func (b *memBucket) has(t, h string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.sup[t+"."+h]
	return ok
}

type fixture struct {
	store  *postgres.Store
	hasher *privacy.Hasher
	bucket *memBucket
	keys   *dsr.Keyring
	svc    *dsr.Service
	parts  []*fakeParticipant
	clock  *meshtest.Clock
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	store, err := postgres.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	h, _ := privacy.NewHasher([]byte(strings.Repeat("k", 32)))
	keks, err := kek.Parse("k1:" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("e", 32))))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{store: store, hasher: h, bucket: newBucket(), keys: dsr.NewKeyring(store, keks),
		parts: []*fakeParticipant{newFake("analytics", 700), newFake("auth", 2)}, clock: meshtest.NewClock(time.Now())}
	if err := f.keys.Load(ctx); err != nil {
		t.Fatal(err)
	}
	f.svc = dsr.NewService(store, h, f.bucket, []string{"analytics", "auth"}, f.keys).WithClock(f.clock.Now)
	return f
}

// runner is a fresh runner on the fixture's database: tests make a new one for every round,
// as a restarted dsr would.
func (f *fixture) runner() *dsr.Runner {
	ps := make([]dsr.Participant, len(f.parts))
	for i, p := range f.parts {
		ps[i] = p
	}
	return dsr.NewRunner(f.store, f.hasher, f.bucket, ps, f.keys, dsr.WithRunnerClock(f.clock.Now), dsr.WithLease(time.Hour))
}

// drive runs one-round runners until the request ends, advancing the clock past every wait.
func (f *fixture) drive(t *testing.T, tenant, id string) dsr.Request {
	t.Helper()
	ctx := context.Background()
	for range 100 {
		if _, err := f.runner().RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		r, err := f.store.GetRequest(ctx, tenant, id)
		if err != nil {
			t.Fatal(err)
		}
		if !r.State.Open() {
			return r
		}
		if r.NextAttempt.After(f.clock.Now()) {
			f.clock.Advance(r.NextAttempt.Sub(f.clock.Now()) + time.Millisecond)
		}
	}
	r, _ := f.store.GetRequest(ctx, tenant, id)
	t.Fatalf("request %s did not end: %s %+v", id, r.State, r.Participants)
	return dsr.Request{}
}

func officer(tenant string) *authn.Principal {
	return &authn.Principal{TenantID: tenant, Subject: "officer-" + tenant, Role: rbac.PrivacyOfficer, Permissions: rbac.PrivacyOfficer.Permissions()}
}

func create(t *testing.T, f *fixture, tenant string, kind dsr.Kind, values ...string) dsr.Request {
	t.Helper()
	in := dsr.CreateInput{Kind: kind, Regulation: dsr.GDPR}
	for _, v := range values {
		in.Subject = append(in.Subject, dsr.Identifier{Kind: dsr.UserID, Value: v})
	}
	r, err := f.svc.CreateRequest(context.Background(), officer(tenant), in)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestErasureRunsThroughEveryStateAndSignsAReceipt(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := create(t, f, "t1", dsr.KindErasure, "u1")
	h := f.hasher.SubjectHash("t1", "u1")
	if !f.bucket.has("t1", h) {
		t.Fatal("the named identifier is not in the bucket when create answers")
	}
	if r.State != dsr.Received || len(r.Participants) != 2 {
		t.Fatalf("created: %+v", r)
	}
	var states []dsr.State
	ctx := context.Background()
	for r.State.Open() {
		if len(states) == 0 || states[len(states)-1] != r.State {
			states = append(states, r.State)
		}
		f.clock.Advance(2 * time.Second)
		if _, err := f.runner().RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		var err error
		if r, err = f.store.GetRequest(ctx, "t1", r.ID); err != nil {
			t.Fatal(err)
		}
	}
	states = append(states, r.State)
	if fmt.Sprint(states) != "[received suppressing running verifying completed]" {
		t.Fatalf("states %v", states)
	}
	linked := f.hasher.SubjectHash("t1", "anon-of-u1")
	if len(r.Covered) != 2 || !r.Covered[1].Linked || r.Covered[1].LinkedBy != "analytics" || r.Covered[1].Hash != linked {
		t.Fatalf("covered %+v", r.Covered)
	}
	if !f.bucket.has("t1", linked) {
		t.Fatal("the linked identifier is not suppressed in the bucket")
	}
	if ok, _ := f.store.Suppressed(ctx, "t1", linked); !ok {
		t.Fatal("the linked identifier is not in the suppression table")
	}
	for _, p := range r.Participants {
		if p.State != dsr.PDone || p.Counts["events"] != 5 {
			t.Fatalf("participant %+v", p)
		}
	}
	keys, _ := f.keys.Public(ctx)
	doc, err := receipt.Verify(*r.Receipt, map[string]ed25519.PublicKey{keys[0].KID: keys[0].Public})
	if err != nil {
		t.Fatalf("receipt: %v", err)
	}
	if strings.Contains(r.Receipt.Payload, "u1") || len(doc.SubjectHashes) != 1 || doc.SubjectHashes[0] != h || len(doc.CoveredHashes) != 2 {
		t.Fatalf("receipt payload %s", r.Receipt.Payload)
	}
	if reason, _ := f.svc.VerifyReceipt(ctx, *r.Receipt); reason != "" {
		t.Fatalf("verify: %s", reason)
	}
	tampered := *r.Receipt
	tampered.Payload = strings.Replace(tampered.Payload, `"events":5`, `"events":6`, 1)
	if reason, _ := f.svc.VerifyReceipt(ctx, tampered); reason != "signature mismatch" {
		t.Fatalf("tampered receipt: %q", reason)
	}
}

func TestEveryKindCompletes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	sup := create(t, f, "t1", dsr.KindSuppress, "s1")
	if r := f.drive(t, "t1", sup.ID); r.State != dsr.Completed || r.Receipt == nil {
		t.Fatalf("suppress: %+v", r)
	}
	h := f.hasher.SubjectHash("t1", "s1")
	if !f.bucket.has("t1", h) {
		t.Fatal("suppress: not in the bucket")
	}
	un := create(t, f, "t1", dsr.KindUnsuppress, "s1")
	if r := f.drive(t, "t1", un.ID); r.State != dsr.Completed {
		t.Fatalf("unsuppress: %+v", r)
	}
	if ok, _ := f.store.Suppressed(ctx, "t1", h); ok || f.bucket.has("t1", h) {
		t.Fatal("unsuppress left the suppression")
	}
	acc := create(t, f, "t1", dsr.KindAccess, "a1")
	r := f.drive(t, "t1", acc.ID)
	if r.State != dsr.Completed || r.Export == nil || r.Export.Records["analytics"] != 700 || r.Export.Records["auth"] != 2 {
		t.Fatalf("access: %+v %+v", r, r.Export)
	}
	if ok, _ := f.store.Suppressed(ctx, "t1", f.hasher.SubjectHash("t1", "a1")); ok {
		t.Fatal("access suppressed its subject")
	}
	// The export downloads in order, from chunks of at most 1 MiB (700 records of 3 KB: 3 chunks).
	var chunks int
	for p, seq := "", -1; ; chunks++ {
		c, ok, err := f.store.NextExportChunk(ctx, acc.ID, p, seq)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		if len(c.Data) > dsr.MaxChunkBytes {
			t.Fatalf("chunk of %d bytes", len(c.Data))
		}
		p, seq = c.Participant, c.Seq
	}
	if chunks < 3 {
		t.Fatalf("%d chunks", chunks)
	}
	var got []string
	err := f.svc.DownloadExport(ctx, officer("t1"), acc.ID, func(m dsr.Manifest) error {
		got = append(got, "manifest")
		return nil
	}, func(rec dsr.ExportRecord) error {
		var d struct{ N int }
		if err := json.Unmarshal(rec.Data, &d); err != nil {
			return err
		}
		got = append(got, fmt.Sprint(rec.Participant, d.N))
		return nil
	})
	if err != nil || len(got) != 703 || got[0] != "manifest" || got[1] != "analytics0" || got[700] != "analytics699" || got[702] != "auth1" {
		t.Fatalf("download: %v, %d items %v", err, len(got), got[:3])
	}
	// Another tenant gets NOT_FOUND, and 7 days after completion the export is gone.
	noop := func(dsr.Manifest) error { return nil }
	if err := f.svc.DownloadExport(ctx, officer("t2"), acc.ID, noop, nil); !apperr.HasCode(err, apperr.NotFound) {
		t.Fatalf("foreign download: %v", err)
	}
	f.clock.Advance(dsr.ExportRetention + time.Minute)
	if err := f.runner().Purge(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.DownloadExport(ctx, officer("t1"), acc.ID, noop, nil); !apperr.HasCode(err, apperr.NotFound) {
		t.Fatalf("download after 7 days: %v", err)
	}
	if _, ok, _ := f.store.NextExportChunk(ctx, acc.ID, "", -1); ok {
		t.Fatal("chunks left after the purge")
	}
	purged, _ := f.store.GetRequest(ctx, "t1", acc.ID)
	if purged.Subject[0].Value != "" || purged.Covered[0].Value != "" || purged.Covered[0].Hash == "" {
		t.Fatalf("identifiers after the purge: %+v %+v", purged.Subject, purged.Covered)
	}
}

// A runner is stopped after every round and a new one takes over: the request completes once,
// and every participant call is repeated at most as its idempotency allows.
func TestKillAndResumeBetweenEverySteps(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := create(t, f, "t1", dsr.KindErasure, "u1")
	done := f.drive(t, "t1", r.ID)
	if done.State != dsr.Completed {
		t.Fatalf("%+v", done)
	}
	for _, p := range f.parts {
		if p.count("start") != 1 || p.count("resolve") < 1 {
			t.Fatalf("%s calls %v", p.name, p.calls)
		}
	}
	// More rounds do nothing: it completed once.
	if n, _ := f.runner().RunOnce(context.Background()); n != 0 {
		t.Fatalf("a completed request was claimed again (%d)", n)
	}
}

// A runner started again under the identity of one that died holding claims (the same process
// restarted after a kill -9) takes them back at once; another identity waits out the lease.
func TestRestartedRunnerTakesBackItsClaims(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	r := create(t, f, "t1", dsr.KindErasure, "u1")
	if claimed, err := f.store.ClaimDue(ctx, "host/127.0.0.1:7105", f.clock.Now(), time.Hour, 10); err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	if n, err := f.store.ReleaseClaims(ctx, "host/127.0.0.1:7106", f.clock.Now()); err != nil || n != 0 {
		t.Fatalf("another runner's release took %d claims (%v)", n, err)
	}
	if n, _ := f.runner().RunOnce(ctx); n != 0 {
		t.Fatal("a claimed request was taken before its lease ended")
	}
	ps := make([]dsr.Participant, len(f.parts))
	for i, p := range f.parts {
		ps[i] = p
	}
	restarted := dsr.NewRunner(f.store, f.hasher, f.bucket, ps, f.keys, dsr.WithRunnerClock(f.clock.Now),
		dsr.WithLease(time.Hour), dsr.WithRunnerID("host/127.0.0.1:7105"))
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = restarted.Run(runCtx) }()
	meshtest.Eventually(t, 10*time.Second, func() bool {
		got, err := f.store.GetRequest(ctx, "t1", r.ID)
		return err == nil && got.State != dsr.Received
	}, "the restarted runner did not take back its claim")
}

// A participant that restarts after erasing reports, when started again, only what was left:
// the request keeps the highest count each participant reported, in its status and receipt.
func TestCountsSurviveAParticipantRestart(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	r := create(t, f, "t1", dsr.KindErasure, "u1")
	for range 4 { // received, suppressing, running (start), running (first poll: events 2)
		if _, err := f.runner().RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		f.clock.Advance(2 * time.Second)
	}
	for _, p := range f.parts {
		p.mu.Lock()
		p.started, p.polls, p.doneEvents = map[string]bool{}, map[string]int{}, 0 // restarted: its events are gone
		p.mu.Unlock()
	}
	done := f.drive(t, "t1", r.ID)
	for _, p := range done.Participants {
		if p.Counts["events"] != 2 {
			t.Errorf("%s counts %v after its restart, want the events 2 it reported before", p.Name, p.Counts)
		}
	}
	if !strings.Contains(done.Receipt.Payload, `"events":2`) {
		t.Errorf("receipt: %s", done.Receipt.Payload)
	}
}

// A participant that lost its state (restart) answers NOT_FOUND: the erasure is started again.
// A runner killed mid-step (its claim never released) is taken over after the lease.
func TestLostErasureIsStartedAgainAndLeasesExpire(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	r := create(t, f, "t1", dsr.KindErasure, "u1")
	claimed, err := f.store.ClaimDue(ctx, "dead", f.clock.Now(), time.Minute, 10) // a runner that dies now
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	if n, _ := f.runner().RunOnce(ctx); n != 0 {
		t.Fatal("a claimed request was taken before its lease ended")
	}
	f.clock.Advance(time.Minute + time.Second)
	for i := 0; i < 3; i++ { // received, suppressing, running (start)
		if _, err := f.runner().RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		f.clock.Advance(2 * time.Second)
	}
	for _, p := range f.parts {
		p.mu.Lock()
		p.started = map[string]bool{} // the participant restarted
		p.mu.Unlock()
	}
	if done := f.drive(t, "t1", r.ID); done.State != dsr.Completed {
		t.Fatalf("%+v", done)
	}
	for _, p := range f.parts {
		if p.count("start") != 2 {
			t.Fatalf("%s started %d times, want 2", p.name, p.count("start"))
		}
	}
}

func TestFailingParticipantRetriesVisiblyThenCompletes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	f.parts[0].setFail("UNAVAILABLE")
	r := create(t, f, "t1", dsr.KindErasure, "u1")
	for range 6 {
		f.runner().RunOnce(ctx)
		cur, _ := f.store.GetRequest(ctx, "t1", r.ID)
		if cur.NextAttempt.After(f.clock.Now()) {
			f.clock.Advance(cur.NextAttempt.Sub(f.clock.Now()) + time.Millisecond)
		}
	}
	cur, _ := f.store.GetRequest(ctx, "t1", r.ID)
	p := cur.Participants[0]
	if cur.State != dsr.Suppressing || p.State != dsr.PRetrying || p.Attempts < 3 || p.NextAttempt == nil ||
		p.LastError != "UNAVAILABLE: the participant call failed; retrying with backoff" {
		t.Fatalf("while down: %s %+v", cur.State, p)
	}
	// The backoff doubles: 1 s, 2 s, 4 s ...
	if wait := p.NextAttempt.Sub(p.UpdateTime); wait < 4*time.Second {
		t.Fatalf("backoff after %d failures: %v", p.Failures, wait)
	}
	f.parts[0].setFail("")
	if done := f.drive(t, "t1", r.ID); done.State != dsr.Completed {
		t.Fatalf("after recovery: %+v", done)
	}
	// A permanent refusal fails the request with a reason.
	f.parts[1].setFail("INVALID_ARGUMENT")
	r2 := create(t, f, "t1", dsr.KindErasure, "u2")
	failed := f.drive(t, "t1", r2.ID)
	if failed.State != dsr.Failed || !strings.Contains(failed.FailureReason, "auth") || failed.Participants[1].State != dsr.PFailed ||
		strings.Contains(failed.Participants[1].LastError, "10.0.0.1") {
		t.Fatalf("refused: %+v", failed)
	}
}

func TestCreateIsIdempotentAndValidated(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	in := dsr.CreateInput{Kind: dsr.KindErasure, Regulation: dsr.CCPA, RequestID: "retry-1",
		Subject: []dsr.Identifier{{Kind: dsr.Email, Value: "a@example.com"}}}
	var wg sync.WaitGroup
	ids := make([]string, 5)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := f.svc.CreateRequest(ctx, officer("t1"), in)
			if err != nil {
				t.Error(err)
			}
			ids[i] = r.ID
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("one request_id, several requests: %v", ids)
		}
	}
	other, err := f.svc.CreateRequest(ctx, officer("t2"), in)
	if err != nil || other.ID == ids[0] {
		t.Fatalf("the same request_id in another tenant: %v %v", other.ID, err)
	}
	for name, bad := range map[string]dsr.CreateInput{
		"no kind":        {Regulation: dsr.GDPR, Subject: in.Subject},
		"no regulation":  {Kind: dsr.KindAccess, Subject: in.Subject},
		"no subject":     {Kind: dsr.KindAccess, Regulation: dsr.GDPR},
		"21 identifiers": {Kind: dsr.KindAccess, Regulation: dsr.GDPR, Subject: make([]dsr.Identifier, 21)},
		"long value":     {Kind: dsr.KindAccess, Regulation: dsr.GDPR, Subject: []dsr.Identifier{{Kind: dsr.UserID, Value: strings.Repeat("v", 257)}}},
		"bad id kind":    {Kind: dsr.KindAccess, Regulation: dsr.GDPR, Subject: []dsr.Identifier{{Kind: "phone", Value: "1"}}},
		"bad request_id": {Kind: dsr.KindAccess, Regulation: dsr.GDPR, Subject: in.Subject, RequestID: "a b"},
	} {
		_, err := f.svc.CreateRequest(ctx, officer("t1"), bad)
		var e *apperr.Error
		if !errors.As(err, &e) || e.Code != apperr.Invalid || len(e.Violations) == 0 {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestCancelRules(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	h := f.hasher.SubjectHash("t1", "c1")
	first := create(t, f, "t1", dsr.KindSuppress, "c1")
	second := create(t, f, "t1", dsr.KindErasure, "c1")
	if _, err := f.svc.CancelRequest(ctx, officer("t2"), second.ID); !apperr.HasCode(err, apperr.NotFound) {
		t.Fatalf("foreign cancel: %v", err)
	}
	c, err := f.svc.CancelRequest(ctx, officer("t1"), second.ID)
	if err != nil || c.State != dsr.Cancelled || c.EndTime == nil {
		t.Fatalf("cancel: %+v %v", c, err)
	}
	// The other request still holds the hash: it stays suppressed.
	if ok, _ := f.store.Suppressed(ctx, "t1", h); !ok || !f.bucket.has("t1", h) {
		t.Fatal("cancel removed a suppression another request holds")
	}
	if _, err := f.svc.CancelRequest(ctx, officer("t1"), first.ID); err != nil {
		t.Fatal(err)
	}
	if ok, _ := f.store.Suppressed(ctx, "t1", h); ok || f.bucket.has("t1", h) {
		t.Fatal("the cancelled requests' suppression stayed")
	}
	// An erasure that started erasing cannot be cancelled; an access can until it ends.
	er := create(t, f, "t1", dsr.KindErasure, "c2")
	acc := create(t, f, "t1", dsr.KindAccess, "c3")
	for range 3 {
		f.runner().RunOnce(ctx)
		f.clock.Advance(2 * time.Second)
	}
	cur, _ := f.store.GetRequest(ctx, "t1", er.ID)
	if cur.State != dsr.Running && cur.State != dsr.Verifying {
		t.Fatalf("erasure in %s", cur.State)
	}
	if _, err := f.svc.CancelRequest(ctx, officer("t1"), er.ID); !apperr.HasCode(err, apperr.FailedPrecondition) {
		t.Fatalf("cancel a running erasure: %v", err)
	}
	accNow, _ := f.store.GetRequest(ctx, "t1", acc.ID)
	if accNow.State.Open() {
		if _, err := f.svc.CancelRequest(ctx, officer("t1"), acc.ID); err != nil {
			t.Fatalf("cancel an open access: %v", err)
		}
	}
	done := f.drive(t, "t1", er.ID)
	if _, err := f.svc.CancelRequest(ctx, officer("t1"), done.ID); !apperr.HasCode(err, apperr.FailedPrecondition) {
		t.Fatalf("cancel a completed request: %v", err)
	}
}

func TestExtendDeadlineOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	r := create(t, f, "t1", dsr.KindAccess, "e1")
	for _, bad := range []struct {
		days   int
		reason string
	}{{0, "x"}, {61, "x"}, {10, ""}, {10, strings.Repeat("r", 501)}} {
		if _, err := f.svc.ExtendDeadline(ctx, officer("t1"), r.ID, bad.days, bad.reason); !apperr.HasCode(err, apperr.Invalid) {
			t.Errorf("extend %d days with a reason of %d: %v", bad.days, len(bad.reason), err)
		}
	}
	if _, err := f.svc.ExtendDeadline(ctx, officer("t2"), r.ID, 10, "complex"); !apperr.HasCode(err, apperr.NotFound) {
		t.Fatalf("foreign extend: %v", err)
	}
	e, err := f.svc.ExtendDeadline(ctx, officer("t1"), r.ID, 60, "complex request")
	if err != nil || !e.Deadline.Equal(r.Deadline.AddDate(0, 0, 60)) || e.Extension == nil || e.Extension.Days != 60 {
		t.Fatalf("extend: %+v %v", e, err)
	}
	if _, err := f.svc.ExtendDeadline(ctx, officer("t1"), r.ID, 1, "again"); !apperr.HasCode(err, apperr.FailedPrecondition) {
		t.Fatalf("second extension: %v", err)
	}
	// Overdue lists and figures.
	f.clock.Advance(91 * 24 * time.Hour)
	items, _, err := f.svc.ListRequests(ctx, officer("t1"), dsr.ListRequest{Overdue: true})
	if err != nil || len(items) != 1 || !items[0].Overdue(f.clock.Now()) {
		t.Fatalf("overdue list: %v %v", items, err)
	}
	st, err := f.store.Stats(ctx, f.clock.Now())
	if err != nil || st.Open != 1 || st.Overdue != 1 || st.ByState[dsr.Received] != 1 {
		t.Fatalf("stats %+v %v", st, err)
	}
}

func TestListPagesNewestFirstWithFilters(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	var want []string
	for i := range 7 {
		f.clock.Advance(time.Second)
		kind := dsr.KindAccess
		if i%2 == 1 {
			kind = dsr.KindSuppress
		}
		r := create(t, f, "t1", kind, fmt.Sprint("l", i))
		if kind == dsr.KindAccess {
			want = append([]string{r.ID}, want...)
		}
	}
	create(t, f, "t2", dsr.KindAccess, "other")
	var got []string
	token := ""
	for {
		items, next, err := f.svc.ListRequests(ctx, officer("t1"), dsr.ListRequest{PageSize: 2, PageToken: token, Kinds: []dsr.Kind{dsr.KindAccess}})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range items {
			got = append(got, r.ID)
		}
		if next == "" {
			break
		}
		token = next
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v want %v", got, want)
	}
	if _, _, err := f.svc.ListRequests(ctx, officer("t1"), dsr.ListRequest{PageToken: token}); !apperr.HasCode(err, apperr.Invalid) {
		t.Fatalf("a token with other filters: %v", err)
	}
	sups, _, err := f.svc.ListSuppressions(ctx, officer("t1"), 0, "")
	if err != nil || len(sups) != 3 {
		t.Fatalf("suppressions %v %v", sups, err)
	}
	if s, err := f.svc.GetSuppression(ctx, officer("t1"), "l1", ""); err != nil || s.Hash != f.hasher.SubjectHash("t1", "l1") {
		t.Fatalf("lookup by value: %+v %v", s, err)
	}
	if _, err := f.svc.GetSuppression(ctx, officer("t2"), "", f.hasher.SubjectHash("t1", "l1")); !apperr.HasCode(err, apperr.NotFound) {
		t.Fatalf("foreign lookup: %v", err)
	}
}

func TestPolicyEtagAndPublish(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	p, err := f.svc.GetPolicy(ctx, officer("t1"))
	if err != nil || p.Version != 0 {
		t.Fatalf("default: %+v %v", p, err)
	}
	in := privacy.Policy{RetentionDays: 30, PropertyRules: map[string]privacy.Action{"email": privacy.ActionHash}, IP: privacy.IPTruncate}
	up, err := f.svc.UpdatePolicy(ctx, officer("t1"), in, nil, dsr.Etag(p))
	if err != nil || up.Version != 1 || up.RetentionDays != 30 {
		t.Fatalf("update: %+v %v", up, err)
	}
	if got := f.bucket.policies["t1"]; got.Version != 1 || got.PropertyRules["email"] != privacy.ActionHash {
		t.Fatalf("published %+v", got)
	}
	if _, err := f.svc.UpdatePolicy(ctx, officer("t1"), in, nil, dsr.Etag(p)); !apperr.HasCode(err, apperr.Conflict) {
		t.Fatalf("stale etag: %v", err)
	}
	only, err := f.svc.UpdatePolicy(ctx, officer("t1"), privacy.Policy{RetentionDays: 7}, []string{"retention_days"}, "")
	if err != nil || only.Version != 2 || only.RetentionDays != 7 || only.IP != privacy.IPTruncate {
		t.Fatalf("masked update: %+v %v", only, err)
	}
	for name, bad := range map[string]privacy.Policy{
		"retention": {RetentionDays: 3651},
		"action":    {PropertyRules: map[string]privacy.Action{"a": "scramble"}},
		"key":       {PropertyRules: map[string]privacy.Action{strings.Repeat("k", 129): privacy.ActionDrop}},
	} {
		if _, err := f.svc.UpdatePolicy(ctx, officer("t1"), bad, nil, ""); !apperr.HasCode(err, apperr.Invalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Reconcile puts everything back into an emptied bucket, and removes stale keys.
	create(t, f, "t1", dsr.KindSuppress, "r1")
	f.bucket = newBucket()
	f.bucket.sup["t1."+strings.Repeat("0", 64)] = "stale"
	if err := f.runner().Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if !f.bucket.has("t1", f.hasher.SubjectHash("t1", "r1")) || f.bucket.policies["t1"].Version != 2 || f.bucket.has("t1", strings.Repeat("0", 64)) {
		t.Fatalf("after reconcile: %+v", f.bucket)
	}
}
