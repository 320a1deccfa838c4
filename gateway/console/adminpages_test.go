package console

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// The admin screens' templates escape every value the API returns (names, emails, reasons):
// a name that is markup shows as text.
func TestAdminPagesEscapeValues(t *testing.T) {
	pages, err := parsePages()
	if err != nil {
		t.Fatal(err)
	}
	const evil = `<img src=x onerror=alert(1)>`
	now := timestamppb.Now()
	for page, data := range map[string]any{
		"keys": keysData{SDK: sdkSnippets{Host: evil}, CanWrite: true, Keys: []keyRow{{ID: "1", Name: evil, Prefix: evil, Scopes: []string{evil},
			Created: now, State: "active"}}, Scopes: []scopeChoice{{Name: evil}}},
		"team": teamData{Manage: true, Roles: roleChoices(), Users: []userRow{{ID: "1", Name: evil, Email: evil, Role: "admin", RoleValue: "admin", State: "active"}},
			Invitations: []invitationRow{{ID: "2", Email: evil, Role: "viewer", State: "pending"}}},
		"tenants": tenantsData{Tenants: []tenantRow{{ID: "1", Slug: evil, Name: evil, State: "active"}}},
		"events":  eventsData{SDK: sdkSnippets{Host: evil}},
	} {
		var b bytes.Buffer
		if err := pages[page].ExecuteTemplate(&b, "layout", view{Title: evil, Data: data}); err != nil {
			t.Fatalf("%s: %v", page, err)
		}
		if strings.Contains(b.String(), evil) || !strings.Contains(b.String(), "&lt;img src=x onerror=alert(1)&gt;") {
			t.Errorf("%s: the value is not escaped as text:\n%s", page, b.String())
		}
	}
}
