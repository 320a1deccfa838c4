package console

import (
	"strings"
	"testing"
	"time"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

func TestParseRole(t *testing.T) {
	for v, want := range map[string]authv1.Role{
		"admin": authv1.Role_ROLE_ADMIN, "manager": authv1.Role_ROLE_MANAGER, "analyst": authv1.Role_ROLE_ANALYST,
		"viewer": authv1.Role_ROLE_VIEWER, "privacy_officer": authv1.Role_ROLE_PRIVACY_OFFICER,
	} {
		if got, ok := parseRole(v); !ok || got != want {
			t.Errorf("parseRole(%q) = %v, %v", v, got, ok)
		}
	}
	// The platform operator is no tenant role; the enum's own names are not the form's.
	for _, v := range []string{"platform_operator", "ROLE_ADMIN", "", "unspecified", "Admin"} {
		if _, ok := parseRole(v); ok {
			t.Errorf("parseRole(%q) accepted", v)
		}
	}
	for _, c := range roleChoices() {
		if r, ok := parseRole(c.Value); !ok || enumName(r.String(), "ROLE_") != c.Label {
			t.Errorf("choice %+v does not read back", c)
		}
	}
}

func TestParseInvitationForm(t *testing.T) {
	now := time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC)
	f, problem := parseInvitationForm(" bo@acme.example ", "manager", "3", now)
	if problem != "" || f.Email != "bo@acme.example" || f.Role != authv1.Role_ROLE_MANAGER || !f.Expire.Equal(now.Add(72*time.Hour)) {
		t.Fatalf("got %+v %q", f, problem)
	}
	if f, problem := parseInvitationForm("bo@acme.example", "viewer", "", now); problem != "" || f.Expire != nil {
		t.Fatalf("no days: %+v %q", f, problem)
	}
	for _, tc := range []struct{ email, role, days, problem string }{
		{"", "viewer", "", "email"},
		{strings.Repeat("a", 250) + "@x.io", "viewer", "", "254"},
		{"Bo <bo@acme.example>", "viewer", "", "plain email"},
		{"not an email", "viewer", "", "plain email"},
		{"bo@acme.example", "platform_operator", "", "roles offered"},
		{"bo@acme.example", "viewer", "0", "1 to 30"},
		{"bo@acme.example", "viewer", "31", "1 to 30"},
		{"bo@acme.example", "viewer", "seven", "1 to 30"},
	} {
		if _, problem := parseInvitationForm(tc.email, tc.role, tc.days, now); !strings.Contains(problem, tc.problem) {
			t.Errorf("%+v: problem %q, want one mentioning %q", tc, problem, tc.problem)
		}
	}
}

func TestInvitedMessageSaysHowToJoin(t *testing.T) {
	msg := invitedMessage(&authv1.Invitation{Email: "bo@acme.example", Role: authv1.Role_ROLE_ADMIN}, "globex")
	for _, want := range []string{"bo@acme.example", "admin", "cmesh invitations accept", "globex"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
}
