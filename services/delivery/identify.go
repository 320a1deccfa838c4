package delivery

import "strings"

// Identify events → contacts. An identify event (ingest's type identify, a Segment identify)
// names a user id and carries traits; delivery keeps a contact per user id from them:
//   - the event's user id finds or creates the contact (an event without one is skipped: a
//     contact of an anonymous id could never be matched to behaviour or erased by user id);
//   - a Segment group or alias call, which the gateway makes an identify event with the
//     property segment_type "group" or "alias", is skipped: a group's traits are the group's
//     (its email is the company's, not the user's), and an alias carries none;
//   - the traits email, phone, first_name, last_name, time_zone (or timezone) and locale set
//     those fields, read as "<trait>" or "traits.<trait>" (how the gateway's Segment API keeps
//     traits); other traits are not contact attributes (an app's arbitrary traits would
//     exhaust a contact's 50 attributes);
//   - consent changes only when a trait says so explicitly: consent.email / consent.sms (or
//     email_consent / sms_consent) with the value granted or revoked, recorded with source
//     "identify" at the time it is applied; any other value, or none, leaves consent as
//     stored (an identify is not consent).

// ConsentIdentifySource is the source recorded for a consent an identify trait set.
const ConsentIdentifySource = "identify"

// segmentTypeProperty is the property in which the gateway's Segment API keeps the Segment
// call type of an event whose ingest type is another (gateway/segmentmap.go).
const segmentTypeProperty = "segment_type"

// IdentifyTraits turns an identify event's user id and traits (string values; see above) into
// the upsert Audiences.Identify applies, and false when the event names no user id or is not
// a statement of the user's own traits (a Segment group or alias call).
func IdentifyTraits(userID string, traits map[string]string) (ContactUpsert, bool) {
	if strings.TrimSpace(userID) == "" {
		return ContactUpsert{}, false
	}
	if st := traits[segmentTypeProperty]; st == "group" || st == "alias" {
		return ContactUpsert{}, false
	}
	get := func(names ...string) string {
		for _, n := range names {
			for _, k := range []string{n, "traits." + n} {
				if v := strings.TrimSpace(traits[k]); v != "" {
					return v
				}
			}
		}
		return ""
	}
	u := ContactUpsert{UserID: userID, Email: get("email"), Phone: get("phone"),
		TimeZone: get("time_zone", "timezone"), Locale: get("locale")}
	for _, attr := range []string{"first_name", "last_name"} {
		if v := get(attr); v != "" {
			if u.Attributes == nil {
				u.Attributes = map[string]string{}
			}
			u.Attributes[attr] = v
		}
	}
	consent := func(names ...string) Consent {
		switch st := ConsentState(strings.ToLower(get(names...))); st {
		case ConsentGranted, ConsentRevoked:
			return Consent{State: st, Source: ConsentIdentifySource}
		}
		return Consent{}
	}
	u.Consent.Email = consent("consent.email", "email_consent")
	u.Consent.SMS = consent("consent.sms", "sms_consent")
	return u, true
}
