package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/campaignmesh/campaignmesh/gen/openapi"
)

// route is one REST operation of the OpenAPI document.
type route struct{ method, path string }

var pathParam = regexp.MustCompile(`\{[^}]+\}`)

// restRoutes lists every operation of the served OpenAPI document, in a stable order.
func restRoutes(tb testing.TB) []route {
	tb.Helper()
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openapi.Document, &doc); err != nil {
		tb.Fatal(err)
	}
	var out []route
	for path, ops := range doc.Paths {
		for method := range ops {
			out = append(out, route{strings.ToUpper(method), path})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path+out[i].method < out[j].path+out[j].method })
	return out
}

// FuzzRESTSurface drives every REST route through the real gateway to backends that run the
// platform's whole interceptor chain and answer every valid request with an empty response:
// whatever the method, path parameters, query or body, the answer must not be a 5xx.
func FuzzRESTSurface(f *testing.F) {
	routes := restRoutes(f)
	for i, r := range routes {
		f.Add(uint16(i), "id-1", "", "{}")
		f.Add(uint16(i), "\xff", "page_token=%ff&time_zone=%C0", "{\"a\":\"\xff\"} x")
		if r.method == http.MethodGet {
			f.Add(uint16(i), "c1", "page_size=10&page_token=abc&time_zone=Europe/Berlin&start_time=2026-01-01T00:00:00Z", "")
		}
	}
	f.Add(uint16(1), "a\x00b", "name_prefix=%00", `{"user":{"email":"\u0000"}}`)
	f.Add(uint16(2), "x", "", `{"events":[{"properties":{"a":{"b":[1,{"c":"d"}]}}}]} x`)
	f.Add(uint16(3), "x", "state=12345&page_size=-1", `{}{}`)
	f.Add(uint16(4), "%zz", "x=%zz", `[`)

	mesh := startEchoMesh(f)
	g, err := New(context.Background(), Config{RateLimit: 1 << 30}, mesh.backends)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, idx uint16, param, query, body string) {
		rt := routes[int(idx)%len(routes)]
		path := pathParam.ReplaceAllStringFunc(rt.path, func(string) string { return url.PathEscape(param) })
		u, err := url.ParseRequestURI(path)
		if err != nil {
			return // not a request line an HTTP server would accept
		}
		u.RawQuery = query
		r := httptest.NewRequest(rt.method, "/", strings.NewReader(body))
		r.URL, r.RequestURI = u, u.RequestURI()
		r.Header.Set("Authorization", "Bearer any")
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		g.ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("%s %s body %q: %d %s", rt.method, u.RequestURI(), body, w.Code, w.Body)
		}
	})
}
