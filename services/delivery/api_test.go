package delivery

import (
	"fmt"
	"testing"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// Etags round-trip; anything this service never returned is an invalid argument (not a
// mismatch, which would tell the client to re-read and retry in vain).
func TestContactEtag(t *testing.T) {
	if rev, err := ParseContactEtag(ContactEtag(Contact{Revision: 42})); rev != 42 || err != nil {
		t.Fatalf("round trip: %d %v", rev, err)
	}
	if rev, err := ParseContactEtag(""); rev != 0 || err != nil {
		t.Fatalf("empty: %d %v", rev, err)
	}
	for _, bad := range []string{"42", "r", "r0", "r-1", "rx", `W/"r1"`, "r99999999999999999999"} {
		if _, err := ParseContactEtag(bad); !apperr.HasCode(err, apperr.Invalid) {
			t.Errorf("%q: %v, want invalid", bad, err)
		}
	}
}

// Masks as a REST PATCH infers them: output-only paths ignored, nested paths whole, "*" all;
// a mask of output-only paths alone is refused rather than changing nothing silently.
func TestParseMasks(t *testing.T) {
	for _, c := range []struct {
		paths []string
		want  string
	}{
		{[]string{"id", "etag", "attributes.city", "attributes.plan", "locale"}, "[attributes locale]"},
		{[]string{"*"}, "[attributes email locale phone time_zone user_id]"},
		{[]string{"email_consent"}, "[email_consent]"}, // UpdateContact refuses it
		{nil, "[]"},
	} {
		got, err := ParseContactMask(c.paths)
		if err != nil || fmt.Sprint(got) != c.want {
			t.Errorf("contact mask %v: %v %v, want %s", c.paths, got, err, c.want)
		}
	}
	if _, err := ParseContactMask([]string{"id", "etag"}); !apperr.HasCode(err, apperr.Invalid) {
		t.Errorf("contact mask of output-only paths: %v, want invalid", err)
	}
	got, err := ParseSegmentMask([]string{"id", "filter.attributes", "filter.behaviour.event_type", "name"})
	if err != nil || fmt.Sprint(got) != "[filter name]" {
		t.Errorf("segment mask: %v %v", got, err)
	}
	if _, err := ParseSegmentMask([]string{"update_time"}); !apperr.HasCode(err, apperr.Invalid) {
		t.Errorf("segment mask of output-only paths: %v, want invalid", err)
	}
}
