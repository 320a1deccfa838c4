package delivery_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/campaignmesh/campaignmesh/services/delivery"
)

// testLinks is a Links whose URLs show what they were made from.
type testLinks struct{}

func (testLinks) Click(ref, target string) string {
	return "https://t.example/c/" + ref + "?u=" + url.QueryEscape(target)
}
func (testLinks) Open(ref string) string        { return "https://t.example/o/" + ref + ".gif" }
func (testLinks) Unsubscribe(ref string) string { return "https://t.example/u/" + ref }

func render(t *testing.T, src string, html bool, c *delivery.Contact) string {
	t.Helper()
	tmpl, err := delivery.ParseTemplate(src, html)
	if err != nil {
		t.Fatalf("parse %q: %v", src, err)
	}
	return tmpl.Execute(&delivery.Render{Contact: c, Ref: "42", Links: testLinks{}})
}

// A contact's values are HTML-escaped in an HTML body — an attribute holding <script> stays
// text — and raw in a text body; an empty value takes the placeholder's default.
func TestRenderEscapesValuesInHTMLOnly(t *testing.T) {
	c := &delivery.Contact{Email: "ann@example.com", Locale: "de-DE",
		Attributes: map[string]string{"first_name": `<script>alert("x")</script>`, "city": "Köln & Bonn"}}
	got := render(t, `<p>Hi {{first_name|there}} from {{ city }}, {{email}} ({{locale}}) {{plan|free}}</p>`, true, c)
	if strings.Contains(got, "<script>") || !strings.Contains(got, "Hi &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; from Köln &amp; Bonn, ann@example.com (de-DE) free") {
		t.Errorf("html: %s", got)
	}
	got = render(t, `Hi {{first_name|there}} from {{city}} {{plan|free}}`, false, c)
	if got != `Hi <script>alert("x")</script> from Köln & Bonn free` {
		t.Errorf("text: %s", got)
	}
	if got := render(t, `Hi {{first_name|there}}`, false, &delivery.Contact{}); got != "Hi there" {
		t.Errorf("default: %s", got)
	}
}

// Every http(s) link of an HTML body becomes a tracked click link to its exact target
// (entities decoded); other links stay as written; a link built from a contact's value that
// is not http(s), mailto or tel becomes "#"; {{unsubscribe_url}} is the unsubscribe link,
// not tracked as a click; the open pixel and (when the template has none) an unsubscribe
// link go before </body>.
func TestRenderRewritesLinks(t *testing.T) {
	c := &delivery.Contact{Attributes: map[string]string{"site": "javascript:alert(1)", "shop": "https://shop.example/u?id=7"}}
	src := `<html><body><a class="x" href="https://shop.example/sale?a=1&amp;b=2">Sale</a>
<a href='http://blog.example/'>Blog</a> <a href="mailto:help@shop.example">Mail</a> <a href="#top">Top</a>
<a href="{{site}}">Site</a> <a href="{{shop}}&amp;ref=mail">Shop</a></body></html>`
	got := render(t, src, true, c)
	for _, want := range []string{
		`<a class="x" href="https://t.example/c/42?u=` + url.QueryEscape("https://shop.example/sale?a=1&b=2") + `">Sale</a>`,
		`<a href='https://t.example/c/42?u=` + url.QueryEscape("http://blog.example/") + `'>Blog</a>`,
		`<a href="mailto:help@shop.example">Mail</a>`, `<a href="#top">Top</a>`,
		`<a href="#">Site</a>`,
		`<a href="https://t.example/c/42?u=` + url.QueryEscape("https://shop.example/u?id=7&ref=mail") + `">Shop</a>`,
		`<a href="https://t.example/u/42">Unsubscribe</a></p><img src="https://t.example/o/42.gif" width="1" height="1" alt="" style="display:block;border:0"></body></html>`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("rendered html lacks %s:\n%s", want, got)
		}
	}

	got = render(t, `<p>News</p><p><a href="{{unsubscribe_url}}">Leave</a></p>`, true, c)
	want := `<p>News</p><p><a href="https://t.example/u/42">Leave</a></p><img src="https://t.example/o/42.gif" width="1" height="1" alt="" style="display:block;border:0">`
	if got != want {
		t.Errorf("with its own unsubscribe link:\n%s\nwant\n%s", got, want)
	}
}

// Placeholders that name nothing a contact has, or are malformed, are refused when parsed.
func TestParseTemplateRefusesUnknownPlaceholders(t *testing.T) {
	for _, src := range []string{
		"Hi {{First Name}}", "Hi {{contact.email}}", "Hi {{first_name", "{{}}", "{{unsubscribe_url|x}}",
		"{{name|" + strings.Repeat("d", delivery.MaxPlaceholderDefaultLen+1) + "}}", "{{a|b\x00}}", "{{9lives}}",
	} {
		for _, html := range []bool{false, true} {
			if _, err := delivery.ParseTemplate(src, html); err == nil {
				t.Errorf("parse %q (html %v): accepted", src, html)
			}
		}
	}
}
