package twilio

import "unicode/utf16"

// Encoding is how an SMS body is carried.
type Encoding string

const (
	// GSM7 is the GSM 03.38 default alphabet: 7-bit septets, 160 a single message, 153 a
	// part of a concatenated one (the rest holds the concatenation header).
	GSM7 Encoding = "GSM-7"
	// UCS2 is UTF-16: 70 code units a single message, 67 a part of a concatenated one.
	UCS2 Encoding = "UCS-2"
)

// Segment sizes, in septets (GSM-7) or UTF-16 code units (UCS-2).
const (
	GSM7Single = 160
	GSM7Part   = 153
	UCS2Single = 70
	UCS2Part   = 67
)

// gsm7Basic is the GSM 03.38 default alphabet (one septet each).
var gsm7Basic = func() map[rune]bool {
	m := make(map[rune]bool, 128)
	for _, r := range "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
		"¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà" {
		m[r] = true
	}
	return m
}()

// gsm7Extension is the default alphabet's extension table: each is an escape septet plus
// one, so two septets, and the pair is never split across segments.
var gsm7Extension = map[rune]bool{'\f': true, '^': true, '{': true, '}': true, '\\': true, '[': true, '~': true, ']': true, '|': true, '€': true}

// SegmentInfo describes how an SMS body is sent.
type SegmentInfo struct {
	Encoding Encoding
	// Units is the body's length in septets (GSM-7) or UTF-16 code units (UCS-2).
	Units int
	// Segments is how many messages the body is sent (and billed) as; 0 for an empty body.
	Segments int
	// PerSegment is the capacity of each segment at this length (160/153 or 70/67).
	PerSegment int
	// NonGSM lists the characters, in order of first use, that forced UCS-2.
	NonGSM []rune
}

// Segments computes the encoding and segment count of an SMS body the way carriers (and
// Twilio, without smart encoding) do: GSM-7 when every character is in the default alphabet
// or its extension table, else UCS-2 for the whole message. A GSM-7 extension character
// (escape + character) and a UTF-16 surrogate pair are never split between segments, so a
// long body may need one more segment than its length divided by the part size.
func Segments(body string) SegmentInfo {
	var nonGSM []rune
	seen := map[rune]bool{}
	for _, r := range body {
		if !gsm7Basic[r] && !gsm7Extension[r] && !seen[r] {
			seen[r] = true
			nonGSM = append(nonGSM, r)
		}
	}
	if len(nonGSM) == 0 {
		return pack(body, GSM7, GSM7Single, GSM7Part, func(r rune) int {
			if gsm7Extension[r] {
				return 2
			}
			return 1
		}, nil)
	}
	return pack(body, UCS2, UCS2Single, UCS2Part, func(r rune) int { return utf16.RuneLen(r) }, nonGSM)
}

// pack fills segments with whole characters of width(r) units each.
func pack(body string, enc Encoding, single, part int, width func(rune) int, nonGSM []rune) SegmentInfo {
	info := SegmentInfo{Encoding: enc, PerSegment: single, NonGSM: nonGSM}
	for _, r := range body {
		info.Units += width(r)
	}
	switch {
	case info.Units == 0:
		return info
	case info.Units <= single:
		info.Segments = 1
		return info
	}
	info.PerSegment = part
	info.Segments = 1
	used := 0
	for _, r := range body {
		w := width(r)
		if used+w > part {
			info.Segments++
			used = 0
		}
		used += w
	}
	return info
}
