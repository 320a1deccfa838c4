// Package lifecycle is the part of a built service that every service's app package shares:
// the gRPC and admin listeners, opened when the service is built (so a port in use fails the
// build, and port 0 tells its choice before anything serves), the tasks that run together until
// the context ends or one of them fails, and the resources released on Close, last opened first.
//
// An app embeds a *Base: it gets Addr, AdminAddr, Registry and Close, registers what it opens
// with OnClose, and its Run calls Serve with its server and its background tasks. With
// ListenHealth it also serves a plaintext gRPC health-only port for Kubernetes probes.
package lifecycle

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/health"

	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
)

// Base holds a service's listeners, its metrics registry and what Close releases.
type Base struct {
	logger     *slog.Logger
	registry   *prometheus.Registry
	lis, admin net.Listener
	health     net.Listener // nil: no health-only port
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

// ListenHealth opens the plaintext gRPC health-only listener (grpcserver.HealthOnly) on addr,
// the port Kubernetes probes call; an empty addr opens none. Close closes it.
func (b *Base) ListenHealth(addr string) error {
	if addr == "" {
		return nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen health %s: %w", addr, err)
	}
	b.health = lis
	b.OnClose(func() { _ = lis.Close() })
	return nil
}

// HealthAddr is the address of the health-only port; empty without ListenHealth.
func (b *Base) HealthAddr() string {
	if b.health == nil {
		return ""
	}
	return b.health.Addr().String()
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
//
// After ListenHealth, the health-only port serves srv's health (grpcserver.Server.ServeHealth);
// without a server, it answers SERVING while the tasks run (the analytics writer alone), and
// NOT_SERVING from the moment they are asked to stop until they have.
func (b *Base) Serve(ctx context.Context, srv *grpcserver.Server, tasks ...func(context.Context) error) error {
	g, ctx := errgroup.WithContext(ctx)
	if srv != nil {
		g.Go(func() error { return srv.Serve(ctx, b.lis) })
		if b.health != nil {
			g.Go(func() error { return srv.ServeHealth(ctx, b.health) })
		}
	}
	g.Go(func() error { return telemetry.ServeAdminOn(ctx, b.admin, b.registry, b.logger) })
	var running sync.WaitGroup
	for _, task := range tasks {
		running.Add(1)
		g.Go(func() error {
			defer running.Done()
			return task(ctx)
		})
	}
	if srv == nil && b.health != nil {
		drained := make(chan struct{})
		go func() { running.Wait(); close(drained) }()
		status := health.NewServer() // SERVING: the tasks have started
		g.Go(func() error {
			stop := context.AfterFunc(ctx, status.Shutdown)
			defer stop()
			b.logger.Info("grpc health listening", "addr", b.health.Addr().String())
			return grpcserver.NewHealthOnly(status).Serve(ctx, b.health, drained)
		})
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
