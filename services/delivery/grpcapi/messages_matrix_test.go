package grpcapi_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/campaignmesh/campaignmesh/gateway"
	accessv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/access/v1"
	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
)

var messagesDesc = deliveryv1.File_campaignmesh_delivery_v1_messages_proto.Services().ByName("MessagesService")

// messagesForeign is the code each RPC answers, when allowed, for a target of another tenant:
// NOT_FOUND for what it names (exactly as for what does not exist); content naming another
// tenant's sender identity is an invalid argument. RPCs not listed name no target.
var messagesForeign = map[string]codes.Code{
	"SetCampaignContent": codes.InvalidArgument, "GetCampaignContent": codes.NotFound, "PreviewMessage": codes.NotFound,
	"SendTestMessage": codes.NotFound, "VerifySenderIdentity": codes.NotFound, "DeleteSenderIdentity": codes.NotFound,
}

// The authorization and tenant isolation matrix of MessagesService, as TestAuthorizationMatrix
// is DeliveryService's: every RPC × every role of the rbac table, API keys with
// messages.send, with delivery.settings, with both, and with only contacts.read, and no
// credential × a target of the caller's own or of another tenant, over gRPC and over REST
// through the real gateway handler, each call asserting the exact code. Every call gets a
// target that exists, so an allowed call succeeds (test sends reach the stand-in).
func TestMessagesAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	e := newMessagesEnv(t, 1000)
	own, foreign := "tenant-own", "tenant-foreign"
	sample := &deliveryv1.SampleContact{Attributes: map[string]string{"first_name": "Ann"}}
	requests := map[string]func(tenant string) proto.Message{
		"SetCampaignContent": func(tn string) proto.Message {
			return &deliveryv1.SetCampaignContentRequest{CampaignId: newCampaignID(), Content: newContent(e.verifiedIn(t, tn))}
		},
		"GetCampaignContent": func(tn string) proto.Message {
			return &deliveryv1.GetCampaignContentRequest{CampaignId: e.contentIn(t, tn)}
		},
		"PreviewMessage": func(tn string) proto.Message {
			return &deliveryv1.PreviewMessageRequest{CampaignId: e.contentIn(t, tn), Variant: "A", Sample: sample}
		},
		"SendTestMessage": func(tn string) proto.Message {
			return &deliveryv1.SendTestMessageRequest{CampaignId: e.contentIn(t, tn), Variant: "A", Sample: sample, To: "qa@shop.example"}
		},
		"CreateSenderIdentity": func(string) proto.Message {
			return &deliveryv1.CreateSenderIdentityRequest{SenderIdentity: &deliveryv1.SenderIdentity{Channel: deliveryv1.Channel_CHANNEL_SMS, FromNumber: "+15550004444"}}
		},
		"ListSenderIdentities": func(string) proto.Message { return &deliveryv1.ListSenderIdentitiesRequest{} },
		"VerifySenderIdentity": func(tn string) proto.Message {
			return &deliveryv1.VerifySenderIdentityRequest{Id: e.spareIn(t, tn)}
		},
		"DeleteSenderIdentity": func(tn string) proto.Message {
			return &deliveryv1.DeleteSenderIdentityRequest{Id: e.spareIn(t, tn)}
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
	for _, scopes := range [][]string{{messagesSend}, {deliverySettings}, {messagesSend, deliverySettings}, {contactsRead}} {
		callers = append(callers, caller{"api key " + strings.Join(scopes, "+"), scopes, e.apiKey(own, scopes...)})
	}
	callers = append(callers, caller{"anonymous", nil, ""})

	rest := servicetest.NewREST(t, messagesDesc, gateway.Backend{Package: "campaignmesh.delivery.v1", Conn: e.conn,
		RegisterREST: deliveryv1.RegisterMessagesServiceHandler})
	transports := map[string]func(method string, req proto.Message, token string) codes.Code{
		"grpc": func(method string, req proto.Message, token string) codes.Code {
			ctx := context.Background()
			if token != "" {
				ctx = meshtest.Bearer(ctx, token)
			}
			return status.Code(e.conn.Invoke(ctx, "/campaignmesh.delivery.v1.MessagesService/"+method, req, newMessagesResponse(t, method)))
		},
		"rest": rest.Call,
	}
	allowed := map[string]int{}
	for i := 0; i < messagesDesc.Methods().Len(); i++ {
		md := messagesDesc.Methods().Get(i)
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
				want := messagesExpected(name, rule, c.perms, c.token != "", target.foreign)
				for tname, call := range transports {
					if want == codes.OK {
						allowed[name]++
					}
					if got := call(name, build(target.tenant), c.token); got != want {
						t.Errorf("%s as %s on a target of the %s tenant over %s: %v, want %v", name, c.name, target.name, tname, got, want)
					}
				}
			}
		}
	}
	for name := range requests {
		if allowed[name] == 0 {
			t.Errorf("no call of %s was allowed: the matrix proves denials only", name)
		}
	}
	if got := e.mail.Total(); got != allowed["SendTestMessage"] {
		t.Errorf("the stand-in got %d test messages, want one per allowed SendTestMessage (%d)", got, allowed["SendTestMessage"])
	}
}

func messagesExpected(method string, rule *accessv1.Rule, perms []string, authenticated, foreignTarget bool) codes.Code {
	req, ok := rule.GetRequirement().(*accessv1.Rule_Permission)
	switch {
	case !ok:
		return codes.Unknown // every MessagesService RPC needs a permission
	case !authenticated:
		return codes.Unauthenticated
	case !slices.Contains(perms, req.Permission):
		return codes.PermissionDenied
	case foreignTarget:
		if c, ok := messagesForeign[method]; ok {
			return c
		}
	}
	return codes.OK
}

// The access rules: VerifySenderIdentity is delivery.settings (admins), every other RPC
// messages.send; every change and every test send is audited, reads and previews are not.
func TestMessagesAccessRules(t *testing.T) {
	t.Parallel()
	for i := 0; i < messagesDesc.Methods().Len(); i++ {
		md := messagesDesc.Methods().Get(i)
		name := string(md.Name())
		rule, _ := proto.GetExtension(md.Options(), accessv1.E_Rule).(*accessv1.Rule)
		read := name == "GetCampaignContent" || name == "ListSenderIdentities" || name == "PreviewMessage"
		want := messagesSend
		if name == "VerifySenderIdentity" {
			want = deliverySettings
		}
		if rule.GetPermission() != want || rule.GetAudit() == read {
			t.Errorf("%s: permission %q audit %v, want %q audit %v", name, rule.GetPermission(), rule.GetAudit(), want, !read)
		}
	}
	if !rbac.Admin.Has(deliverySettings) || rbac.Manager.Has(deliverySettings) || !rbac.Manager.Has(messagesSend) {
		t.Error("messages.send is admins' and managers', delivery.settings admins' only")
	}
}

func newMessagesResponse(t *testing.T, method string) proto.Message {
	t.Helper()
	md := messagesDesc.Methods().ByName(protoreflect.Name(method))
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		t.Fatal(err)
	}
	return mt.New().Interface()
}
