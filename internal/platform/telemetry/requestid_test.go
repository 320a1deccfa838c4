package telemetry

import (
	"strings"
	"testing"
)

func TestValidRequestID(t *testing.T) {
	for id, want := range map[string]bool{
		"abc-DEF_012.x": true, strings.Repeat("a", 64): true,
		"": false, strings.Repeat("a", 65): false, "a b": false, "a\nb": false, "é": false, "a/b": false, "a\x00": false,
	} {
		if got := ValidRequestID(id); got != want {
			t.Errorf("ValidRequestID(%q) = %v, want %v", id, got, want)
		}
	}
	if id := NewRequestID(); !ValidRequestID(id) {
		t.Errorf("NewRequestID() = %q is not valid", id)
	}
	if got := RequestIDOrNew("caller-1"); got != "caller-1" {
		t.Errorf("RequestIDOrNew kept %q, want caller-1", got)
	}
	if got := RequestIDOrNew("bad id"); got == "bad id" || !ValidRequestID(got) {
		t.Errorf("RequestIDOrNew(bad) = %q, want a new valid id", got)
	}
}
