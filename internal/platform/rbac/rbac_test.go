package rbac

import (
	"slices"
	"testing"
)

// TestEventsDebug: only admin and manager may tail the live event debugger; it reads events, so
// no role made for reading less (or for the platform) holds it.
func TestEventsDebug(t *testing.T) {
	for _, r := range Roles() {
		want := r == Admin || r == Manager
		if got := r.Has(EventsDebug); got != want {
			t.Errorf("%s has events.debug = %v, want %v", r, got, want)
		}
	}
	found := false
	for _, p := range AllPermissions() {
		found = found || p == EventsDebug
	}
	if !found {
		t.Errorf("AllPermissions() lacks %s: API keys could not be given it", EventsDebug)
	}
}

// TestContactsPermissions: contacts (personal data) are read and changed by admins and managers
// only; analysts, viewers, privacy officers and the platform operator hold neither permission,
// and both are grantable to API keys.
func TestContactsPermissions(t *testing.T) {
	for _, p := range []string{ContactsRead, ContactsWrite} {
		for _, r := range Roles() {
			want := r == Admin || r == Manager
			if got := r.Has(p); got != want {
				t.Errorf("%s has %s = %v, want %v", r, p, got, want)
			}
		}
		found := false
		for _, q := range AllPermissions() {
			found = found || q == p
		}
		if !found {
			t.Errorf("AllPermissions() lacks %s: API keys could not be given it", p)
		}
	}
}

// TestMessagesPermissions: content, sender identities and test sends are admins' and managers'
// (messages.send); marking a sender identity verified is admins' only (delivery.settings).
// Both are grantable to API keys.
func TestMessagesPermissions(t *testing.T) {
	for p, holders := range map[string][]Role{MessagesSend: {Admin, Manager}, DeliverySettings: {Admin}} {
		for _, r := range Roles() {
			if got, want := r.Has(p), slices.Contains(holders, r); got != want {
				t.Errorf("%s has %s = %v, want %v", r, p, got, want)
			}
		}
		if !slices.Contains(AllPermissions(), p) {
			t.Errorf("AllPermissions() lacks %s: API keys could not be given it", p)
		}
	}
}

// TestBillingPermissions: a tenant's usage, plan and account are read by its admins and
// managers and by the operator (every tenant's); plans, accounts and reconciliation are the
// operator's alone.
func TestBillingPermissions(t *testing.T) {
	for p, holders := range map[string][]Role{UsageRead: {Admin, Manager, PlatformOperator}, BillingManage: {PlatformOperator}} {
		for _, r := range Roles() {
			if got, want := r.Has(p), slices.Contains(holders, r); got != want {
				t.Errorf("%s has %s = %v, want %v", r, p, got, want)
			}
		}
	}
}
