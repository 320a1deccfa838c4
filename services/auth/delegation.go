package auth

import (
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
)

// CheckDelegation enforces that delegation never widens: a credential may give a user a role —
// by creating the user, changing its role or inviting someone — only when it holds every
// permission of that role itself. API keys keep the same rule for their scopes (CreateAPIKey).
// field names the request field that carries the role.
func CheckDelegation(caller *authn.Principal, field string, role rbac.Role) error {
	for _, p := range role.Permissions() {
		if !caller.Has(p) {
			return apperr.New(apperr.PermissionDenied, "DELEGATION_EXCEEDS_CALLER",
				"%s: role %s holds %s, which your credential does not", field, role, p)
		}
	}
	return nil
}
