package privacy_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/natstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
)

// syncBuffer is a log destination tests read while the View writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// A View keeps following the bucket across a NATS restart (same store, same port): a
// suppression put after the restart arrives, within the documented bound (nats.go alone), and
// within seconds with ReloadOnReconnect.
func TestViewFollowsTheBucketAcrossANATSRestart(t *testing.T) {
	for _, reload := range []bool{false, true} {
		t.Run(fmt.Sprintf("reload on reconnect %v", reload), func(t *testing.T) { followAcrossRestart(t, reload) })
	}
}

func followAcrossRestart(t *testing.T, reloadOnReconnect bool) {
	if testing.Short() {
		t.Skip("waits for the watch to notice the restart (about 10-20 s)")
	}
	store := t.TempDir()
	configure := func(port int) func(*server.Options) {
		return func(o *server.Options) { o.StoreDir, o.Port = store, port }
	}
	srv := natstest.StartServerWith(t, configure(-1))
	_, portText, _ := net.SplitHostPort(srv.Addr().String())
	port, _ := strconv.Atoi(portText)
	nc, js, err := natsjs.Connect(srv.ClientURL(), "privacy-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kv, err := privacy.OpenBucket(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	h := hasher(t, "k")
	if err := privacy.PutSuppression(ctx, kv, "t1", h.SubjectHash("t1", "before"), "dsr_1"); err != nil {
		t.Fatal(err)
	}
	v, err := privacy.Watch(ctx, kv, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	bound := 30 * time.Second
	if reloadOnReconnect {
		privacy.ReloadOnReconnect(ctx, nc, v)
		bound = 5 * time.Second
	}

	srv.Shutdown()
	srv.WaitForShutdown()
	natstest.StartServerWith(t, configure(port))
	meshtest.Eventually(t, 10*time.Second, func() bool { return nc.IsConnected() }, "the client did not reconnect")
	restarted := time.Now()
	after := h.SubjectHash("t1", "after")
	meshtest.Eventually(t, 10*time.Second, func() bool {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return privacy.PutSuppression(pctx, kv, "t1", after, "dsr_2") == nil
	}, "the suppression could not be put after the restart")
	meshtest.Eventually(t, bound, func() bool { return v.Suppressed("t1", after) },
		"a suppression put after a NATS restart did not reach the view")
	t.Logf("applied %s after NATS came back", time.Since(restarted).Round(100*time.Millisecond))
	if !v.Suppressed("t1", h.SubjectHash("t1", "before")) {
		t.Error("the suppression of before the restart is gone")
	}
}

// When the watch ends (here: the bucket's stream is deleted, so nats.go cannot recreate its
// consumer and closes the watch), the View keeps what it had, watches again until the bucket is
// back, and then holds the bucket's new contents exactly: keys gone meanwhile are gone.
func TestViewWatchesAgainWhenTheWatchEnds(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the watch to notice (about 10-20 s)")
	}
	srv := natstest.StartServer(t)
	nc, js, err := natsjs.Connect(srv.ClientURL(), "privacy-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kv, err := privacy.OpenBucket(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	h := hasher(t, "k")
	old := h.SubjectHash("t1", "old")
	if err := privacy.PutSuppression(ctx, kv, "t1", old, "dsr_1"); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	v, err := privacy.Watch(ctx, kv, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(ctx, privacy.Bucket); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 40*time.Second, func() bool { return strings.Contains(logs.String(), "watching it again") },
		"the view did not notice its watch ended")
	if !v.Suppressed("t1", old) {
		t.Fatal("the view dropped its contents while the bucket was away")
	}
	kv, err = privacy.OpenBucket(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	fresh := h.SubjectHash("t1", "new")
	if err := privacy.PutSuppression(ctx, kv, "t1", fresh, "dsr_2"); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 30*time.Second, func() bool { return v.Suppressed("t1", fresh) && !v.Suppressed("t1", old) },
		"the view did not load the bucket again")
	if !strings.Contains(logs.String(), "watched again") {
		t.Errorf("logs: %s", logs.String())
	}
}
