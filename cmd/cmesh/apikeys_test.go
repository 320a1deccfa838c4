package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

func TestScopesFlag(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		values  []string // one per -scope
		want    []string
		wantErr string
	}{
		{name: "one", values: []string{"events.write"}, want: []string{"events.write"}},
		{name: "repeated", values: []string{"events.write", "campaigns.read"}, want: []string{"events.write", "campaigns.read"}},
		{name: "commas", values: []string{"events.write,campaigns.read"}, want: []string{"events.write", "campaigns.read"}},
		{name: "commas and spaces", values: []string{" events.write , campaigns.read "}, want: []string{"events.write", "campaigns.read"}},
		{name: "both", values: []string{"a,b", "c"}, want: []string{"a", "b", "c"}},
		{name: "duplicates dropped", values: []string{"a,b", "a", "b,c"}, want: []string{"a", "b", "c"}},
		{name: "empty", values: []string{""}, wantErr: "empty scope"},
		{name: "trailing comma", values: []string{"a,"}, wantErr: "empty scope"},
		{name: "inner space", values: []string{"events write"}, wantErr: `scope "events write" has a space`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var s scopesFlag
			var err error
			for _, v := range tt.values {
				if err = s.Set(v); err != nil {
					break
				}
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(s, tt.want) {
				t.Errorf("scopes = %q, want %q", s, tt.want)
			}
		})
	}
}

var testAPIKey = &authv1.ApiKey{
	Id:           "0196f3a2-aaaa-7bbb-8ccc-000000000001",
	Name:         "ingest",
	Scopes:       []string{"events.write", "campaigns.read"},
	SecretPrefix: "cmk_ab12",
	CreateTime:   timestamppb.New(testNow),
	ExpireTime:   timestamppb.New(testNow.Add(720 * time.Hour)),
}

const testSecret = "cmk_ab12.s3cr3t-only-once"

func TestAPIKeysCreate(t *testing.T) {
	t.Parallel()
	resp := &authv1.CreateApiKeyResponse{ApiKey: testAPIKey, Secret: testSecret}
	tests := []struct {
		name       string
		args       []string
		wantReq    *authv1.CreateApiKeyRequest // request_id aside
		wantReqID  string                      // "" for a generated one
		wantStdout string                      // table output; JSON is checked for every case
	}{
		{
			name: "scopes and duration",
			args: []string{"-name", "ingest", "-scope", "events.write", "-scope", "campaigns.read", "-expires", "720h"},
			wantReq: &authv1.CreateApiKeyRequest{
				Name: "ingest", Scopes: []string{"events.write", "campaigns.read"},
				ExpireTime: timestamppb.New(testNow.Add(720 * time.Hour)),
			},
			wantStdout: "" +
				"ID                                    NAME    SCOPES                       PREFIX    EXPIRES               LAST USED  REVOKED\n" +
				"0196f3a2-aaaa-7bbb-8ccc-000000000001  ingest  events.write,campaigns.read  cmk_ab12  2026-12-22T12:00:00Z  never      -\n" +
				"\n" +
				"secret (shown once): cmk_ab12.s3cr3t-only-once\n",
		},
		{
			name: "comma-separated scopes, expiry time, request id",
			args: []string{"-name", "ingest", "-scope", "events.write,campaigns.read", "-expire-time", "2027-01-01T00:00:00+01:00", "-request-id", "deploy-42"},
			wantReq: &authv1.CreateApiKeyRequest{
				Name: "ingest", Scopes: []string{"events.write", "campaigns.read"},
				ExpireTime: timestamppb.New(time.Date(2026, 12, 31, 23, 0, 0, 0, time.UTC)),
			},
			wantReqID: "deploy-42",
		},
		{
			name:    "never expires",
			args:    []string{"-name", "ingest", "-scope", "events.write"},
			wantReq: &authv1.CreateApiKeyRequest{Name: "ingest", Scopes: []string{"events.write"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, output := range []string{"table", "json"} {
				var gotReqID string
				client := &fakeAuth{createAPIKey: func(ctx context.Context, req *authv1.CreateApiKeyRequest) (*authv1.CreateApiKeyResponse, error) {
					gotReqID = req.GetRequestId()
					req = proto.CloneOf(req)
					req.RequestId = ""
					if !proto.Equal(req, tt.wantReq) {
						t.Errorf("request = %v, want %v", req, tt.wantReq)
					}
					return resp, nil
				}}
				c := newTestCLI(t, loggedIn(t, fresh), client)
				if code := c.run(t.Context(), append([]string{"-o", output, "apikeys", "create"}, tt.args...)); code != 0 {
					t.Fatalf("exit code = %d; stderr:\n%s", code, c.stderr)
				}
				switch {
				case tt.wantReqID != "" && gotReqID != tt.wantReqID:
					t.Errorf("request_id = %q, want %q", gotReqID, tt.wantReqID)
				case tt.wantReqID == "" && (!strings.HasPrefix(gotReqID, "cmesh-") || !validRequestID(gotReqID)):
					t.Errorf("generated request_id %q is not a valid cmesh id", gotReqID)
				}
				if strings.Contains(c.stderr.String(), testSecret) {
					t.Errorf("stderr shows the secret:\n%s", c.stderr)
				}
				if output == "json" {
					var got authv1.CreateApiKeyResponse
					if err := protojson.Unmarshal(c.stdout.Bytes(), &got); err != nil {
						t.Fatalf("stdout is not a CreateApiKeyResponse: %v\n%s", err, c.stdout)
					}
					if !proto.Equal(&got, resp) {
						t.Errorf("got %v, want %v", &got, resp)
					}
					continue
				}
				if n := strings.Count(c.stdout.String(), testSecret); n != 1 {
					t.Errorf("stdout shows the secret %d times, want once:\n%s", n, c.stdout)
				}
				if !strings.Contains(c.stdout.String(), "\nsecret (shown once): "+testSecret+"\n") {
					t.Errorf("stdout has no secret line:\n%s", c.stdout)
				}
				if tt.wantStdout != "" && c.stdout.String() != tt.wantStdout {
					t.Errorf("stdout =\n%s\nwant\n%s", c.stdout, tt.wantStdout)
				}
			}
		})
	}
}

func TestWriteAPIKeys(t *testing.T) {
	t.Parallel()
	revoked := proto.CloneOf(testAPIKey)
	revoked.Id, revoked.Scopes, revoked.ExpireTime = "k2", []string{"events.write"}, nil
	revoked.LastUsedTime = timestamppb.New(testNow.Add(-time.Hour))
	revoked.RevokeTime = timestamppb.New(testNow)
	var b bytes.Buffer
	if err := writeAPIKeys(&b, []*authv1.ApiKey{testAPIKey, revoked}); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"ID                                    NAME    SCOPES                       PREFIX    EXPIRES               LAST USED             REVOKED\n" +
		"0196f3a2-aaaa-7bbb-8ccc-000000000001  ingest  events.write,campaigns.read  cmk_ab12  2026-12-22T12:00:00Z  never                 -\n" +
		"k2                                    ingest  events.write                 cmk_ab12  never                 2026-11-22T11:00:00Z  2026-11-22T12:00:00Z\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}
