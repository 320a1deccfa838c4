package console

import (
	"bytes"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
)

func TestParseDSRFilter(t *testing.T) {
	for _, tc := range []struct {
		query   string
		want    *dsrv1.ListRequestsRequest
		wantErr string
	}{
		{"", &dsrv1.ListRequestsRequest{PageSize: dsrDefaultPage}, ""},
		{"state=open&kind=erasure&overdue=1&size=100&page_token=t",
			&dsrv1.ListRequestsRequest{PageSize: 100, PageToken: "t", Overdue: true, States: dsrOpenStates, Kinds: []dsrv1.Kind{dsrv1.Kind_KIND_ERASURE}}, ""},
		{"state=completed", &dsrv1.ListRequestsRequest{PageSize: dsrDefaultPage, States: []dsrv1.Request_State{dsrv1.Request_STATE_COMPLETED}}, ""},
		{"state=STATE_COMPLETED", nil, "state"},
		{"kind=delete", nil, "kind"},
		{"size=101", nil, "page size"},
		{"size=-1", nil, "page size"},
		{"page_token=" + strings.Repeat("t", dsrMaxToken+1), nil, "page link"},
	} {
		q, _ := url.ParseQuery(tc.query)
		_, got, err := parseDSRFilter(q)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: error %v, want one about %q", tc.query, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !proto.Equal(got, tc.want) {
			t.Errorf("%q: %v %v, want %v", tc.query, got, err, tc.want)
		}
	}
}

func TestParseDSRForm(t *testing.T) {
	valid := func() url.Values {
		return url.Values{"kind": {"access"}, "regulation": {"gdpr"}, "request_id": {"console-abc"},
			"ident_1": {"user_id"}, "value_1": {" pat-42 "}, "ident_2": {"email"}, "value_2": {"pat@acme.example"}, "ident_3": {"email"}, "value_3": {""}}
	}
	got, err := parseDSRForm(valid())
	want := &dsrv1.CreateRequestRequest{RequestId: "console-abc", Request: &dsrv1.Request{Kind: dsrv1.Kind_KIND_ACCESS, Regulation: dsrv1.Regulation_REGULATION_GDPR,
		Subject: []*dsrv1.Identifier{{Kind: dsrv1.Identifier_KIND_USER_ID, Value: "pat-42"}, {Kind: dsrv1.Identifier_KIND_EMAIL, Value: "pat@acme.example"}}}}
	if err != nil || !proto.Equal(got, want) {
		t.Fatalf("parse = %v %v, want %v", got, err, want)
	}
	for name, change := range map[string]func(url.Values){
		"no kind":             func(f url.Values) { f.Del("kind") },
		"unknown kind":        func(f url.Values) { f.Set("kind", "KIND_ACCESS") },
		"unknown regulation":  func(f url.Values) { f.Set("regulation", "lgpd") },
		"no idempotency key":  func(f url.Values) { f.Del("request_id") },
		"bad idempotency key": func(f url.Values) { f.Set("request_id", "a b") },
		"long idempotency key": func(f url.Values) {
			f.Set("request_id", strings.Repeat("k", 65))
		},
		"no identifier":       func(f url.Values) { f.Set("value_1", " "); f.Set("value_2", "") },
		"identifier too long": func(f url.Values) { f.Set("value_2", strings.Repeat("v", dsrMaxValueLen+1)) },
		"unknown ident kind":  func(f url.Values) { f.Set("ident_1", "phone") },
		"missing ident kind":  func(f url.Values) { f.Del("ident_2") },
	} {
		f := valid()
		change(f)
		if got, err := parseDSRForm(f); err == nil {
			t.Errorf("%s: accepted as %v", name, got)
		}
	}
}

func TestParseExtendForm(t *testing.T) {
	days, reason, err := parseExtendForm(url.Values{"days": {"14"}, "reason": {" complex request "}})
	if err != nil || days != 14 || reason != "complex request" {
		t.Fatalf("parse = %d %q %v", days, reason, err)
	}
	// 500 characters (not bytes) is the limit.
	if _, _, err := parseExtendForm(url.Values{"days": {"1"}, "reason": {strings.Repeat("é", dsrMaxReasonLen)}}); err != nil {
		t.Errorf("500 two-byte characters: %v", err)
	}
	for name, f := range map[string]url.Values{
		"zero days":       {"days": {"0"}, "reason": {"r"}},
		"too many days":   {"days": {"61"}, "reason": {"r"}},
		"days not number": {"days": {"soon"}, "reason": {"r"}},
		"no reason":       {"days": {"3"}, "reason": {"  "}},
		"long reason":     {"days": {"3"}, "reason": {strings.Repeat("r", dsrMaxReasonLen+1)}},
	} {
		if _, _, err := parseExtendForm(f); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParsePolicyForm(t *testing.T) {
	valid := func() url.Values {
		return url.Values{"etag": {"e1"}, "retention_days": {"90"}, "default_action": {"keep"}, "ip_handling": {"truncate"},
			"user_agent_handling": {"drop"}, "rule_key": {"email", "", " phone "}, "rule_action": {"hash", "hash", "drop"}}
	}
	got, err := parsePolicyForm(valid())
	want := &dsrv1.UpdatePrivacyPolicyRequest{Etag: "e1", Policy: &dsrv1.PrivacyPolicy{RetentionDays: 90,
		DefaultPropertyAction: dsrv1.PrivacyPolicy_PROPERTY_ACTION_KEEP, IpHandling: dsrv1.PrivacyPolicy_IP_HANDLING_TRUNCATE,
		UserAgentHandling: dsrv1.PrivacyPolicy_USER_AGENT_HANDLING_DROP,
		PropertyRules: []*dsrv1.PrivacyPolicy_PropertyRule{{Key: "email", Action: dsrv1.PrivacyPolicy_PROPERTY_ACTION_HASH},
			{Key: "phone", Action: dsrv1.PrivacyPolicy_PROPERTY_ACTION_DROP}}}}
	if err != nil || !proto.Equal(got, want) {
		t.Fatalf("parse = %v %v, want %v", got, err, want)
	}
	tooMany := valid()
	tooMany["rule_key"], tooMany["rule_action"] = nil, nil
	for i := 0; i < dsrMaxRules+1; i++ {
		tooMany.Add("rule_key", "k"+strings.Repeat("x", i))
		tooMany.Add("rule_action", "drop")
	}
	for name, change := range map[string]func(url.Values){
		"negative retention": func(f url.Values) { f.Set("retention_days", "-1") },
		"long retention":     func(f url.Values) { f.Set("retention_days", "3651") },
		"retention not num":  func(f url.Values) { f.Set("retention_days", "forever") },
		"bad default":        func(f url.Values) { f.Set("default_action", "PROPERTY_ACTION_KEEP") },
		"bad ip":             func(f url.Values) { f.Set("ip_handling", "hash") },
		"bad user agent":     func(f url.Values) { f.Set("user_agent_handling", "truncate") },
		"duplicate key":      func(f url.Values) { f["rule_key"] = []string{"email", "email", ""} },
		"rule without action": func(f url.Values) {
			f["rule_action"] = []string{"hash", "hash", "explode"}
		},
		"rows mismatch": func(f url.Values) { f["rule_action"] = []string{"hash"} },
		"long key":      func(f url.Values) { f["rule_key"] = []string{strings.Repeat("k", dsrMaxRuleKeyLen+1), "", ""} },
		"long etag":     func(f url.Values) { f.Set("etag", strings.Repeat("e", dsrMaxEtagLen+1)) },
		"too many rules": func(f url.Values) {
			f["rule_key"], f["rule_action"] = tooMany["rule_key"], tooMany["rule_action"]
		},
	} {
		f := valid()
		change(f)
		if got, err := parsePolicyForm(f); err == nil {
			t.Errorf("%s: accepted as %v", name, got)
		}
	}
}

// The countdown: time left while open, overdue once the deadline passed, none once ended.
func TestDSRCountdown(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	open := newDSRRow(&dsrv1.Request{State: dsrv1.Request_STATE_RUNNING, DeadlineTime: timestamppb.New(now.Add(50*time.Hour + 30*time.Second))}, now)
	if !open.Open || open.Overdue() || fmtDuration(open.Left) != "2 d 2 h" {
		t.Errorf("open: %+v %q", open, fmtDuration(open.Left))
	}
	late := newDSRRow(&dsrv1.Request{State: dsrv1.Request_STATE_RECEIVED, DeadlineTime: timestamppb.New(now.Add(-3 * time.Hour))}, now)
	if !late.Overdue() || fmtDuration(late.Left) != "overdue by 3 h 0 min" {
		t.Errorf("late: %+v %q", late, fmtDuration(late.Left))
	}
	ended := newDSRRow(&dsrv1.Request{State: dsrv1.Request_STATE_COMPLETED, DeadlineTime: timestamppb.New(now.Add(-3 * time.Hour))}, now)
	if ended.Open || ended.Overdue() {
		t.Errorf("ended: %+v", ended)
	}
}

// The privacy pages render what a request holds, escaped: identifier values, reasons and
// errors come from people and other services.
func TestPrivacyPagesEscape(t *testing.T) {
	pages, err := parsePages()
	if err != nil {
		t.Fatal(err)
	}
	evil := `<img src=x onerror=alert(1)>`
	now := time.Now()
	r := &dsrv1.Request{Id: "dsr_1", Kind: dsrv1.Kind_KIND_ACCESS, Regulation: dsrv1.Regulation_REGULATION_CCPA, State: dsrv1.Request_STATE_COMPLETED,
		Subject:      []*dsrv1.Identifier{{Kind: dsrv1.Identifier_KIND_EMAIL, Value: evil}},
		Covered:      []*dsrv1.CoveredIdentifier{{Identifier: &dsrv1.Identifier{Kind: dsrv1.Identifier_KIND_EMAIL, Value: evil}, SubjectHash: "abcdef0123456789abcdef"}},
		Participants: []*dsrv1.ParticipantStatus{{Participant: "analytics", State: dsrv1.ParticipantStatus_STATE_DONE, Attempts: 2, LastError: evil, Counts: map[string]int64{"events": 1204, "sessions": 2}}},
		Extension:    &dsrv1.DeadlineExtension{Days: 10, Reason: evil, ExtendedBy: evil},
		Export:       &dsrv1.ExportManifest{Records: map[string]int64{"analytics": 1204}, Bytes: 4096, ExpireTime: timestamppb.New(now.Add(time.Hour))},
		CreateTime:   timestamppb.New(now), DeadlineTime: timestamppb.New(now.Add(time.Hour)), CreatedBy: evil}
	d := dsrDetail{dsrRow: newDSRRow(r, now), Exportable: true, ExportRecords: sortedCounts(r.GetExport().GetRecords()),
		Receipt: &receiptView{KeyID: "k1", Payload: `{"subject":"` + evil + `"}`, Valid: true}}
	for _, p := range r.GetParticipants() {
		d.Participants = append(d.Participants, participantRow{ParticipantStatus: p, Counts: sortedCounts(p.GetCounts())})
	}
	list := privacyList{Filter: dsrFilter{State: evil}, States: dsrStates, Kinds: dsrKinds, Regulations: dsrRegulations, IdentKinds: dsrIdentifierKind,
		Requests: []dsrRow{newDSRRow(r, now)}, RequestID: newRequestID(), Rows: []int{1, 2, 3}}
	policy := policyForm{Policy: &dsrv1.PrivacyPolicy{Etag: evil, PropertyRules: []*dsrv1.PrivacyPolicy_PropertyRule{{Key: evil, Action: dsrv1.PrivacyPolicy_PROPERTY_ACTION_HASH}}},
		Actions: policyActions, IPChoices: policyIP, UAChoices: policyUserAgent, Rules: []ruleRow{{N: 1, Key: evil, Action: "hash"}}}
	for _, tc := range []struct {
		page string
		data any
		want []string
	}{
		{"privacy_request", d, []string{"events 1,204, sessions 2", "Download export", "verified", "analytics"}},
		{"privacy", list, []string{"Create request", "dsr_1", "left"}},
		{"privacy_policy", policy, []string{"Save policy"}},
	} {
		var buf bytes.Buffer
		if err := pages[tc.page].ExecuteTemplate(&buf, "layout", view{Title: "t", Data: tc.data}); err != nil {
			t.Fatalf("%s: %v", tc.page, err)
		}
		body := buf.String()
		if strings.Contains(body, "<img") || !strings.Contains(body, "&lt;img src=x onerror=alert(1)&gt;") {
			t.Errorf("%s: not escaped:\n%s", tc.page, body)
		}
		for _, w := range tc.want {
			if !strings.Contains(body, w) {
				t.Errorf("%s lacks %q:\n%s", tc.page, w, body)
			}
		}
	}
}
