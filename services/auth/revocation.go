package auth

import (
	"context"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
)

// Revocation is immediate. Disabling a user, changing its role, revoking its sessions or
// changing its password raises the user's token epoch; suspending a tenant raises the tenant's
// (see the store's bumpEpoch). Access tokens carry both epochs from when they were issued, so a
// raise refuses every token issued before it:
//   - auth itself compares them with the database on every call (CheckRevoked);
//   - every other service polls ListRevocations (authn.RevocationList) and compares with what
//     it heard, so the bound there is the poll interval plus one round trip.
//
// ListRevocations only needs the changes younger than the longest token lifetime: a token
// issued before an older change has expired anyway.

// revocationMargin widens the ListRevocations window past the token lifetime, for clock
// differences and the verifiers' leeway.
const revocationMargin = time.Minute

// ListRevocations returns every revocation younger than an access token's lifetime plus a
// margin, and the start of that window.
func (s *Service) ListRevocations(ctx context.Context) ([]Revocation, time.Time, error) {
	since := s.now().Add(-s.tokenTTL - revocationMargin)
	rs, err := s.store.ListRevocations(ctx, since)
	return rs, since, err
}

// CheckRevoked implements authn.RevocationChecker for auth's own calls: an access token is
// refused when its user's or tenant's token epoch has risen since it was issued. (API keys are
// checked against the database by every VerifyAPIKey here already.)
func (s *Service) CheckRevoked(ctx context.Context, p *authn.Principal) error {
	if p.Kind != authn.KindAccessToken {
		return nil
	}
	user, tenant, err := s.store.TokenEpochs(ctx, p.Subject)
	switch {
	case apperr.HasCode(err, apperr.NotFound):
		return authn.ErrRevoked
	case err != nil:
		return err
	case p.UserEpoch < user || p.TenantEpoch < tenant:
		return authn.ErrRevoked
	}
	return nil
}
