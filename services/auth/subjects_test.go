package auth

import (
	"net/mail"
	"strings"
	"testing"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

func TestErasedEmail(t *testing.T) {
	t.Parallel()
	id := "0f8fad5b-d9cb-469f-a165-70867728950e"
	got := ErasedEmail(id)
	if got != ErasedEmail(id) || got == ErasedEmail("1f8fad5b-d9cb-469f-a165-70867728950e") {
		t.Fatalf("ErasedEmail is not a stable function of the id: %q", got)
	}
	hex, ok := strings.CutPrefix(strings.TrimSuffix(got, "@erased.invalid"), "erased-")
	if !ok || len(hex) != 16 || strings.Trim(hex, "0123456789abcdef") != "" {
		t.Fatalf("ErasedEmail(%s) = %q, want erased-<16 hex>@erased.invalid", id, got)
	}
	if a, err := mail.ParseAddress(got); err != nil || a.Address != got {
		t.Fatalf("ErasedEmail is not a plain address: %v", err)
	}
}

func TestValidateSubjectRequest(t *testing.T) {
	t.Parallel()
	tenant := "0f8fad5b-d9cb-469f-a165-70867728950e"
	one := []SubjectIdentifier{{Kind: SubjectEmail, Value: "a@b.example"}}
	for name, tc := range map[string]struct {
		tenant, request string
		ids             []SubjectIdentifier
		needIDs         bool
		field           string // "" when valid
	}{
		"valid":                {tenant, "dsr_01HX:a-b.c", one, true, ""},
		"no identifiers ok":    {tenant, "dsr_1", nil, false, ""},
		"tenant":               {"acme", "dsr_1", one, true, "tenant_id"},
		"request empty":        {tenant, "", one, true, "dsr_request"},
		"request spaces":       {tenant, "dsr 1", one, true, "dsr_request"},
		"request too long":     {tenant, strings.Repeat("d", 129), one, true, "dsr_request"},
		"identifiers required": {tenant, "dsr_1", nil, true, "identifiers"},
		"too many":             {tenant, "dsr_1", make([]SubjectIdentifier, 1001), true, "identifiers"},
		"kind":                 {tenant, "dsr_1", []SubjectIdentifier{{Value: "x"}}, true, "identifiers[0].kind"},
		"value empty":          {tenant, "dsr_1", []SubjectIdentifier{{Kind: SubjectUserID}}, true, "identifiers[0].value"},
		"value too long":       {tenant, "dsr_1", []SubjectIdentifier{{Kind: SubjectUserID, Value: strings.Repeat("é", 257)}}, true, "identifiers[0].value"},
		"value 256 runes":      {tenant, "dsr_1", []SubjectIdentifier{{Kind: SubjectUserID, Value: strings.Repeat("é", 256)}}, true, ""},
		"value invalid utf-8":  {tenant, "dsr_1", []SubjectIdentifier{{Kind: SubjectAnonymousID, Value: "\xff"}}, true, "identifiers[0].value"},
	} {
		err := ValidateSubjectRequest(tc.tenant, tc.request, tc.ids, tc.needIDs)
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%s: %v, want valid", name, err)
		case tc.field != "" && (!apperr.HasCode(err, apperr.Invalid) || !strings.Contains(err.Error(), tc.field)):
			t.Errorf("%s: %v, want a violation of %s", name, err, tc.field)
		}
	}
}

func TestSubjectEmails(t *testing.T) {
	t.Parallel()
	got := subjectEmails([]SubjectIdentifier{
		{Kind: SubjectEmail, Value: "Ann@Example.com"}, {Kind: SubjectUserID, Value: "ann@example.com"},
		{Kind: SubjectEmail, Value: "ann@example.com"}, {Kind: SubjectEmail, Value: "bob@example.com"},
	})
	if strings.Join(got, ",") != "ann@example.com,bob@example.com" {
		t.Fatalf("subjectEmails = %v", got)
	}
}
