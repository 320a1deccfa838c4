package delivery_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

// violations returns the fields an Invalid error names.
func violations(t *testing.T, err error) []string {
	t.Helper()
	var de *apperr.Error
	if !errors.As(err, &de) || de.Code != apperr.Invalid {
		t.Fatalf("error %v, want an Invalid domain error", err)
	}
	var fields []string
	for _, v := range de.Violations {
		fields = append(fields, v.Field)
	}
	return fields
}

// Every field of a contact is validated before the store sees it (a nil store proves it
// is never reached), and all violations come back at once.
func TestCreateContactValidation(t *testing.T) {
	a := delivery.NewAudiences(nil, nil)
	ctx := context.Background()
	many := map[string]string{}
	for i := range delivery.MaxAttributes + 1 {
		many["k"+strings.Repeat("x", i%5)+string(rune('a'+i%26))+string(rune('a'+i/26))] = "v"
	}
	for name, tc := range map[string]struct {
		c    delivery.Contact
		want string
	}{
		"no identifier":          {delivery.Contact{Attributes: map[string]string{"a": "b"}}, "contact"},
		"email with a name":      {delivery.Contact{Email: "Ann <ann@example.com>"}, "email"},
		"email without domain":   {delivery.Contact{Email: "ann@localhost"}, "email"},
		"email too long":         {delivery.Contact{Email: strings.Repeat("a", 250) + "@x.io"}, "email"},
		"phone not E.164":        {delivery.Contact{Phone: "0612345678"}, "phone"},
		"phone with letters":     {delivery.Contact{Phone: "+1415CALLNOW"}, "phone"},
		"phone too long":         {delivery.Contact{Phone: "+1234567890123456"}, "phone"},
		"user id control":        {delivery.Contact{UserID: "u\x001"}, "user_id"},
		"user id too long":       {delivery.Contact{UserID: strings.Repeat("u", delivery.MaxUserIDLen+1)}, "user_id"},
		"attribute key":          {delivery.Contact{UserID: "u", Attributes: map[string]string{"First Name": "x"}}, "attributes"},
		"attribute value":        {delivery.Contact{UserID: "u", Attributes: map[string]string{"bio": strings.Repeat("x", delivery.MaxAttrValueLen+1)}}, "attributes.bio"},
		"too many attributes":    {delivery.Contact{UserID: "u", Attributes: many}, "attributes"},
		"time zone":              {delivery.Contact{UserID: "u", TimeZone: "Mars/Olympus"}, "time_zone"},
		"time zone Local":        {delivery.Contact{UserID: "u", TimeZone: "Local"}, "time_zone"},
		"locale":                 {delivery.Contact{UserID: "u", Locale: "not a locale!"}, "locale"},
		"consent state":          {delivery.Contact{UserID: "u", Consent: delivery.Consents{Email: delivery.Consent{State: "maybe", Source: "form"}}}, "consent.email.state"},
		"consent without source": {delivery.Contact{UserID: "u", Consent: delivery.Consents{SMS: delivery.Consent{State: delivery.ConsentGranted}}}, "consent.sms.source"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := a.CreateContact(ctx, "t1", tc.c)
			if got := violations(t, err); !contains(got, tc.want) {
				t.Errorf("violations %v, want %q among them", got, tc.want)
			}
		})
	}
	if _, err := a.CreateContact(ctx, "", delivery.Contact{UserID: "u"}); !apperr.HasCode(err, apperr.PermissionDenied) {
		t.Errorf("no tenant: %v, want PermissionDenied", err)
	}
	_, err := a.CreateContact(ctx, "t1", delivery.Contact{Email: "bad", Phone: "bad", TimeZone: "bad"})
	if got := violations(t, err); len(got) != 3 {
		t.Errorf("violations %v, want all three at once", got)
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestNormalize(t *testing.T) {
	if got := delivery.NormalizeEmail("  Ann.Lee@Example.COM "); got != "ann.lee@example.com" {
		t.Errorf("email %q", got)
	}
	if got := delivery.NormalizePhone(" +1 (415) 555-0123 "); got != "+14155550123" {
		t.Errorf("phone %q", got)
	}
	if got := delivery.NormalizeLocale("en-us"); got != "en-US" {
		t.Errorf("locale %q", got)
	}
	if got := delivery.NormalizeLocale("zh-hant-tw"); got != "zh-Hant-TW" {
		t.Errorf("locale %q", got)
	}
}

func TestParseContactPage(t *testing.T) {
	q, err := delivery.ParseContactPage(0, "")
	if err != nil || q.Size != delivery.DefaultPageSize || q.After != nil {
		t.Errorf("default page: %+v %v", q, err)
	}
	if q, _ := delivery.ParseContactPage(5000, ""); q.Size != delivery.MaxPageSize {
		t.Errorf("size %d, want capped at %d", q.Size, delivery.MaxPageSize)
	}
	for _, tok := range []string{"%%%", "bm90IGpzb24", "eyJ0IjoiMjAyNi0wMS0wMVQwMDowMDowMFoiLCJpZCI6Ingnb3IgMT0xIn0"} {
		if _, err := delivery.ParseContactPage(10, tok); !apperr.HasCode(err, apperr.Invalid) {
			t.Errorf("token %q: %v, want Invalid", tok, err)
		}
	}
	if _, err := delivery.ParseContactPage(-1, ""); !apperr.HasCode(err, apperr.Invalid) {
		t.Errorf("negative size: %v", err)
	}
}
