package auth

import (
	"context"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
)

// checkTargetWithin is the other half of "delegation never widens": a credential may change,
// disable, unlock or end the sessions of a user only when it holds every permission of that
// user's current role. Otherwise a key scoped to users.manage could demote or lock out the
// admins who hold more than it does.
func checkTargetWithin(caller *authn.Principal, target User) error {
	for _, p := range target.Role.Permissions() {
		if !caller.Has(p) {
			return apperr.New(apperr.PermissionDenied, "TARGET_EXCEEDS_CALLER",
				"user %s has role %s, which holds %s, which your credential does not", target.ID, target.Role, p)
		}
	}
	return nil
}

// checkTarget loads user id of the caller's tenant (NOT_FOUND in another tenant) and applies
// checkTargetWithin to it.
func (s *Service) checkTarget(ctx context.Context, caller *authn.Principal, id string) error {
	u, err := s.store.GetUser(ctx, caller.TenantID, id)
	if err != nil {
		return err
	}
	return checkTargetWithin(caller, u)
}
