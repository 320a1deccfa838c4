package rbac

import "testing"

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
