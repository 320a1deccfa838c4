package natsjs_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
)

// The real deploy/nats.conf, the PRIVACY bucket: ingest and analytics create it when missing,
// watch it and read keys, and watch it to the end without a permission violation; dsr also
// writes and deletes keys and updates the stream; nobody else writes a key, deletes the
// stream or purges it, and the gateway cannot even read it. dsr has no other right.
func TestNATSPrivacyBucketRights(t *testing.T) {
	srv, users := natstest.StartSecured(t)
	url := srv.ClientURL()
	ctx := context.Background()
	// A refused request gets no answer: it ends at its timeout.
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 300*time.Millisecond) }
	adminJS, _ := connectAs(t, url, users.Admin)
	h, err := privacy.NewHasher([]byte(strings.Repeat("k", privacy.MinKeyBytes)))
	if err != nil {
		t.Fatal(err)
	}

	// ingest starts first: it creates the bucket.
	ingestJS, ingestErrs := connectAs(t, url, users.Ingest)
	ingestKV, err := privacy.OpenBucket(ctx, ingestJS)
	if err != nil {
		t.Fatalf("ingest creates the privacy bucket: %v", err)
	}
	analyticsJS, analyticsErrs := connectAs(t, url, users.Analytics)
	analyticsKV, err := privacy.OpenBucket(ctx, analyticsJS)
	if err != nil {
		t.Fatalf("analytics opens the privacy bucket: %v", err)
	}
	dsrJS, dsrErrs := connectAs(t, url, users.DSR)
	dsrKV, err := privacy.OpenBucket(ctx, dsrJS)
	if err != nil {
		t.Fatalf("dsr opens the privacy bucket: %v", err)
	}

	// dsr writes; ingest and analytics watch and read what it writes.
	watchCtx, stopWatches := context.WithCancel(ctx)
	views := map[string]*privacy.View{}
	for name, kv := range map[string]jetstream.KeyValue{"ingest": ingestKV, "analytics": analyticsKV, "dsr": dsrKV} {
		if views[name], err = privacy.Watch(watchCtx, kv, slog.New(slog.DiscardHandler)); err != nil {
			t.Fatalf("%s watches the privacy bucket: %v", name, err)
		}
	}
	gone, kept := h.SubjectHash("t1", "gone"), h.SubjectHash("t1", "kept")
	for _, hash := range []string{gone, kept} {
		if err := privacy.PutSuppression(ctx, dsrKV, "t1", hash, "dsr_1"); err != nil {
			t.Fatalf("dsr puts a suppression: %v", err)
		}
	}
	if err := privacy.PutPolicy(ctx, dsrKV, "t1", privacy.Policy{Version: 1, IP: privacy.IPTruncate}); err != nil {
		t.Fatalf("dsr puts a policy: %v", err)
	}
	if err := privacy.DeleteSuppression(ctx, dsrKV, "t1", gone); err != nil {
		t.Fatalf("dsr deletes a suppression: %v", err)
	}
	for name, v := range views {
		meshtest.Eventually(t, 10*time.Second, func() bool {
			return v.Suppressed("t1", kept) && !v.Suppressed("t1", gone) && v.Policy("t1").IP == privacy.IPTruncate
		}, "%s's view did not follow dsr's writes", name)
	}
	for name, kv := range map[string]jetstream.KeyValue{"ingest": ingestKV, "analytics": analyticsKV, "dsr": dsrKV} {
		if e, err := kv.Get(ctx, privacy.SuppressionKey("t1", kept)); err != nil || string(e.Value()) != "dsr_1" {
			t.Fatalf("%s reads a key: %v", name, err)
		}
	}
	if _, err := dsrJS.UpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: privacy.Bucket, History: 1, Storage: jetstream.FileStorage,
		Description: "updated by dsr"}); err != nil {
		t.Fatalf("dsr updates the bucket: %v", err)
	}
	stopWatches()
	// The watches ended cleanly (their consumers deleted): no right was missing on the way.
	for name, errs := range map[string]func() []error{"ingest": ingestErrs, "analytics": analyticsErrs, "dsr": dsrErrs} {
		if hasPermissionError(errs()) {
			t.Errorf("%s's bucket use met permission violations: %v", name, errs())
		}
	}

	// Refused: ingest, analytics and the gateway write or delete a key; the gateway reads.
	gatewayJS, gatewayErrs := connectAs(t, url, users.Gateway)
	forged := h.SubjectHash("t1", "forged")
	for name, js := range map[string]jetstream.JetStream{"ingest": ingestJS, "analytics": analyticsJS, "gateway": gatewayJS} {
		_, _ = js.Conn().Request("$KV."+privacy.Bucket+"."+privacy.SuppressionKey("t1", forged), []byte("forged"), 300*time.Millisecond)
		_, _ = js.Conn().Request("$KV."+privacy.Bucket+"."+privacy.PolicyKey("t1"), []byte(`{"version":9}`), 300*time.Millisecond)
		wctx, cancel := short()
		if _, err := js.Publish(wctx, "$KV."+privacy.Bucket+"."+privacy.SuppressionKey("t1", kept), nil, jetstream.WithMsgID("del")); err == nil {
			t.Errorf("%s deleted a suppression", name)
		}
		cancel()
		wctx, cancel = short()
		if _, err := js.UpdateKeyValue(wctx, jetstream.KeyValueConfig{Bucket: privacy.Bucket, History: 5}); err == nil {
			t.Errorf("%s updated the bucket", name)
		}
		cancel()
		wctx, cancel = short()
		if err := js.DeleteKeyValue(wctx, privacy.Bucket); err == nil {
			t.Errorf("%s deleted the bucket", name)
		}
		cancel()
		if _, err := js.Conn().Request("$JS.API.STREAM.PURGE.KV_"+privacy.Bucket, nil, 300*time.Millisecond); err == nil {
			t.Errorf("%s purged the bucket", name)
		}
	}
	adminKV, err := adminJS.KeyValue(ctx, privacy.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adminKV.Get(ctx, privacy.SuppressionKey("t1", forged)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("a forged suppression is in the bucket: %v", err)
	}
	if e, err := adminKV.Get(ctx, privacy.PolicyKey("t1")); err != nil || strings.Contains(string(e.Value()), `"version":9`) {
		t.Errorf("the policy after forged writes: %s, %v", e.Value(), err)
	}
	if _, err := adminKV.Get(ctx, privacy.SuppressionKey("t1", kept)); err != nil {
		t.Errorf("the suppression after forged deletes: %v", err)
	}
	wctx, cancel := short()
	if _, err := gatewayJS.KeyValue(wctx, privacy.Bucket); err == nil {
		t.Error("the gateway opened the privacy bucket")
	}
	cancel()
	if _, err := gatewayJS.Conn().Request("$JS.API.DIRECT.GET.KV_"+privacy.Bucket+".$KV."+privacy.Bucket+"."+privacy.PolicyKey("t1"), nil, 300*time.Millisecond); err == nil {
		t.Error("the gateway read a key")
	}
	for name, errs := range map[string]func() []error{"ingest": ingestErrs, "analytics": analyticsErrs, "gateway": gatewayErrs} {
		if !hasPermissionError(errs()) {
			t.Errorf("%s's forbidden requests met no permission violation", name)
		}
	}

	// dsr has nothing else: no events, no audit records, no other stream or bucket.
	dsrRaw, dsrRawErrs := connectAs(t, url, users.DSR)
	wctx, cancel = short()
	if err := natsjs.EnsureStreams(wctx, dsrRaw, natsjs.DefaultStream); err == nil {
		t.Error("dsr created the event stream")
	}
	cancel()
	for _, subject := range []string{natsjs.Subject("t1", 0), "audit.dsr", "audit.ingest", natsjs.DeadLetterSubj} {
		wctx, cancel := short()
		if _, err := dsrRaw.Publish(wctx, subject, []byte("forged")); err == nil {
			t.Errorf("dsr published on %s", subject)
		}
		cancel()
	}
	wctx, cancel = short()
	if _, err := dsrRaw.CreateKeyValue(wctx, jetstream.KeyValueConfig{Bucket: "OTHER"}); err == nil {
		t.Error("dsr created another bucket")
	}
	cancel()
	wctx, cancel = short()
	if _, err := natsjs.AcquireWriterLease(wctx, dsrRaw, 0, "dsr"); err == nil {
		t.Error("dsr took a writer's lease")
	}
	cancel()
	wctx, cancel = short()
	if err := dsrRaw.DeleteKeyValue(wctx, privacy.Bucket); err == nil {
		t.Error("dsr deleted the privacy bucket")
	}
	cancel()
	if !hasPermissionError(dsrRawErrs()) {
		t.Errorf("dsr's forbidden requests met no permission violation: %v", dsrRawErrs())
	}
}
