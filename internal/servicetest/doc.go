// Package servicetest starts CampaignMesh services under test, each through its own app package
// (the wiring its command runs), on loopback listeners and fresh test databases, so fixtures
// never wire a service by hand. Polling, clocks and tokens are in internal/meshtest, which the
// services' own packages may use in their tests; this package imports the services, so it is
// separate to keep those tests free of import cycles.
package servicetest
