package grpcapi_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/campaignmesh/campaignmesh/gateway"
	accessv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/access/v1"
	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/mtls/mtlstest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/auth"
)

// tenantTargeted are the RPCs that name a resource of a tenant: called on another tenant's
// resource they must answer NOT_FOUND.
var tenantTargeted = map[string]bool{
	"GetUser": true, "DisableUser": true, "ChangeUserRole": true, "RevokeUserSessions": true, "UnlockUser": true,
	"GetApiKey": true, "RevokeApiKey": true,
	"RevokeInvitation": true,
}

// allowedCode is what an authorized call of each RPC answers with the matrix's requests (most
// are OK; some requests are deliberately wrong so the call is harmless and repeatable).
var allowedCode = map[string]codes.Code{
	"Login":            codes.Unauthenticated, // unknown account
	"Refresh":          codes.Unauthenticated, // unknown refresh token
	"ChangePassword":   codes.InvalidArgument, // wrong current password
	"AcceptInvitation": codes.NotFound,        // unknown token
}

// The authorization matrix: every RPC of AuthService × every role × own or foreign tenant,
// over gRPC and over REST through the gateway, each asserting the exact code. The expected code
// is derived from the RPC's access rule and the role table, so a handler that authorizes
// differently from its declared rule fails here.
func TestAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *auth.Service) {
		s.WithThrottle(auth.ThrottlePolicy{Window: time.Hour, AccountThreshold: 1 << 20, AddressThreshold: 1 << 20, MaxLock: time.Second})
	})
	ctx := context.Background()
	op := e.operator(t)
	own, foreign := e.tenantWithRoles(t, "own"), e.tenantWithRoles(t, "foreign")
	target := func(f tenantFixture) auth.User {
		u, err := e.svc.CreateUser(ctx, adminOf(f.tenant.ID), auth.User{Email: "target@" + f.tenant.Slug + ".example", Role: rbac.Viewer}, password)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	key := func(f tenantFixture) string {
		k, _, err := e.svc.CreateAPIKey(ctx, &authn.Principal{TenantID: f.tenant.ID, Subject: f.users[rbac.Admin].ID, Permissions: rbac.Admin.Permissions()}, "k", []string{"campaigns.read"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return k.ID
	}
	invitation := func(f tenantFixture) string {
		inv, _, err := e.svc.CreateInvitation(ctx, &authn.Principal{TenantID: f.tenant.ID, Subject: f.users[rbac.Admin].ID, Permissions: rbac.Admin.Permissions()}, "invited@"+f.tenant.Slug+".example", rbac.Viewer, nil)
		if err != nil {
			t.Fatal(err)
		}
		return inv.ID
	}
	targets := map[bool]struct{ user, key, invitation string }{
		false: {target(own).ID, key(own), invitation(own)}, true: {target(foreign).ID, key(foreign), invitation(foreign)},
	}
	var n atomic.Int64
	unique := func() string { return fmt.Sprintf("m%d", n.Add(1)) }

	requests := map[string]func(foreignTarget bool) proto.Message{
		"Login": func(bool) proto.Message {
			return &authv1.LoginRequest{Tenant: "own", Email: "nobody@own.example", Password: "x"}
		},
		"Refresh": func(bool) proto.Message { return &authv1.RefreshRequest{RefreshToken: "cmr_unknown"} },
		"Logout":  func(bool) proto.Message { return &authv1.LogoutRequest{RefreshToken: "cmr_unknown"} },
		"ChangePassword": func(bool) proto.Message {
			return &authv1.ChangePasswordRequest{CurrentPassword: "wrong", NewPassword: "a new long password"}
		},
		"ListRoles":        func(bool) proto.Message { return &authv1.ListRolesRequest{} },
		"WhoAmI":           func(bool) proto.Message { return &authv1.WhoAmIRequest{} },
		"ListSigningKeys":  func(bool) proto.Message { return &authv1.ListSigningKeysRequest{} },
		"RotateSigningKey": func(bool) proto.Message { return &authv1.RotateSigningKeyRequest{} },
		"CreateTenant": func(bool) proto.Message {
			return &authv1.CreateTenantRequest{Tenant: &authv1.Tenant{Slug: "t-" + unique(), DisplayName: "T"}}
		},
		"GetTenant":   func(bool) proto.Message { return &authv1.GetTenantRequest{Id: own.tenant.ID} },
		"ListTenants": func(bool) proto.Message { return &authv1.ListTenantsRequest{} },
		"SuspendTenant": func(bool) proto.Message {
			tn, err := e.svc.CreateTenant(ctx, "s-"+unique(), "S")
			if err != nil {
				t.Fatal(err)
			}
			return &authv1.SuspendTenantRequest{Id: tn.ID}
		},
		"SuspendTenantForBilling": func(bool) proto.Message {
			return &authv1.SuspendTenantForBillingRequest{TenantId: own.tenant.ID, Reason: "matrix"}
		},
		"CreateUser": func(bool) proto.Message {
			return &authv1.CreateUserRequest{User: &authv1.User{Email: unique() + "@own.example", Role: authv1.Role_ROLE_VIEWER}, Password: password}
		},
		"GetUser":     func(f bool) proto.Message { return &authv1.GetUserRequest{Id: targets[f].user} },
		"ListUsers":   func(bool) proto.Message { return &authv1.ListUsersRequest{} },
		"DisableUser": func(f bool) proto.Message { return &authv1.DisableUserRequest{Id: targets[f].user} },
		"ChangeUserRole": func(f bool) proto.Message {
			return &authv1.ChangeUserRoleRequest{Id: targets[f].user, Role: authv1.Role_ROLE_VIEWER}
		},
		"RevokeUserSessions": func(f bool) proto.Message { return &authv1.RevokeUserSessionsRequest{Id: targets[f].user} },
		"UnlockUser":         func(f bool) proto.Message { return &authv1.UnlockUserRequest{Id: targets[f].user} },
		"CreateInvitation": func(bool) proto.Message {
			return &authv1.CreateInvitationRequest{Invitation: &authv1.Invitation{Email: unique() + "@own.example", Role: authv1.Role_ROLE_VIEWER}}
		},
		"CreateTenantInvitation": func(bool) proto.Message {
			return &authv1.CreateTenantInvitationRequest{TenantId: own.tenant.ID, Invitation: &authv1.Invitation{Email: unique() + "@own.example", Role: authv1.Role_ROLE_ADMIN}}
		},
		"ListInvitations":  func(bool) proto.Message { return &authv1.ListInvitationsRequest{} },
		"RevokeInvitation": func(f bool) proto.Message { return &authv1.RevokeInvitationRequest{Id: targets[f].invitation} },
		"AcceptInvitation": func(bool) proto.Message {
			return &authv1.AcceptInvitationRequest{Token: "cmi_unknown", Password: password}
		},
		"CreateApiKey": func(bool) proto.Message {
			return &authv1.CreateApiKeyRequest{Name: "k", Scopes: []string{"campaigns.read"}}
		},
		"GetApiKey":          func(f bool) proto.Message { return &authv1.GetApiKeyRequest{Id: targets[f].key} },
		"ListApiKeys":        func(bool) proto.Message { return &authv1.ListApiKeysRequest{} },
		"RevokeApiKey":       func(f bool) proto.Message { return &authv1.RevokeApiKeyRequest{Id: targets[f].key} },
		"VerifyApiKey":       func(bool) proto.Message { return &authv1.VerifyApiKeyRequest{Secret: "cmk_x"} },
		"ListAuditRecords":   func(bool) proto.Message { return &authv1.ListAuditRecordsRequest{} },
		"VerifyAuditChain":   func(bool) proto.Message { return &authv1.VerifyAuditChainRequest{} },
		"AppendAuditRecords": func(bool) proto.Message { return &authv1.AppendAuditRecordsRequest{} },
		"ListRevocations":    func(bool) proto.Message { return &authv1.ListRevocationsRequest{} },
	}

	// One caller per role of the role table: a new role joins the matrix by existing.
	callers := map[string]struct {
		role  rbac.Role
		token string
	}{"operator": {rbac.PlatformOperator, op}}
	for _, r := range tenantRoles() {
		callers[string(r)] = struct {
			role  rbac.Role
			token string
		}{r, own.tokens[r]}
	}
	if len(callers) != len(rbac.Roles()) {
		t.Fatalf("the matrix calls as %d roles, the role table has %d", len(callers), len(rbac.Roles()))
	}
	rest := newRESTClient(t, e)
	transports := map[string]func(method string, req proto.Message, token string) codes.Code{
		"grpc": func(method string, req proto.Message, token string) codes.Code {
			resp := newResponse(t, method)
			err := grpcConn(t, e).Invoke(as(token), "/campaignmesh.auth.v1.AuthService/"+method, req, resp)
			return status.Code(err)
		},
		"rest": rest.Call,
	}

	sd := authv1.File_campaignmesh_auth_v1_service_proto.Services().ByName("AuthService")
	for i := 0; i < sd.Methods().Len(); i++ {
		md := sd.Methods().Get(i)
		name := string(md.Name())
		build, ok := requests[name]
		if !ok {
			t.Errorf("%s has no request in the matrix", name)
			continue
		}
		rule, _ := proto.GetExtension(md.Options(), accessv1.E_Rule).(*accessv1.Rule)
		for callerName, c := range callers {
			for _, foreignTarget := range []bool{false, true} {
				want := expectedCode(name, rule, c.role, foreignTarget)
				for tname, call := range transports {
					if tname == "rest" && rule.GetCallers() != nil {
						continue // internal: no REST route at all (gateway tests prove it)
					}
					got := call(name, build(foreignTarget), c.token)
					if got != want {
						t.Errorf("%s as %s on %s tenant over %s: %v, want %v", name, callerName, map[bool]string{false: "own", true: "foreign"}[foreignTarget], tname, got, want)
					}
				}
			}
		}
	}
}

func expectedCode(method string, rule *accessv1.Rule, role rbac.Role, foreignTarget bool) codes.Code {
	ok := codes.OK
	if c, found := allowedCode[method]; found {
		ok = c
	}
	switch req := rule.GetRequirement().(type) {
	case *accessv1.Rule_Public, *accessv1.Rule_Authenticated:
		return ok
	case *accessv1.Rule_Callers:
		return codes.PermissionDenied // users come through the gateway, not an allowed service
	case *accessv1.Rule_Permission:
		if !role.Has(req.Permission) {
			return codes.PermissionDenied
		}
		if foreignTarget && tenantTargeted[method] {
			return codes.NotFound
		}
		return ok
	}
	return codes.Unknown
}

var conns = map[*env]*grpc.ClientConn{}

func grpcConn(t *testing.T, e *env) *grpc.ClientConn {
	t.Helper()
	if c, ok := conns[e]; ok {
		return c
	}
	c, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(mtlstest.Source(t, e.ca, "gateway").ClientConfig("auth"))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); delete(conns, e) })
	conns[e] = c
	return c
}

func newResponse(t *testing.T, method string) proto.Message {
	t.Helper()
	md := authv1.File_campaignmesh_auth_v1_service_proto.Services().ByName("AuthService").Methods().ByName(protoreflect.Name(method))
	mt, err := protoregistryFind(md.Output().FullName())
	if err != nil {
		t.Fatal(err)
	}
	return mt
}

// newRESTClient serves the auth API through the real gateway handler (servicetest.REST).
func newRESTClient(t *testing.T, e *env) *servicetest.REST {
	return servicetest.NewREST(t, authv1.File_campaignmesh_auth_v1_service_proto.Services().ByName("AuthService"),
		gateway.Backend{Package: "campaignmesh.auth.v1", Conn: grpcConn(t, e), RegisterREST: authv1.RegisterAuthServiceHandler})
}
