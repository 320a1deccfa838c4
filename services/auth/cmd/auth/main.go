// Command auth runs the auth service: tenants, users, login and token signing keys.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/config"
	"github.com/campaignmesh/campaignmesh/internal/platform/grpcserver"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls"
	"github.com/campaignmesh/campaignmesh/internal/platform/process"
	"github.com/campaignmesh/campaignmesh/internal/platform/telemetry"
	"github.com/campaignmesh/campaignmesh/services/auth"
	"github.com/campaignmesh/campaignmesh/services/auth/grpcapi"
	"github.com/campaignmesh/campaignmesh/services/auth/postgres"
)

type settings struct {
	listen, adminListen, postgresURL string
	tls                              mtls.Files
	tokenTTL, grace                  time.Duration
	refreshAbsoluteTTL               time.Duration
	bootstrapDir                     string
	maxRecvMsgSize                   int
	logLevel                         slog.Level

	// keks are never logged: only their ids appear in messages.
	keks *auth.KeyEncryptionKeys
}

func parse(args []string) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("auth", flag.ContinueOnError)
	fs.StringVar(&s.listen, "listen", "127.0.0.1:7101", "gRPC (mTLS) listen address")
	fs.StringVar(&s.adminListen, "admin-listen", "127.0.0.1:9101", "admin listen address for /metrics and /healthz")
	fs.StringVar(&s.postgresURL, "postgres-url", "", "PostgreSQL URL of the auth database (required)")
	s.tls.RegisterFlags(fs, "auth")
	fs.DurationVar(&s.tokenTTL, "access-token-ttl", auth.DefaultAccessTokenTTL, "lifetime of access tokens (1m to 1h)")
	fs.DurationVar(&s.refreshAbsoluteTTL, "refresh-absolute-ttl", auth.DefaultRefreshAbsoluteTTL, "how long a session lives from its login, however often it is refreshed (1h to 8760h)")
	var kekSpec, kekFile string
	fs.StringVar(&kekSpec, "key-encryption-keys", "", "keys that encrypt the token signing keys at rest: id:base64(32 bytes),… — the first encrypts, all decrypt (required, or -key-encryption-keys-file)")
	fs.StringVar(&kekFile, "key-encryption-keys-file", "", "file holding -key-encryption-keys (e.g. a mounted secret)")
	fs.StringVar(&s.bootstrapDir, "bootstrap-dir", "", "on the very first start, write the operator's and first admin's credentials here (empty: no bootstrap)")
	fs.IntVar(&s.maxRecvMsgSize, "max-recv-msg-size", 1<<20, "largest request message in bytes")
	fs.DurationVar(&s.grace, "grace-period", grpcserver.DefaultGracePeriod, "how long a stop waits for calls in flight")
	fs.TextVar(&s.logLevel, "log-level", slog.LevelInfo, "log level (debug, info, warn, error)")
	if err := config.Parse(fs, "CM_AUTH", args); err != nil {
		return s, err
	}
	var p config.Problems
	p.Check(s.postgresURL != "", "-postgres-url is required")
	p.Check(s.tls.Complete(), "-tls-cert, -tls-key and -tls-ca are required")
	p.Check(s.tokenTTL >= time.Minute && s.tokenTTL <= time.Hour, "-access-token-ttl must be between 1m and 1h")
	p.Check(s.refreshAbsoluteTTL >= time.Hour && s.refreshAbsoluteTTL <= 365*24*time.Hour, "-refresh-absolute-ttl must be between 1h and 8760h")
	keks, err := loadKEKs(kekSpec, kekFile)
	p.Check(err == nil, "%v", err)
	s.keks = keks
	p.Check(s.maxRecvMsgSize >= 1024 && s.maxRecvMsgSize <= 64<<20, "-max-recv-msg-size must be between 1 KiB and 64 MiB")
	return s, p.Err()
}

// loadKEKs reads the key-encryption keys from the flag or the file (exactly one of them).
func loadKEKs(spec, file string) (*auth.KeyEncryptionKeys, error) {
	switch {
	case spec != "" && file != "":
		return nil, fmt.Errorf("set one of -key-encryption-keys and -key-encryption-keys-file, not both")
	case file != "":
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read -key-encryption-keys-file: %w", err)
		}
		spec = string(data)
	}
	if strings.TrimSpace(spec) == "" {
		return nil, auth.ErrNoKEK
	}
	return auth.ParseKeyEncryptionKeys(spec)
}

// LogLevel implements process.Settings.
func (s settings) LogLevel() slog.Level { return s.logLevel }

func main() { process.Main("auth", parse, run) }

func run(ctx context.Context, s settings, logger *slog.Logger) error {
	certs, err := mtls.NewSource(s.tls, logger)
	if err != nil {
		return err
	}
	store, err := postgres.Open(ctx, s.postgresURL)
	if err != nil {
		return err
	}
	defer store.Close()
	svc := auth.NewService(store, s.tokenTTL).WithRefreshAbsoluteTTL(s.refreshAbsoluteTTL).WithKeyEncryption(s.keks)
	if err := svc.Keys().Load(ctx); err != nil {
		return err
	}
	if s.bootstrapDir != "" {
		files, err := svc.Bootstrap(ctx, s.bootstrapDir)
		if err != nil {
			return err
		}
		if len(files) > 0 {
			// The files hold passwords; only their names are logged.
			logger.Info("first start: created the platform operator and tenant acme; credentials written", "files", files)
		}
	}

	opts, err := grpcapi.ServerOptions(ctx, svc, store, logger)
	if err != nil {
		return err
	}
	reg := telemetry.NewRegistry()
	srv := grpcserver.New(append(opts,
		grpcserver.WithTLS(certs.ServerConfig()),
		grpcserver.WithMetrics(reg),
		grpcserver.WithMaxRecvMsgSize(s.maxRecvMsgSize),
		grpcserver.WithGracePeriod(s.grace),
	)...)
	authv1.RegisterAuthServiceServer(srv.GRPC(), grpcapi.NewServer(svc))
	lis, err := net.Listen("tcp", s.listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.listen, err)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(ctx, lis) })
	g.Go(func() error { return telemetry.ServeAdmin(ctx, s.adminListen, reg, logger) })
	return g.Wait()
}
