// Package nats holds the delivery service's adapters to NATS JetStream: the platform's
// suppression list, which dsr keeps in the PRIVACY key-value bucket and ingest and analytics
// follow too.
package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

// Suppressions implements delivery.Suppressions over a live view of the PRIVACY bucket: a
// contact is suppressed when the keyed hash (privacy.Hasher.SubjectHash) of its user id or of
// its email address (as stored: lower-cased) is on its tenant's list — the hashes dsr stores for
// a "suppress" request or an erasure's identifiers, which ingest checks events' user and
// anonymous ids against.
type Suppressions struct {
	view   *privacy.View
	hasher *privacy.Hasher
}

var _ delivery.Suppressions = (*Suppressions)(nil)

// NewSuppressions returns the suppression check over view (kept current by privacy.Watch) with
// the mesh's privacy key.
func NewSuppressions(view *privacy.View, hasher *privacy.Hasher) *Suppressions {
	return &Suppressions{view: view, hasher: hasher}
}

// SuppressedContact implements delivery.Suppressions. A tenant without suppressions costs no
// hashing.
func (s *Suppressions) SuppressedContact(_ context.Context, tenantID string, c delivery.Contact) (bool, error) {
	if s.view.Suppressions(tenantID) == 0 {
		return false, nil
	}
	for _, id := range []string{c.UserID, c.Email} {
		if id != "" && s.view.Suppressed(tenantID, s.hasher.SubjectHash(tenantID, id)) {
			return true, nil
		}
	}
	return false, nil
}

// WatchSuppressions opens the PRIVACY bucket (creating it when missing, as ingest does) and
// loads it into a view that follows it until ctx ends; it fails when the bucket cannot be opened
// or its contents do not load within timeout, so delivery never resolves recipients without the
// lists. After a NATS restart the view is reloaded at once.
func WatchSuppressions(ctx context.Context, js jetstream.JetStream, hasher *privacy.Hasher, timeout time.Duration, logger *slog.Logger) (*Suppressions, error) {
	kv, err := privacy.OpenBucket(ctx, js)
	if err != nil {
		return nil, fmt.Errorf("open privacy bucket: %w", err)
	}
	// The view follows the bucket for ctx's life; only the load is bounded by timeout.
	wctx, stop := context.WithCancel(ctx)
	context.AfterFunc(ctx, stop)
	timer := time.AfterFunc(timeout, stop)
	view, err := privacy.Watch(wctx, kv, logger)
	if !timer.Stop() || err != nil {
		stop()
		return nil, fmt.Errorf("load privacy bucket %s (within %s): %w", privacy.Bucket, timeout, errors.Join(err, context.Cause(wctx)))
	}
	privacy.ReloadOnReconnect(wctx, js.Conn(), view)
	return NewSuppressions(view, hasher), nil
}
