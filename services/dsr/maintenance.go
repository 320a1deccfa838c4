package dsr

import (
	"context"
	"time"
)

// Maintain runs the periodic work until ctx ends: reconcile (at once, then every
// ReconcileInterval), purge (every PurgeInterval) and the open-request figures (every
// StatsInterval). A failed round is logged and tried again at the next tick.
func (r *Runner) Maintain(ctx context.Context) error {
	r.reconcileLogged(ctx)
	r.purgeLogged(ctx)
	r.statsLogged(ctx)
	rec, purge, stats := time.NewTicker(ReconcileInterval), time.NewTicker(PurgeInterval), time.NewTicker(StatsInterval)
	defer rec.Stop()
	defer purge.Stop()
	defer stats.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-rec.C:
			r.reconcileLogged(ctx)
		case <-purge.C:
			r.purgeLogged(ctx)
		case <-stats.C:
			r.statsLogged(ctx)
		}
	}
}

func (r *Runner) reconcileLogged(ctx context.Context) {
	if err := r.Reconcile(ctx); err != nil && ctx.Err() == nil {
		r.logger.Warn("reconcile the privacy bucket; retrying at the next round", "error", err)
	}
}

func (r *Runner) purgeLogged(ctx context.Context) {
	if err := r.Purge(ctx); err != nil && ctx.Err() == nil {
		r.logger.Warn("purge expired exports and identifiers", "error", err)
	}
}

func (r *Runner) statsLogged(ctx context.Context) {
	if err := r.UpdateStats(ctx); err != nil && ctx.Err() == nil {
		r.logger.Warn("count open requests", "error", err)
	}
}

// Reconcile makes the PRIVACY bucket converge on the database: it puts every suppression and
// every policy again, and deletes suppression keys that no suppression row holds (a crash
// between a commit and the bucket write, or a cancel racing a job, leaves at most that).
func (r *Runner) Reconcile(ctx context.Context) error {
	held := map[[2]string]bool{}
	err := r.store.EachSuppression(ctx, func(s Suppression) error {
		held[[2]string{s.TenantID, s.Hash}] = true
		return r.pub.PutSuppression(ctx, s.TenantID, s.Hash, s.RequestID)
	})
	if err != nil {
		return err
	}
	if err := r.store.EachPolicy(ctx, func(tenant string, p Policy) error {
		return r.pub.PutPolicy(ctx, tenant, p.Policy)
	}); err != nil {
		return err
	}
	var stale [][2]string
	if err := r.pub.SuppressionKeys(ctx, func(tenant, hash string) {
		if !held[[2]string{tenant, hash}] {
			stale = append(stale, [2]string{tenant, hash})
		}
	}); err != nil {
		return err
	}
	for _, k := range stale {
		// Held again since the listing (a new request): keep it.
		if ok, err := r.store.Suppressed(ctx, k[0], k[1]); err != nil || ok {
			continue
		}
		if err := r.pub.DeleteSuppression(ctx, k[0], k[1]); err != nil {
			return err
		}
	}
	return nil
}

// Purge deletes the exports of requests completed more than ExportRetention ago and clears the
// raw identifier values of requests that ended that long ago (their hashes stay).
func (r *Runner) Purge(ctx context.Context) error {
	before := r.now().Add(-ExportRetention)
	if n, err := r.store.PurgeExports(ctx, before); err != nil {
		return err
	} else if n > 0 {
		r.logger.Info("purged expired exports", "requests", n)
	}
	if n, err := r.store.PurgeIdentifiers(ctx, before); err != nil {
		return err
	} else if n > 0 {
		r.logger.Info("cleared the identifiers of ended requests", "requests", n)
	}
	return nil
}

// UpdateStats refreshes the open-request figures.
func (r *Runner) UpdateStats(ctx context.Context) error {
	if r.metrics == nil {
		return nil
	}
	now := r.now()
	s, err := r.store.Stats(ctx, now)
	if err != nil {
		return err
	}
	r.metrics.Stats(s, now)
	return nil
}
