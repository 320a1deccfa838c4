package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
)

// NewRegistry returns a Prometheus registry with the Go runtime and process collectors and the
// validity of the process's certificates (mtls.ExpiryCollector).
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), mtls.ExpiryCollector{})
	return reg
}

// ServeAdmin serves /metrics (from reg) and /healthz on addr until ctx is done. It is the
// operator-facing listener of every process, separate from the API port.
func ServeAdmin(ctx context.Context, addr string, reg *prometheus.Registry, logger *slog.Logger) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen admin %s: %w", addr, err)
	}
	return ServeAdminOn(ctx, lis, reg, logger)
}

// ServeAdminOn is ServeAdmin on a listener the caller opened (a service's app listens when it
// is built, so that tests can ask for port 0 and learn the address). It closes lis.
func ServeAdminOn(ctx context.Context, lis net.Listener, reg *prometheus.Registry, logger *slog.Logger) error {
	mux := http.NewServeMux()
	// OpenMetrics when the scraper asks for it (Prometheus does): the only format that carries
	// exemplars (TraceExemplar). A plain GET still gets the text format.
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: true}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	logger.Info("admin listening", "addr", lis.Addr().String())
	if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve admin: %w", err)
	}
	return nil
}
