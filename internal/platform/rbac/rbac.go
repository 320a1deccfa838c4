// Package rbac is the one table of roles and the permissions they bundle. Every service
// authorizes through it (via the access rules in the API definition), so a role means the
// same thing everywhere.
package rbac

import "slices"

// Role is a fixed bundle of permissions.
type Role string

// The roles. Tenant roles act inside one tenant; the platform operator acts above tenants.
const (
	Admin            Role = "admin"
	Manager          Role = "manager"
	Analyst          Role = "analyst"
	Viewer           Role = "viewer"
	PlatformOperator Role = "platform_operator"
	PrivacyOfficer   Role = "privacy_officer"
)

// The permissions. Access rules in the protos name them.
const (
	CampaignsRead     = "campaigns.read"
	CampaignsWrite    = "campaigns.write"
	AnalyticsRead     = "analytics.read"
	EventsWrite       = "events.write"
	EventsDebug       = "events.debug" // tail the tenant's event outcomes (the live debugger): reads events
	UsersRead         = "users.read"
	UsersManage       = "users.manage"
	APIKeysManage     = "apikeys.manage"
	AuditRead         = "audit.read"
	DSRManage         = "dsr.manage"
	PrivacyManage     = "privacy.manage"
	TenantsManage     = "tenants.manage"
	SigningKeysManage = "signing_keys.manage"
	// Contacts are personal data (addresses, phone numbers, consent): reading them is a
	// permission of its own that the roles made for reading reports (analyst, viewer) lack.
	ContactsRead  = "contacts.read"
	ContactsWrite = "contacts.write" // contacts, their consent and segments (delivery)
	// MessagesSend is a campaign's content, sender identities and test sends (delivery).
	MessagesSend = "messages.send"
	// DeliverySettings is the tenant's delivery settings that an administrator vouches for:
	// marking a sender identity verified.
	DeliverySettings = "delivery.settings"
	// UsageRead is the tenant's metered usage, plan and billing account (billing); an operator
	// holding it reads every tenant's.
	UsageRead = "usage.read"
	// BillingManage is plans, quotas, billing accounts and reconciliation: the platform's.
	BillingManage = "billing.manage"
)

var table = map[Role][]string{
	Admin: {CampaignsRead, CampaignsWrite, AnalyticsRead, EventsWrite, EventsDebug, UsersRead, UsersManage,
		APIKeysManage, AuditRead, DSRManage, PrivacyManage, ContactsRead, ContactsWrite, MessagesSend, DeliverySettings,
		UsageRead},
	Manager: {CampaignsRead, CampaignsWrite, AnalyticsRead, EventsWrite, EventsDebug, UsersRead, ContactsRead, ContactsWrite,
		MessagesSend, UsageRead},
	Analyst:          {CampaignsRead, AnalyticsRead},
	Viewer:           {CampaignsRead},
	PrivacyOfficer:   {DSRManage, PrivacyManage, AuditRead},
	PlatformOperator: {TenantsManage, SigningKeysManage, AuditRead, UsageRead, BillingManage}, // audit.read: the platform's own chain
}

// Roles lists every role, tenant roles first.
func Roles() []Role { return []Role{Admin, Manager, Analyst, Viewer, PrivacyOfficer, PlatformOperator} }

// Valid reports whether r is a known role.
func (r Role) Valid() bool { _, ok := table[r]; return ok }

// TenantScoped reports whether the role belongs to a tenant (all but the platform operator).
func (r Role) TenantScoped() bool { return r.Valid() && r != PlatformOperator }

// Permissions returns the role's permissions, sorted; nil for an unknown role.
func (r Role) Permissions() []string {
	p := slices.Clone(table[r])
	slices.Sort(p)
	return p
}

// Has reports whether the role holds permission.
func (r Role) Has(permission string) bool { return slices.Contains(table[r], permission) }

// AllPermissions lists every permission any role holds, sorted and unique.
func AllPermissions() []string {
	var all []string
	for _, ps := range table {
		all = append(all, ps...)
	}
	slices.Sort(all)
	return slices.Compact(all)
}
