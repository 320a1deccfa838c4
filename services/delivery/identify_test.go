package delivery

import (
	"testing"
)

func TestIdentifyTraits(t *testing.T) {
	if _, ok := IdentifyTraits(" ", map[string]string{"email": "a@example.com"}); ok {
		t.Error("an event without a user id made a contact")
	}
	u, ok := IdentifyTraits("u1", map[string]string{
		"traits.email": "Ann@Example.com", "phone": "+14155550100", "traits.first_name": "Ann", "last_name": "Lee",
		"timezone": "Europe/Paris", "locale": "fr-FR", "plan": "pro", "traits.consent.email": "Granted", "sms_consent": "maybe",
	})
	if !ok || u.UserID != "u1" || u.Email != "Ann@Example.com" || u.Phone != "+14155550100" || u.TimeZone != "Europe/Paris" || u.Locale != "fr-FR" {
		t.Fatalf("upsert %+v", u)
	}
	if len(u.Attributes) != 2 || u.Attributes["first_name"] != "Ann" || u.Attributes["last_name"] != "Lee" {
		t.Errorf("attributes %v: want first and last name only", u.Attributes)
	}
	if u.Consent.Email != (Consent{State: ConsentGranted, Source: ConsentIdentifySource}) || u.Consent.SMS.State != "" {
		t.Errorf("consent %+v: email granted by its trait, sms unchanged", u.Consent)
	}
}

// A Segment group call (the gateway's identify event with segment_type "group") carries the
// group's traits, an alias call none: neither touches the user's contact. A Segment identify
// keeps its traits.
func TestIdentifyTraitsSkipGroupAndAliasCalls(t *testing.T) {
	for _, typ := range []string{"group", "alias"} {
		if u, ok := IdentifyTraits("u1", map[string]string{"segment_type": typ, "group_id": "acme", "traits.email": "billing@acme.example", "traits.name": "Acme"}); ok {
			t.Errorf("a Segment %s call made the upsert %+v", typ, u)
		}
	}
	if u, ok := IdentifyTraits("u1", map[string]string{"segment_type": "identify", "traits.email": "ann@example.com"}); !ok || u.Email != "ann@example.com" {
		t.Errorf("a Segment identify call: %+v, %v", u, ok)
	}
}
