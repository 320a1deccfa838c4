package grpcapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/campaignmesh/campaignmesh/gateway"
	accessv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/access/v1"
	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
)

var serviceDesc = deliveryv1.File_campaignmesh_delivery_v1_service_proto.Services().ByName("DeliveryService")

// tenantTargeted are the RPCs that name a contact or segment: on another tenant's they must
// answer NOT_FOUND, exactly as for one that does not exist.
var tenantTargeted = map[string]bool{
	"GetContact": true, "UpdateContact": true, "DeleteContact": true, "SetContactConsent": true,
	"GetSegment": true, "UpdateSegment": true, "DeleteSegment": true, "CountSegment": true,
}

// The tenant isolation and authorization matrix: every RPC of DeliveryService × every role of
// the rbac table (tenant roles and the platform operator), API keys with contacts.read, with
// contacts.write, with both, and with only campaigns.read, and no credential × a contact or
// segment of the caller's own or of another tenant, over gRPC and over REST through the real
// gateway handler — each call asserting the exact code. The expected code comes from the
// RPC's access rule and the caller's permissions (for roles, the rbac table: when the lead
// gives admin and manager contacts.*, their rows follow), so a handler that authorizes
// differently from its declared rule, or leaks across tenants, fails here. Every call gets a
// fresh target, so an allowed call succeeds.
func TestAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	own, foreign := "tenant-own", "tenant-foreign"

	requests := map[string]func(tenant string) proto.Message{
		"CreateContact": func(string) proto.Message { return &deliveryv1.CreateContactRequest{Contact: newContact()} },
		"GetContact": func(tn string) proto.Message {
			return &deliveryv1.GetContactRequest{Id: e.contactIn(t, tn).ID}
		},
		"ListContacts": func(string) proto.Message { return &deliveryv1.ListContactsRequest{} },
		"UpdateContact": func(tn string) proto.Message {
			return &deliveryv1.UpdateContactRequest{Contact: &deliveryv1.Contact{Id: e.contactIn(t, tn).ID, Locale: "fr-FR"},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"locale"}}}
		},
		"DeleteContact": func(tn string) proto.Message {
			return &deliveryv1.DeleteContactRequest{Id: e.contactIn(t, tn).ID}
		},
		"SetContactConsent": func(tn string) proto.Message {
			return &deliveryv1.SetContactConsentRequest{Id: e.contactIn(t, tn).ID, Channel: deliveryv1.Channel_CHANNEL_SMS,
				State: deliveryv1.Consent_STATE_REVOKED, Source: "support_ticket"}
		},
		"CreateSegment": func(string) proto.Message { return &deliveryv1.CreateSegmentRequest{Segment: newSegment()} },
		"GetSegment": func(tn string) proto.Message {
			return &deliveryv1.GetSegmentRequest{Id: e.segmentIn(t, tn).ID}
		},
		"ListSegments": func(string) proto.Message { return &deliveryv1.ListSegmentsRequest{} },
		"UpdateSegment": func(tn string) proto.Message {
			return &deliveryv1.UpdateSegmentRequest{Segment: &deliveryv1.Segment{Id: e.segmentIn(t, tn).ID, Name: "renamed " + newSegment().GetName()},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}}
		},
		"DeleteSegment": func(tn string) proto.Message {
			return &deliveryv1.DeleteSegmentRequest{Id: e.segmentIn(t, tn).ID}
		},
		"CountSegment": func(tn string) proto.Message {
			return &deliveryv1.CountSegmentRequest{Target: &deliveryv1.CountSegmentRequest_SegmentId{SegmentId: e.segmentIn(t, tn).ID}}
		},
		"ImportContacts": func(string) proto.Message {
			return &deliveryv1.ImportContactsRequest{Chunk: []byte("email,first_name\n" + newContact().GetEmail() + ",Ann\n")}
		},
	}
	type caller struct {
		name  string
		perms []string
		token string
	}
	var callers []caller
	for _, r := range rbac.Roles() {
		callers = append(callers, caller{string(r), r.Permissions(), e.token(t, own, r)})
	}
	for _, scopes := range [][]string{{contactsRead}, {contactsWrite}, {contactsRead, contactsWrite}, {rbac.CampaignsRead}} {
		callers = append(callers, caller{"api key " + strings.Join(scopes, "+"), scopes, e.apiKey(own, scopes...)})
	}
	callers = append(callers, caller{"anonymous", nil, ""})

	rest := servicetest.NewREST(t, serviceDesc, gateway.Backend{Package: "campaignmesh.delivery.v1", Conn: e.conn,
		RegisterREST: deliveryv1.RegisterDeliveryServiceHandler})
	transports := map[string]func(method string, req proto.Message, token string) codes.Code{
		"grpc": func(method string, req proto.Message, token string) codes.Code {
			ctx := context.Background()
			if token != "" {
				ctx = meshtest.Bearer(ctx, token)
			}
			if method == "ImportContacts" { // the client stream: one chunk
				_, err := importFile(ctx, e.client, bytes.NewReader(req.(*deliveryv1.ImportContactsRequest).GetChunk()), 1<<10)
				return status.Code(err)
			}
			return status.Code(e.conn.Invoke(ctx, "/campaignmesh.delivery.v1.DeliveryService/"+method, req, newResponse(t, method)))
		},
		"rest": func(method string, req proto.Message, token string) codes.Code {
			if method != "ImportContacts" {
				return rest.Call(method, req, token)
			}
			// The gateway's plain handler, streaming the body into the RPC.
			st, data := rest.Post("/v1/contacts:import", "text/csv", bytes.NewReader(req.(*deliveryv1.ImportContactsRequest).GetChunk()), token)
			var body struct {
				Code *int `json:"code"`
			}
			if st == http.StatusOK {
				return codes.OK
			}
			if json.Unmarshal(data, &body) != nil || body.Code == nil {
				t.Fatalf("import over REST: HTTP %d %s", st, data)
			}
			return codes.Code(*body.Code)
		},
	}
	allowed := 0
	for i := 0; i < serviceDesc.Methods().Len(); i++ {
		md := serviceDesc.Methods().Get(i)
		name := string(md.Name())
		build, ok := requests[name]
		if !ok {
			t.Errorf("%s has no request in the matrix", name)
			continue
		}
		rule, _ := proto.GetExtension(md.Options(), accessv1.E_Rule).(*accessv1.Rule)
		for _, c := range callers {
			for _, target := range []struct {
				name    string
				tenant  string
				foreign bool
			}{{"own", own, false}, {"foreign", foreign, true}} {
				want := expectedCode(name, rule, c.perms, c.token != "", target.foreign)
				if want == codes.OK {
					allowed++
				}
				for tname, call := range transports {
					if got := call(name, build(target.tenant), c.token); got != want {
						t.Errorf("%s as %s on a target of the %s tenant over %s: %v, want %v", name, c.name, target.name, tname, got, want)
					}
				}
			}
		}
	}
	if allowed == 0 {
		t.Error("no call of the matrix was allowed: it proves denials only")
	}
}

func expectedCode(method string, rule *accessv1.Rule, perms []string, authenticated, foreignTarget bool) codes.Code {
	req, ok := rule.GetRequirement().(*accessv1.Rule_Permission)
	switch {
	case !ok:
		return codes.Unknown // every DeliveryService RPC needs a permission
	case !authenticated:
		return codes.Unauthenticated
	case !slices.Contains(perms, req.Permission):
		return codes.PermissionDenied
	case foreignTarget && tenantTargeted[method]:
		return codes.NotFound
	}
	return codes.OK
}

// The access rules are the ones the plan names: reads need contacts.read, every change
// contacts.write and is audited.
func TestAccessRules(t *testing.T) {
	t.Parallel()
	for i := 0; i < serviceDesc.Methods().Len(); i++ {
		md := serviceDesc.Methods().Get(i)
		name := string(md.Name())
		rule, _ := proto.GetExtension(md.Options(), accessv1.E_Rule).(*accessv1.Rule)
		read := name == "GetContact" || name == "ListContacts" || name == "GetSegment" || name == "ListSegments" || name == "CountSegment"
		want := contactsWrite
		if read {
			want = contactsRead
		}
		if rule.GetPermission() != want || rule.GetAudit() == read {
			t.Errorf("%s: permission %q audit %v, want %q audit %v", name, rule.GetPermission(), rule.GetAudit(), want, !read)
		}
	}
}

// Lists never show another tenant's contacts or segments; the tenant comes from the credential
// only, never from metadata.
func TestListsAreTenantScoped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mine, theirs := "tenant-mine", "tenant-theirs"
	c, s := e.contactIn(t, mine), e.segmentIn(t, mine)
	e.contactIn(t, theirs)
	e.segmentIn(t, theirs)
	key := e.apiKey(mine, contactsRead)
	for _, ctx := range []context.Context{
		meshtest.Bearer(context.Background(), key),
		metadata.AppendToOutgoingContext(meshtest.Bearer(context.Background(), key), "x-tenant-id", theirs),
	} {
		cs, err := e.client.ListContacts(ctx, &deliveryv1.ListContactsRequest{})
		if err != nil || len(cs.GetContacts()) != 1 || cs.GetContacts()[0].GetId() != c.ID {
			t.Fatalf("list contacts: %v %v; want only the own tenant's contact", cs, err)
		}
		ss, err := e.client.ListSegments(ctx, &deliveryv1.ListSegmentsRequest{})
		if err != nil || len(ss.GetSegments()) != 1 || ss.GetSegments()[0].GetId() != s.ID {
			t.Fatalf("list segments: %v %v; want only the own tenant's segment", ss, err)
		}
	}
	// A platform operator's credential has no tenant: contacts are out of its reach even with
	// the permissions.
	op := e.apiKey("", contactsRead, contactsWrite)
	if _, err := e.client.ListContacts(meshtest.Bearer(context.Background(), op), &deliveryv1.ListContactsRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("list contacts without a tenant: %v, want PERMISSION_DENIED", err)
	}
}

func newResponse(t *testing.T, method string) proto.Message {
	t.Helper()
	md := serviceDesc.Methods().ByName(protoreflect.Name(method))
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		t.Fatal(err)
	}
	return mt.New().Interface()
}
