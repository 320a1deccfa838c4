package lifecycle

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
)

// Close runs what was registered last first, once, however often it is called.
func TestCloseReleasesLastOpenedFirstOnce(t *testing.T) {
	b := New(slog.New(slog.DiscardHandler))
	var order []int
	for i := range 3 {
		b.OnClose(func() { order = append(order, i) })
	}
	b.Close()
	b.Close()
	if !slices.Equal(order, []int{2, 1, 0}) {
		t.Fatalf("close order %v, want [2 1 0]", order)
	}
}

// A port in use fails Listen with the address in the error, and what was opened before it is
// released by Close.
func TestListenOnAPortInUseFails(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	b := New(slog.New(slog.DiscardHandler))
	err = b.Listen("127.0.0.1:0", busy.Addr().String())
	if err == nil {
		t.Fatal("Listen on a busy admin port succeeded")
	}
	grpcAddr := b.Addr()
	b.Close()
	if l, err := net.Listen("tcp", grpcAddr); err != nil {
		t.Errorf("the gRPC listener %s was not released: %v", grpcAddr, err)
	} else {
		l.Close()
	}
}

// A failing task stops the server and the admin listener, and Serve returns its error.
func TestServeStopsEverythingWhenATaskFails(t *testing.T) {
	b := New(slog.New(slog.DiscardHandler))
	defer b.Close()
	if err := b.Listen("127.0.0.1:0", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ca := mtlstest.NewCA(t)
	srv := grpcserver.New(grpcserver.WithService("test"), grpcserver.WithTLS(mtlstest.Source(t, ca, "test").ServerConfig()),
		grpcserver.WithLogger(slog.New(slog.DiscardHandler)), grpcserver.WithAuditor(discard{}))
	boom := errors.New("boom")
	fail := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- b.Serve(context.Background(), srv, func(ctx context.Context) error {
			select {
			case <-fail:
				return boom
			case <-ctx.Done():
				return nil
			}
		})
	}()
	// The admin endpoint answers while serving...
	meshtest.Eventually(t, 10*time.Second, func() bool {
		resp, err := http.Get("http://" + b.AdminAddr() + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "the admin endpoint answers")
	close(fail)
	select {
	case err := <-done:
		if !errors.Is(err, boom) {
			t.Fatalf("Serve = %v, want the task's error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after a task failed")
	}
	// ...and not after.
	if resp, err := http.Get("http://" + b.AdminAddr() + "/healthz"); err == nil {
		resp.Body.Close()
		t.Error("the admin endpoint still answers after Serve returned")
	}
}

type discard struct{}

func (discard) Record(context.Context, audit.Record) error { return nil }

// A process without a gRPC server (ListenAdmin, Serve with a nil server) serves the admin
// endpoints and runs its tasks, and has no gRPC address.
func TestServeWithoutGRPCServer(t *testing.T) {
	b := New(slog.New(slog.DiscardHandler))
	defer b.Close()
	if err := b.ListenAdmin("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if b.Addr() != "" {
		t.Errorf("Addr = %q without a gRPC listener, want empty", b.Addr())
	}
	ran := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- b.Serve(ctx, nil, func(ctx context.Context) error {
			close(ran)
			<-ctx.Done()
			return nil
		})
	}()
	meshtest.Eventually(t, 10*time.Second, func() bool {
		resp, err := http.Get("http://" + b.AdminAddr() + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "the admin endpoint answers")
	<-ran
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v after the context ended, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after the context ended")
	}
}
