package console

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

func TestParseKeyForm(t *testing.T) {
	now := time.Date(2026, 3, 10, 15, 0, 0, 0, time.UTC)
	long := strings.Repeat("é", maxKeyNameLen+1)
	many := make([]string, maxKeyScopes+1)
	for i := range many {
		many[i] = "events.write"
	}
	for _, tc := range []struct {
		name, key, expires string
		scopes             []string
		problem            string
		want               keyForm
	}{
		{name: "no expiry", key: " web-app ", scopes: []string{"events.write"},
			want: keyForm{Name: "web-app", Scopes: []string{"events.write"}}},
		{name: "expires through the day", key: "k", scopes: []string{"a.b", "a.b", "c.d"}, expires: "2026-03-10",
			want: keyForm{Name: "k", Scopes: []string{"a.b", "c.d"}, Expire: ptr(time.Date(2026, 3, 11, 0, 0, 0, 0, time.UTC))}},
		{name: "empty name", key: "  ", scopes: []string{"events.write"}, problem: "name"},
		{name: "name too long", key: long, scopes: []string{"events.write"}, problem: "name"},
		{name: "no scope", key: "k", problem: "at least one"},
		{name: "too many scopes", key: "k", scopes: many, problem: "Too many"},
		{name: "scope too long", key: "k", scopes: []string{strings.Repeat("x", maxScopeLen+1)}, problem: "not a permission"},
		{name: "bad date", key: "k", scopes: []string{"a.b"}, expires: "10/03/2026", problem: "YYYY-MM-DD"},
		{name: "past date", key: "k", scopes: []string{"a.b"}, expires: "2026-03-09", problem: "has passed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, problem := parseKeyForm(tc.key, tc.scopes, tc.expires, now)
			if tc.problem != "" {
				if !strings.Contains(problem, tc.problem) {
					t.Fatalf("problem %q, want one mentioning %q", problem, tc.problem)
				}
				return
			}
			if problem != "" {
				t.Fatalf("problem %q", problem)
			}
			if got.Name != tc.want.Name || strings.Join(got.Scopes, ",") != strings.Join(tc.want.Scopes, ",") ||
				(got.Expire == nil) != (tc.want.Expire == nil) || got.Expire != nil && !got.Expire.Equal(*tc.want.Expire) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestKeyState(t *testing.T) {
	now := time.Now()
	past, future := timestamppb.New(now.Add(-time.Hour)), timestamppb.New(now.Add(time.Hour))
	for _, tc := range []struct {
		key  *authv1.ApiKey
		want string
	}{
		{&authv1.ApiKey{}, "active"},
		{&authv1.ApiKey{ExpireTime: future}, "active"},
		{&authv1.ApiKey{ExpireTime: past}, "expired"},
		{&authv1.ApiKey{ExpireTime: future, RevokeTime: past}, "revoked"},
		{&authv1.ApiKey{ExpireTime: past, RevokeTime: past}, "revoked"},
	} {
		if got := keyState(tc.key, now); got != tc.want {
			t.Errorf("%v: %s, want %s", tc.key, got, tc.want)
		}
	}
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{
		"6f1c2a9e-3b7d-4e55-9a0b-1c2d3e4f5a6b": true,
		"":                                     false,
		"../keys":                              false,
		"6f1c2a9e 3b7d":                        false,
		strings.Repeat("a", 65):                false,
		"<img src=x onerror=alert(1)>":         false,
	} {
		if got := validID(id); got != want {
			t.Errorf("validID(%q) = %v", id, got)
		}
	}
}
