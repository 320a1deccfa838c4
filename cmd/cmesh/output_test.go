package main

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

var testTenants = []*authv1.Tenant{
	{
		Id:          "0196f3a2-7c1e-7d4b-9a51-1f0e2d3c4b5a",
		Slug:        "acme",
		DisplayName: "Acme Corp",
		State:       authv1.Tenant_STATE_ACTIVE,
		CreateTime:  timestamppb.New(time.Date(2026, 11, 1, 9, 30, 0, 0, time.FixedZone("CET", 3600))),
	},
	{
		Id:          "0196f3a2-9d00-7e11-8c22-3b4a5c6d7e8f",
		Slug:        "globex",
		DisplayName: "Globex\tInc.\n",
		State:       authv1.Tenant_STATE_SUSPENDED,
		CreateTime:  timestamppb.New(time.Date(2026, 11, 20, 17, 5, 9, 0, time.UTC)),
	},
}

func TestWriteTenants(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		tenants []*authv1.Tenant
		want    string
	}{
		{
			name:    "two tenants",
			tenants: testTenants,
			want: "" +
				"ID                                    SLUG    NAME         STATE      CREATED\n" +
				"0196f3a2-7c1e-7d4b-9a51-1f0e2d3c4b5a  acme    Acme Corp    active     2026-11-01T08:30:00Z\n" +
				"0196f3a2-9d00-7e11-8c22-3b4a5c6d7e8f  globex  Globex Inc.  suspended  2026-11-20T17:05:09Z\n",
		},
		{
			name:    "none",
			tenants: nil,
			want:    "ID  SLUG  NAME  STATE  CREATED\n",
		},
		{
			name:    "missing fields",
			tenants: []*authv1.Tenant{{Id: "t1"}},
			want: "" +
				"ID  SLUG  NAME  STATE        CREATED\n" +
				"t1              unspecified  -\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var b bytes.Buffer
			if err := writeTenants(&b, tt.tenants); err != nil {
				t.Fatal(err)
			}
			if b.String() != tt.want {
				t.Errorf("got\n%s\nwant\n%s", b.String(), tt.want)
			}
		})
	}
}

func TestPrintError(t *testing.T) {
	t.Parallel()
	invalid, err := status.New(codes.InvalidArgument, "invalid tenant").WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "tenant.slug", Description: "must be 3-40 characters of a-z, 0-9 and '-'"},
			{Field: "tenant.display_name", Description: "must not be empty"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		err       error
		sentToken bool
		want      string
	}{
		{
			name: "field violations",
			err:  invalid.Err(),
			want: "cmesh: invalid tenant (InvalidArgument)\n" +
				"  tenant.slug: must be 3-40 characters of a-z, 0-9 and '-'\n" +
				"  tenant.display_name: must not be empty\n",
		},
		{
			name:      "token rejected",
			err:       status.Error(codes.Unauthenticated, "token expired"),
			sentToken: true,
			want:      "cmesh: token expired (Unauthenticated)\nhint: run cmesh login\n",
		},
		{
			name: "login rejected",
			err:  status.Error(codes.Unauthenticated, "invalid credentials"),
			want: "cmesh: invalid credentials (Unauthenticated)\n",
		},
		{
			name: "permission denied",
			err:  status.Error(codes.PermissionDenied, "missing permission tenants.manage"),
			want: "cmesh: missing permission tenants.manage (PermissionDenied)\n",
		},
		{
			name: "wrapped status keeps its context",
			err:  fmt.Errorf("renew session: %w", status.Error(codes.Unavailable, "connection refused")),
			want: "cmesh: renew session: connection refused (Unavailable)\n",
		},
		{
			name: "local error",
			err:  fmt.Errorf("read CA certificate: %w", errors.New("open ca.pem: permission denied")),
			want: "cmesh: read CA certificate: open ca.pem: permission denied\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var b bytes.Buffer
			printError(&b, tt.err, tt.sentToken)
			if b.String() != tt.want {
				t.Errorf("got\n%s\nwant\n%s", b.String(), tt.want)
			}
		})
	}
}
