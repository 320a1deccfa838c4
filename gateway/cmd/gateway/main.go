// Command gateway runs the edge: REST and gRPC for every service on one TLS listener.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/campaignmesh/campaignmesh/gateway"
	analyticsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/analytics/v1"
	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	billingv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/billing/v1"
	campaignsv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/campaigns/v1"
	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	auditnats "github.com/campaignmesh/campaignmesh/internal/platform/audit/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/config"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcclient"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/natsjs"
	"github.com/campaignmesh/campaignmesh/internal/platform/process"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
)

// meshBackends are the services behind the gateway: mesh name (also of the -<name>-addr flag),
// proto package, default address and REST handlers.
var meshBackends = []struct {
	name, pkg, addr string
	rest            func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error
}{
	{"auth", "campaignmesh.auth.v1", "127.0.0.1:7101", authv1.RegisterAuthServiceHandler},
	{"ingest", "campaignmesh.ingest.v1", "127.0.0.1:7102", ingestv1.RegisterIngestServiceHandler},
	{"campaigns", "campaignmesh.campaigns.v1", "127.0.0.1:7103", campaignsv1.RegisterCampaignServiceHandler},
	{"analytics", "campaignmesh.analytics.v1", "127.0.0.1:7104", analyticsv1.RegisterAnalyticsServiceHandler},
	{"dsr", "campaignmesh.dsr.v1", "127.0.0.1:7105", dsrv1.RegisterDsrServiceHandler},
	{"delivery", "campaignmesh.delivery.v1", "127.0.0.1:7106", restOf(deliveryv1.RegisterDeliveryServiceHandler, deliveryv1.RegisterSendingServiceHandler, deliveryv1.RegisterMessagesServiceHandler)},
	{"billing", "campaignmesh.billing.v1", "127.0.0.1:7107", restOf(billingv1.RegisterBillingServiceHandler, billingv1.RegisterBillingAccountServiceHandler, billingv1.RegisterReconciliationServiceHandler)},
}

// restOf registers the REST handlers of every service of a backend's package.
func restOf(regs ...func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error) func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error {
	return func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
		for _, r := range regs {
			if err := r(ctx, mux, conn); err != nil {
				return err
			}
		}
		return nil
	}
}

type settings struct {
	listen, adminListen string
	healthListen        string
	edge, mesh          mtls.Files
	nats                natsjs.ClientFlags
	addrs               map[string]*string
	rateLimit           int
	rateWindow, grace   time.Duration
	maxBodyBytes        int
	corsOrigins         string
	consoleKeyFile      string
	trustedProxies      []netip.Prefix
	logLevel            slog.Level
}

func parse(args []string) (settings, error) {
	s := settings{addrs: map[string]*string{}}
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.StringVar(&s.listen, "listen", "127.0.0.1:8443", "public TLS listen address (REST and gRPC)")
	fs.StringVar(&s.adminListen, "admin-listen", "127.0.0.1:9100", "admin listen address for /metrics and /healthz")
	fs.StringVar(&s.healthListen, "health-listen", "", "plaintext gRPC health-only listen address for Kubernetes probes (empty: none)")
	fs.StringVar(&s.edge.Cert, "edge-tls-cert", "", "certificate of the public listener (PEM) (required)")
	fs.StringVar(&s.edge.Key, "edge-tls-key", "", "private key of the public listener (PEM) (required)")
	s.mesh.RegisterFlags(fs, "gateway")
	s.nats.RegisterFlags(fs, "gateway") // the audit stream, for the records of what the edge refuses
	for _, b := range meshBackends {
		s.addrs[b.name] = fs.String(b.name+"-addr", b.addr, "address of the "+b.name+" service")
	}
	fs.IntVar(&s.rateLimit, "rate-limit", 10000, "requests allowed per client IP per -rate-window")
	fs.DurationVar(&s.rateWindow, "rate-window", 10*time.Second, "window of -rate-limit")
	fs.IntVar(&s.maxBodyBytes, "max-body-bytes", 1<<20, "largest REST request body or gRPC message in bytes")
	fs.StringVar(&s.corsOrigins, "cors-origins", "", "comma-separated origins allowed by CORS (\"*\" for any; empty for none)")
	fs.StringVar(&s.consoleKeyFile, "console-session-key-file", "", "file holding the key (at least 32 bytes) that seals the web console's session cookies; replicas must share it (empty: a random key per process, so sessions end at a restart)")
	var proxies string
	fs.StringVar(&proxies, "trusted-proxies", "", "comma-separated CIDRs of proxies in front of the gateway whose X-Forwarded-For is believed (empty: none; the TCP peer is the client)")
	fs.DurationVar(&s.grace, "grace-period", 10*time.Second, "how long a stop waits for requests in flight")
	fs.TextVar(&s.logLevel, "log-level", slog.LevelInfo, "log level (debug, info, warn, error)")
	if err := config.Parse(fs, "CM_GATEWAY", args); err != nil {
		return s, err
	}
	var p config.Problems
	var err error
	s.trustedProxies, err = gateway.ParseTrustedProxies(proxies)
	p.Check(err == nil, "-trusted-proxies: %v", err)
	p.Check(s.edge.Cert != "" && s.edge.Key != "", "-edge-tls-cert and -edge-tls-key are required")
	p.Check(s.mesh.Complete(), "-tls-cert, -tls-key and -tls-ca are required")
	s.nats.Check(&p)
	p.Check(s.rateLimit > 0 && s.rateWindow >= time.Second, "-rate-limit must be positive and -rate-window at least 1s")
	p.Check(s.maxBodyBytes >= 1024 && s.maxBodyBytes <= 64<<20, "-max-body-bytes must be between 1 KiB and 64 MiB")
	return s, p.Err()
}

// readKeyFile reads a secret key file (surrounding white space is not part of the key).
func readKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("console session key: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) < 32 || len(b) > 4096 {
		return nil, fmt.Errorf("console session key %s: must hold 32 to 4096 bytes, has %d", path, len(b))
	}
	return b, nil
}

// LogLevel implements process.Settings.
func (s settings) LogLevel() slog.Level { return s.logLevel }

func main() { process.Main("gateway", parse, run) }

func run(ctx context.Context, s settings, logger *slog.Logger) error {
	mesh, err := mtls.NewSource(s.mesh, logger)
	if err != nil {
		return err
	}
	edge, err := mtls.NewSource(s.edge, logger)
	if err != nil {
		return err
	}
	var backends []gateway.Backend
	conns := map[string]*grpc.ClientConn{}
	for _, b := range meshBackends {
		conn, err := grpcclient.Dial(*s.addrs[b.name], b.name, mesh)
		if err != nil {
			return err
		}
		defer conn.Close()
		conns[b.name] = conn
		backends = append(backends, gateway.Backend{Package: b.pkg, Conn: conn, RegisterREST: b.rest})
	}
	// Audit: what the edge refuses becomes records in the audit stream, delivered to auth by auditSink.Run.
	nc, js, err := s.nats.Connect("gateway")
	if err != nil {
		return err
	}
	defer nc.Close()
	auditSink, err := auditnats.New(ctx, js, "gateway", authv1.NewAuthServiceClient(conns["auth"]), logger, auditnats.DefaultConfig)
	if err != nil {
		return err
	}

	var origins []string
	for _, o := range strings.Split(s.corsOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			origins = append(origins, o)
		}
	}
	var consoleKey []byte
	if s.consoleKeyFile != "" {
		if consoleKey, err = readKeyFile(s.consoleKeyFile); err != nil {
			return err
		}
	} else {
		logger.Info("console sessions sealed with a random key: they end when this gateway restarts (set -console-session-key-file to share one across replicas)")
	}
	reg := telemetry.NewRegistry()
	gw, err := gateway.New(ctx, gateway.Config{ConsoleSessionKey: consoleKey,
		RateLimit: s.rateLimit, RateWindow: s.rateWindow, MaxBodyBytes: s.maxBodyBytes,
		CORSOrigins: origins, TrustedProxies: s.trustedProxies, Logger: logger, Registry: reg, Auditor: auditSink,
	}, backends)
	if err != nil {
		return err
	}

	lis, err := net.Listen("tcp", s.listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.listen, err)
	}
	// The probes' view of the gateway: SERVING while it serves, NOT_SERVING from the start of
	// its shutdown until it has drained (drained), as its own gRPC health says.
	probes, drained := health.NewServer(), make(chan struct{})
	probes.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	var healthLis net.Listener
	if s.healthListen != "" {
		if healthLis, err = net.Listen("tcp", s.healthListen); err != nil {
			_ = lis.Close()
			return fmt.Errorf("listen health %s: %w", s.healthListen, err)
		}
	}
	srv := &http.Server{
		Handler:           gw,
		TLSConfig:         edge.EdgeServerConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		gw.SetServing(true)
		probes.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		logger.Info("gateway listening", "addr", lis.Addr().String())
		if err := srv.ServeTLS(lis, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		gw.SetServing(false)
		probes.Shutdown()
		defer close(drained)
		shutdownCtx, cancel := context.WithTimeout(context.Background(), s.grace)
		defer cancel()
		err := srv.Shutdown(shutdownCtx)
		gw.Stop()
		return err
	})
	if healthLis != nil {
		g.Go(func() error {
			logger.Info("grpc health listening", "addr", healthLis.Addr().String())
			return grpcserver.NewHealthOnly(probes).Serve(ctx, healthLis, drained)
		})
	}
	g.Go(func() error { return telemetry.ServeAdmin(ctx, s.adminListen, reg, logger) })
	g.Go(func() error { return auditSink.Run(ctx) })
	return g.Wait()
}
