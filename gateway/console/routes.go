package console

import "net/http"

// routes is the console's one table of addresses. Pages are GET; actions are POST forms that
// redirect back (so a reload never repeats them); streams (text/event-stream) feed the live
// parts. Every route but sign-in is signedIn.
func (c *Console) routes() {
	m := c.mux
	m.HandleFunc("GET "+Prefix+"signin", c.signInPage)
	m.HandleFunc("POST "+Prefix+"signin", c.signIn)
	m.HandleFunc("POST "+Prefix+"signout", c.signedIn(c.signOut))
	m.HandleFunc("GET "+Prefix+"account", c.signedIn(c.accountPage))
	m.HandleFunc("POST "+Prefix+"account/password", c.signedIn(c.changePassword))
	m.HandleFunc("GET "+Prefix+"{$}", c.signedIn(c.overviewPage))

	c.campaignRoutes(m)  // campaigns.go: list, create, edit, transitions, history
	c.analyticsRoutes(m) // analytics.go: series, variants, funnel, breakdowns, CSV, live counters
	c.eventRoutes(m)     // events.go: live events
	c.keyRoutes(m)       // keys.go: API keys and write keys
	c.teamRoutes(m)      // team.go: users, roles, invitations
	c.auditRoutes(m)     // audit.go: audit log and chain verification
	c.privacyRoutes(m)   // privacy.go: data-subject requests and the privacy policy
	c.tenantRoutes(m)    // tenants.go: platform operators' tenants
	c.usageRoutes(m)     // usage.go: metered usage and the plan's limits

	m.HandleFunc(Prefix, func(w http.ResponseWriter, r *http.Request) {
		c.render(w, r, nil, http.StatusNotFound, "error", "Not found", "There is no such page in the console.")
	})
}
