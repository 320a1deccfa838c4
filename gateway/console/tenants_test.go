package console

import (
	"strings"
	"testing"
)

func TestParseTenantForm(t *testing.T) {
	f, problem := parseTenantForm(" globex ", " Globex Corp ", " boss@globex.example ")
	if problem != "" || f != (tenantForm{Slug: "globex", Name: "Globex Corp", AdminEmail: "boss@globex.example"}) {
		t.Fatalf("got %+v %q", f, problem)
	}
	if f, problem := parseTenantForm("globex", "Globex", ""); problem != "" || f.AdminEmail != "" {
		t.Fatalf("without an admin: %+v %q", f, problem)
	}
	for _, tc := range []struct{ slug, name, email, problem string }{
		{"", "Globex", "", "sign-in name"},
		{strings.Repeat("a", maxSlugLen+1), "Globex", "", "sign-in name"},
		{"globex", "", "", "display name"},
		{"globex", strings.Repeat("n", maxDisplayNameLen+1), "", "display name"},
		{"globex", "Globex", "boss", "administrator's email"},
	} {
		if _, problem := parseTenantForm(tc.slug, tc.name, tc.email); !strings.Contains(problem, tc.problem) {
			t.Errorf("%+v: problem %q, want one mentioning %q", tc, problem, tc.problem)
		}
	}
}
