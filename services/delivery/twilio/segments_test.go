package twilio

import (
	"slices"
	"strings"
	"testing"
)

func TestSegments(t *testing.T) {
	t.Parallel()
	r := strings.Repeat
	cases := []struct {
		name     string
		body     string
		enc      Encoding
		units    int
		segments int
		per      int
	}{
		{"empty", "", GSM7, 0, 0, 160},
		{"short", "Hello", GSM7, 5, 1, 160},
		{"gsm accents and greek", "àéüÑ ΔΩ £¥ §¿¡", GSM7, 14, 1, 160},
		{"newline and cr", "a\nb\r", GSM7, 4, 1, 160},
		{"160 fits one", r("a", 160), GSM7, 160, 1, 160},
		{"161 needs two", r("a", 161), GSM7, 161, 2, 153},
		{"306 is two parts", r("a", 306), GSM7, 306, 2, 153},
		{"307 is three parts", r("a", 307), GSM7, 307, 3, 153},
		{"extension chars count two", "{}[]~^|\\€", GSM7, 18, 1, 160},
		{"80 euro signs fill one", r("€", 80), GSM7, 160, 1, 160},
		{"81 euro signs need two", r("€", 81), GSM7, 162, 2, 153},
		{"escape pair is not split", r("a", 152) + "€" + r("a", 152), GSM7, 306, 3, 153},
		{"backtick forces ucs2", "a`b", UCS2, 3, 1, 70},
		{"emoji forces ucs2, two units", "Hi 😀", UCS2, 5, 1, 70},
		{"70 cyrillic fit one", r("ж", 70), UCS2, 70, 1, 70},
		{"71 cyrillic need two", r("ж", 71), UCS2, 71, 2, 67},
		{"134 cyrillic are two parts", r("ж", 134), UCS2, 134, 2, 67},
		{"surrogate pair is not split", r("ж", 66) + "😀" + r("ж", 66), UCS2, 134, 3, 67},
		{"one non-gsm char makes all ucs2", r("a", 100) + "ç", UCS2, 101, 2, 67},
		{"extension chars are one unit in ucs2", "€ж", UCS2, 2, 1, 70},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := Segments(tc.body)
			if got.Encoding != tc.enc || got.Units != tc.units || got.Segments != tc.segments || got.PerSegment != tc.per {
				t.Fatalf("Segments = %+v, want %s units %d segments %d per %d", got, tc.enc, tc.units, tc.segments, tc.per)
			}
		})
	}
	if got := Segments("ok 😀 ж 😀").NonGSM; !slices.Equal(got, []rune{'😀', 'ж'}) {
		t.Fatalf("NonGSM = %q", got)
	}
	if got := Segments("plain").NonGSM; got != nil {
		t.Fatalf("NonGSM of a GSM body = %q", got)
	}
}

func TestGSM7TableSize(t *testing.T) {
	t.Parallel()
	// 128 code points minus the escape (0x1B), which is not a character.
	if len(gsm7Basic) != 127 {
		t.Fatalf("basic table has %d characters, want 127", len(gsm7Basic))
	}
	if len(gsm7Extension) != 10 {
		t.Fatalf("extension table has %d characters, want 10", len(gsm7Extension))
	}
}
