package app

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
	"github.com/campaignmesh/campaignmesh/services/analytics"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
)

// watchPrivacy opens the PRIVACY bucket (creating it when missing) and loads it into a view
// kept current until Close: the writer's suppression lists, the API role's retention policies.
// It returns once the bucket's contents are loaded, so neither starts on an empty list by
// mistake; NATS refusing the bucket is a start error.
func (a *App) watchPrivacy(ctx context.Context, js jetstream.JetStream, logger *slog.Logger) (*privacy.View, error) {
	kv, err := privacy.OpenBucket(ctx, js)
	if err != nil {
		return nil, err
	}
	watch, cancel := context.WithCancel(context.Background())
	a.OnClose(cancel)
	defer context.AfterFunc(ctx, cancel)() // only the load is bounded by ctx
	view, err := privacy.Watch(watch, kv, logger)
	if err != nil {
		return nil, err
	}
	// After a NATS restart, watch again at once rather than when nats.go notices (10-20 s).
	privacy.ReloadOnReconnect(watch, js.Conn(), view)
	return view, nil
}

// suppressionOption is the writer's option that drops suppressed subjects' rows, hashing with
// the key of Config.PrivacyKeyFile; without one the writer cannot match them and says so.
func suppressionOption(cfg Config, view *privacy.View, logger *slog.Logger) ([]writer.Option, error) {
	if cfg.PrivacyKeyFile == "" {
		logger.Warn("no -privacy-key-file: the writer does not drop the in-flight events of suppressed subjects")
		return nil, nil
	}
	hasher, err := privacy.LoadHasher(cfg.PrivacyKeyFile)
	if err != nil {
		return nil, err
	}
	return []writer.Option{writer.WithSuppression(view, hasher)}, nil
}

// DefaultRetentionInterval is how often retention runs; DefaultRetentionDelay is how long after
// start it first runs.
const (
	DefaultRetentionInterval = time.Hour
	DefaultRetentionDelay    = time.Minute
)

// retentionTask returns the API role's retention loop over every shard (analytics.Retention):
// tenants' policies from view, the deployment's Config.RetentionDays.
func (a *App) retentionTask(cfg Config, view *privacy.View, logger *slog.Logger) (func(context.Context) error, error) {
	if cfg.RetentionInterval <= 0 || cfg.RetentionDelay < 0 {
		return nil, fmt.Errorf("retention: interval (%s) must be positive, first delay (%s) not negative", cfg.RetentionInterval, cfg.RetentionDelay)
	}
	stores := make([]analytics.RetentionStore, len(a.shardConns))
	for i, conn := range a.shardConns {
		stores[i] = clickhouse.NewRetention(conn)
	}
	r := analytics.NewRetention(stores, view, cfg.RetentionDays, nil, logger, a.Registry())
	return func(ctx context.Context) error { return r.Run(ctx, cfg.RetentionDelay, cfg.RetentionInterval) }, nil
}
