// Package lifecycle is the part of a built service that every service's app package shares:
// the gRPC and admin listeners, opened when the service is built (so a port in use fails the
// build, and port 0 tells its choice before anything serves), the tasks that run together until
// the context ends or one of them fails, and the resources released on Close, last opened first.
//
// An app embeds a *Base: it gets Addr, AdminAddr, Registry and Close, registers what it opens
// with OnClose, and its Run calls Serve with its server and its background tasks.
package lifecycle

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
)

// Base holds a service's listeners, its metrics registry and what Close releases.
type Base struct {
	logger     *slog.Logger
	registry   *prometheus.Registry
	lis, admin net.Listener
	closers    []func()
	closeOnce  sync.Once
}

// New returns a Base logging to logger, with a fresh registry (telemetry.NewRegistry).
func New(logger *slog.Logger) *Base {
	return &Base{logger: logger, registry: telemetry.NewRegistry()}
}

// Registry is the service's metrics registry, served on /metrics.
func (b *Base) Registry() *prometheus.Registry { return b.registry }

// Listen opens the gRPC listener on addr and the admin one (/metrics, /healthz) on adminAddr.
// Both are closed by Close.
func (b *Base) Listen(addr, adminAddr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	b.lis = lis
	b.OnClose(func() { _ = lis.Close() }) // already closed when Serve has served on it
	return b.ListenAdmin(adminAddr)
}

// ListenAdmin opens only the admin listener (/metrics, /healthz), for a process that serves no
// gRPC (Serve with a nil server; Addr is then empty). Close closes it.
func (b *Base) ListenAdmin(adminAddr string) error {
	admin, err := net.Listen("tcp", adminAddr)
	if err != nil {
		return fmt.Errorf("listen admin %s: %w", adminAddr, err)
	}
	b.admin = admin
	b.OnClose(func() { _ = admin.Close() })
	return nil
}

// OnClose registers f to run on Close, before everything registered earlier.
func (b *Base) OnClose(f func()) { b.closers = append(b.closers, f) }

// Addr is the address the gRPC server listens on; empty after ListenAdmin alone.
func (b *Base) Addr() string {
	if b.lis == nil {
		return ""
	}
	return b.lis.Addr().String()
}

// AdminAddr is the address of /metrics and /healthz.
func (b *Base) AdminAddr() string { return b.admin.Addr().String() }

// Serve serves srv on the gRPC listener, the admin endpoints on the other, and runs each task,
// until ctx ends (then everything stops gracefully and Serve returns nil) or one of them fails:
// then the others are stopped and its error is returned. Call it once, after Listen (or, with a
// nil srv, after ListenAdmin: then only the admin endpoints and the tasks run).
func (b *Base) Serve(ctx context.Context, srv *grpcserver.Server, tasks ...func(context.Context) error) error {
	g, ctx := errgroup.WithContext(ctx)
	if srv != nil {
		g.Go(func() error { return srv.Serve(ctx, b.lis) })
	}
	g.Go(func() error { return telemetry.ServeAdminOn(ctx, b.admin, b.registry, b.logger) })
	for _, task := range tasks {
		g.Go(func() error { return task(ctx) })
	}
	return g.Wait()
}

// Close releases what was registered with OnClose (the listeners among it), last first. It is
// safe to call more than once.
func (b *Base) Close() {
	b.closeOnce.Do(func() {
		for i := len(b.closers) - 1; i >= 0; i-- {
			b.closers[i]()
		}
	})
}
