package console

import (
	"bytes"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

func TestParseAuditFilter(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name, query string
		wantErr     string
		check       func(t *testing.T, f auditFilter)
	}{
		{name: "no query: the last 24 hours", query: "", check: func(t *testing.T, f auditFilter) {
			if f.From != "2026-11-28T12:00" || !f.Start.Equal(now.Add(-24*time.Hour)) || !f.End.IsZero() || f.PageSize != auditDefaultPage {
				t.Errorf("filter %+v", f)
			}
		}},
		{name: "empty from: no start", query: "from=", check: func(t *testing.T, f auditFilter) {
			if f.From != "" || !f.Start.IsZero() {
				t.Errorf("filter %+v", f)
			}
		}},
		{name: "every filter", query: "actor=u1&method=/campaignmesh.auth.v1.AuthService/CreateUser&resource=r1&outcome=permission_denied&from=2026-11-01&to=2026-11-02T10:30&size=100&page_token=tok",
			check: func(t *testing.T, f auditFilter) {
				req := f.request()
				if req.GetActor() != "u1" || req.GetMethod() != "/campaignmesh.auth.v1.AuthService/CreateUser" || req.GetResource() != "r1" ||
					req.GetOutcome() != "PERMISSION_DENIED" || req.GetPageSize() != 100 || req.GetPageToken() != "tok" ||
					!req.GetStartTime().AsTime().Equal(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)) ||
					!req.GetEndTime().AsTime().Equal(time.Date(2026, 11, 2, 10, 30, 0, 0, time.UTC)) {
					t.Errorf("request %v", req)
				}
			}},
		{name: "RFC 3339 with a zone", query: "from=2026-11-01T10:00:00%2B02:00", check: func(t *testing.T, f auditFilter) {
			if !f.Start.Equal(time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)) {
				t.Errorf("start %v", f.Start)
			}
		}},
		{name: "page size over the limit", query: "size=101", wantErr: "page size"},
		{name: "page size not a number", query: "size=ten", wantErr: "page size"},
		{name: "page size zero", query: "size=0", wantErr: "page size"},
		{name: "unknown outcome", query: "outcome=MAYBE", wantErr: "outcome"},
		{name: "action not a method", query: "method=CreateUser", wantErr: "full method"},
		{name: "actor too long", query: "actor=" + strings.Repeat("a", auditMaxActor+1), wantErr: "actor"},
		{name: "resource too long", query: "resource=" + strings.Repeat("r", auditMaxResource+1), wantErr: "resource"},
		{name: "token too long", query: "page_token=" + strings.Repeat("t", auditMaxToken+1), wantErr: "page link"},
		{name: "bad time", query: "from=yesterday", wantErr: "start time"},
		{name: "end before start", query: "from=2026-11-02&to=2026-11-01", wantErr: "not after"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := url.ParseQuery(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			f, err := parseAuditFilter(q, now)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one about %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, f)
		})
	}
}

// The paging and "only this" links keep every other filter, and keep an empty start (no
// bound) distinct from none (the default 24 hours).
func TestAuditFilterLink(t *testing.T) {
	f, err := parseAuditFilter(url.Values{"from": {""}, "outcome": {"OK"}, "size": {"10"}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	link := f.link("page_token", "next one", "actor", "u 1")
	u, err := url.Parse(link)
	if err != nil || u.Path != "/console/audit" {
		t.Fatalf("link %q", link)
	}
	q := u.Query()
	if !q.Has("from") || q.Get("from") != "" || q.Get("outcome") != "OK" || q.Get("size") != "10" || q.Get("page_token") != "next one" || q.Get("actor") != "u 1" {
		t.Errorf("link %q", link)
	}
	again, err := parseAuditFilter(q, time.Now())
	if err != nil || !again.Start.IsZero() || again.Actor != "u 1" {
		t.Errorf("the link reads back as %+v %v", again, err)
	}
}

func TestShortMethod(t *testing.T) {
	for in, want := range map[string]string{
		"/campaignmesh.auth.v1.AuthService/CreateUser": "AuthService/CreateUser",
		"/X/Y": "X/Y",
		"odd":  "odd",
	} {
		if got := shortMethod(in); got != want {
			t.Errorf("shortMethod(%q) = %q, want %q", in, got, want)
		}
	}
}

// The audit page escapes what records carry (resources and actors are caller-supplied).
func TestAuditPageEscapes(t *testing.T) {
	pages, err := parsePages()
	if err != nil {
		t.Fatal(err)
	}
	evil := `<img src=x onerror=alert(1)>`
	f, _ := parseAuditFilter(url.Values{"resource": {evil}}, time.Now())
	rec := &authv1.AuditRecord{Actor: evil, Method: "/a.B/C", Resource: evil, Outcome: "OK", Time: timestamppb.Now(), RequestId: evil, ClientAddress: evil}
	p := auditPage{Filter: f, Outcomes: auditOutcomes, Records: []auditRow{{AuditRecord: rec, Action: "B/C", ActorLink: f.link("actor", evil), ResLink: f.link("resource", evil)}},
		Chain: &authv1.VerifyAuditChainResponse{Ok: false, FirstBrokenSequence: 7, Reason: evil}}
	var buf bytes.Buffer
	if err := pages["audit"].ExecuteTemplate(&buf, "layout", view{Title: "Audit log", Data: p}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "<img") {
		t.Errorf("the page carries raw markup:\n%s", buf.String())
	}
	if !strings.Contains(buf.String(), "&lt;img src=x onerror=alert(1)&gt;") || !strings.Contains(buf.String(), "broken at record 7") {
		t.Errorf("the page lacks the escaped value or the chain result:\n%s", buf.String())
	}
}
