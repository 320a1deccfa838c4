package delivery

import (
	"fmt"
	"html"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Placeholders. A template names a contact's field or attribute as {{name}}, with a default
// for an empty value as {{name|default}}; {{unsubscribe_url}} is the recipient's one-click
// unsubscribe link. A name is a contact field (email, phone, locale, time_zone) or, in the
// attribute keys' form (lowercase letters, digits, '_'), an attribute.
const (
	UnsubscribePlaceholder = "unsubscribe_url"
	// MaxPlaceholderDefaultLen bounds a placeholder's default text.
	MaxPlaceholderDefaultLen = 256
	// SMSStopFooter is appended to every SMS unless the content turns it off: carriers
	// expect the opt-out instruction in marketing messages, and STOP is honoured.
	SMSStopFooter = " Reply STOP to opt out"
)

// contactFields are the placeholders that name a contact's own fields, not an attribute.
var contactFields = map[string]func(*Contact) string{
	"email":     func(c *Contact) string { return c.Email },
	"phone":     func(c *Contact) string { return c.Phone },
	"locale":    func(c *Contact) string { return c.Locale },
	"time_zone": func(c *Contact) string { return c.TimeZone },
}

type segKind uint8

const (
	segText   segKind = iota // literal text
	segVar                   // a placeholder
	segUnsub                 // {{unsubscribe_url}}
	segLink                  // an <a href> value that is tracked when it is an http(s) URL
	segFooter                // where an HTML body gets its unsubscribe link and open pixel
)

type segment struct {
	kind segKind
	// text is a literal (HTML-unescaped inside a link's parts) or a placeholder's default.
	text string
	// field reads a contact field; nil for an attribute named name.
	name  string
	field func(*Contact) string
	// parts are a link's href value, in pieces.
	parts []segment
}

// Template is a parsed subject or body: parsed once when content is loaded, rendered per
// recipient without parsing again.
type Template struct {
	segs     []segment
	html     bool
	hasUnsub bool
	size     int
}

// HasUnsubscribe reports whether the template places {{unsubscribe_url}} itself.
func (t *Template) HasUnsubscribe() bool { return t != nil && t.hasUnsub }

var (
	// anchorHref finds the href value of an <a> element, double- or single-quoted.
	anchorHref = regexp.MustCompile(`(?is)<a\b[^>]*?\shref\s*=\s*(?:"([^"]*)"|'([^']*)')`)
	bodyClose  = regexp.MustCompile(`(?i)</body\s*>`)
)

// ParseTemplate parses src. In an HTML template the href of every <a> element is a link:
// rendered as a tracked click link when its target is an http(s) URL; and the end of the body
// is where the unsubscribe link (if the template has none) and the open pixel go.
func ParseTemplate(src string, isHTML bool) (*Template, error) {
	t := &Template{html: isHTML, size: len(src)}
	if !isHTML {
		segs, err := parsePlaceholders(src, false)
		if err != nil {
			return nil, err
		}
		t.segs = segs
	} else {
		footer := len(src)
		if locs := bodyClose.FindAllStringIndex(src, -1); len(locs) > 0 {
			footer = locs[len(locs)-1][0]
		}
		pos := 0
		for _, m := range anchorHref.FindAllStringSubmatchIndex(src[:footer], -1) {
			vs, ve := m[2], m[3]
			if vs < 0 {
				vs, ve = m[4], m[5]
			}
			before, err := parsePlaceholders(src[pos:vs], false)
			if err != nil {
				return nil, err
			}
			parts, err := parsePlaceholders(src[vs:ve], true)
			if err != nil {
				return nil, err
			}
			t.segs = append(t.segs, before...)
			t.segs = append(t.segs, linkSegment(src[vs:ve], parts))
			pos = ve
		}
		rest, err := parsePlaceholders(src[pos:footer], false)
		if err != nil {
			return nil, err
		}
		t.segs = append(t.segs, rest...)
		t.segs = append(t.segs, segment{kind: segFooter})
		if footer < len(src) {
			tail, err := parsePlaceholders(src[footer:], false)
			if err != nil {
				return nil, err
			}
			t.segs = append(t.segs, tail...)
		}
	}
	var mark func([]segment)
	mark = func(ss []segment) {
		for _, s := range ss {
			t.hasUnsub = t.hasUnsub || s.kind == segUnsub
			mark(s.parts)
		}
	}
	mark(t.segs)
	return t, nil
}

// linkSegment is an href value: kept literal unless it is (or may render to) an http(s) URL.
func linkSegment(raw string, parts []segment) segment {
	if len(parts) == 1 && parts[0].kind == segUnsub {
		return parts[0]
	}
	literal := true
	for _, p := range parts {
		literal = literal && p.kind == segText
	}
	if literal && !isHTTP(html.UnescapeString(raw)) {
		return segment{kind: segText, text: raw}
	}
	return segment{kind: segLink, parts: parts}
}

func isHTTP(u string) bool {
	u = strings.TrimSpace(u)
	return hasPrefixFold(u, "http://") || hasPrefixFold(u, "https://")
}

func hasPrefixFold(s, p string) bool { return len(s) >= len(p) && strings.EqualFold(s[:len(p)], p) }

// parsePlaceholders splits src into literal text and placeholders. inLink unescapes the
// literals (they are an attribute's value, which the link's target is built from).
func parsePlaceholders(src string, inLink bool) ([]segment, error) {
	var segs []segment
	lit := func(s string) {
		if s == "" {
			return
		}
		if inLink {
			s = html.UnescapeString(s)
		}
		segs = append(segs, segment{kind: segText, text: s})
	}
	for {
		i := strings.Index(src, "{{")
		if i < 0 {
			lit(src)
			return segs, nil
		}
		lit(src[:i])
		j := strings.Index(src[i+2:], "}}")
		if j < 0 {
			return nil, fmt.Errorf("a placeholder opened with {{ is not closed with }}")
		}
		inner := src[i+2 : i+2+j]
		src = src[i+2+j+2:]
		name, def, hasDef := strings.Cut(inner, "|")
		name = strings.TrimSpace(name)
		switch {
		case name == UnsubscribePlaceholder:
			if hasDef {
				return nil, fmt.Errorf("{{%s}} takes no default", UnsubscribePlaceholder)
			}
			segs = append(segs, segment{kind: segUnsub})
			continue
		case !attrKey.MatchString(name):
			return nil, fmt.Errorf("unknown placeholder {{%s}}: use a contact field (email, phone, locale, time_zone), an attribute key (lowercase letters, digits, '_') or unsubscribe_url", truncate(inner, 40))
		case len(def) > MaxPlaceholderDefaultLen || !printableText(def) || strings.Contains(def, "{{"):
			return nil, fmt.Errorf("placeholder {{%s}}: the default must be at most %d printable characters", name, MaxPlaceholderDefaultLen)
		}
		segs = append(segs, segment{kind: segVar, name: name, field: contactFields[name], text: def})
	}
}

// Render is what one message's templates are rendered with.
type Render struct {
	Contact *Contact
	Ref     string
	Links   Links
	// unsub caches Links.Unsubscribe(Ref) (a signature each).
	unsub string
}

func (r *Render) value(s *segment) string {
	var v string
	if s.field != nil {
		v = s.field(r.Contact)
	} else if r.Contact != nil {
		v = r.Contact.Attributes[s.name]
	}
	if v == "" {
		return s.text
	}
	return v
}

// UnsubscribeURL is the message's one-click unsubscribe link.
func (r *Render) UnsubscribeURL() string {
	if r.unsub == "" {
		r.unsub = r.Links.Unsubscribe(r.Ref)
	}
	return r.unsub
}

// Execute renders t for r. Values are HTML-escaped in an HTML template and raw otherwise.
func (t *Template) Execute(r *Render) string {
	if t == nil {
		return ""
	}
	var b strings.Builder
	b.Grow(t.size + t.size/4 + 256)
	esc := func(s string) string {
		if t.html {
			return html.EscapeString(s)
		}
		return s
	}
	for i := range t.segs {
		s := &t.segs[i]
		switch s.kind {
		case segText:
			b.WriteString(s.text)
		case segVar:
			b.WriteString(esc(r.value(s)))
		case segUnsub:
			b.WriteString(esc(r.UnsubscribeURL()))
		case segLink:
			b.WriteString(html.EscapeString(t.link(r, s)))
		case segFooter:
			if !t.hasUnsub {
				b.WriteString(`<p style="font-size:12px;color:#666"><a href="`)
				b.WriteString(html.EscapeString(r.UnsubscribeURL()))
				b.WriteString(`">Unsubscribe</a></p>`)
			}
			b.WriteString(`<img src="`)
			b.WriteString(html.EscapeString(r.Links.Open(r.Ref)))
			b.WriteString(`" width="1" height="1" alt="" style="display:block;border:0">`)
		}
	}
	return b.String()
}

// link renders a link's target: an http(s) URL becomes a tracked click link; a target built
// from placeholders that is not http(s), mailto or tel becomes "#", so a contact's value can
// never make a javascript: link.
func (t *Template) link(r *Render, s *segment) string {
	var b strings.Builder
	vars := false
	for i := range s.parts {
		p := &s.parts[i]
		switch p.kind {
		case segText:
			b.WriteString(p.text)
		case segVar:
			vars = true
			b.WriteString(r.value(p))
		case segUnsub:
			b.WriteString(r.UnsubscribeURL())
		}
	}
	target := strings.TrimSpace(b.String())
	switch {
	case isHTTP(target):
		return r.Links.Click(r.Ref, target)
	case !vars, hasPrefixFold(target, "mailto:"), hasPrefixFold(target, "tel:"):
		return target
	default:
		return "#"
	}
}

// Rendered is one recipient's message content.
type Rendered struct {
	Subject, HTML, Text string
	// SMS is an SMS message's body (with the STOP footer).
	SMS                string
	ListUnsubscribeURL string
}

// compiledVariant is one variant's parsed templates.
type compiledVariant struct {
	subject, html, text, sms *Template
}

func compileVariant(v VariantContent, ch Channel) (compiledVariant, map[string]error) {
	errs := map[string]error{}
	var cv compiledVariant
	parse := func(field, src string, isHTML bool) *Template {
		if src == "" {
			return nil
		}
		t, err := ParseTemplate(src, isHTML)
		if err != nil {
			errs[field] = err
		}
		return t
	}
	if ch == ChannelSMS {
		cv.sms = parse("sms_body", v.SMSBody, false)
	} else {
		cv.subject = parse("subject", v.Subject, false)
		cv.html = parse("html_body", v.HTMLBody, true)
		cv.text = parse("text_body", v.TextBody, false)
	}
	return cv, errs
}

// render renders the variant for r.
func (cv compiledVariant) render(r *Render, ch Channel, stopFooter bool) Rendered {
	if ch == ChannelSMS {
		body := cv.sms.Execute(r)
		if stopFooter {
			body += SMSStopFooter
		}
		return Rendered{SMS: body}
	}
	out := Rendered{
		Subject: oneLine(cv.subject.Execute(r)),
		HTML:    cv.html.Execute(r),
		Text:    cv.text.Execute(r),
	}
	if cv.text != nil && !cv.text.hasUnsub {
		out.Text += "\n\nUnsubscribe: " + r.UnsubscribeURL()
	}
	out.ListUnsubscribeURL = r.UnsubscribeURL()
	return out
}

// oneLine keeps a subject on one header line: an attribute may hold line breaks.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.Join(strings.Fields(strings.NewReplacer("\r", " ", "\n", " ").Replace(s)), " ")
}

// runeCount is an SMS body's length in characters.
func runeCount(s string) int { return utf8.RuneCountInString(s) }
