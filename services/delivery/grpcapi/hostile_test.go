package grpcapi_test

import (
	"context"
	"math"
	"os"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/access"
)

// Hostile but well-formed input — unknown enum numbers, extreme integers, timestamps outside
// their valid range, long strings, control characters, garbage ids and tokens — is refused as
// bad input or answered, never INTERNAL: nothing of it may reach PostgreSQL as a value it
// cannot take.
func TestHostileInputIsNeverInternal(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := meshtest.Bearer(context.Background(), e.apiKey("t1", contactsRead, contactsWrite))
	long := strings.Repeat("é", 100_000)
	contact := func(edit func(*deliveryv1.Contact)) *deliveryv1.Contact {
		c := newContact()
		edit(c)
		return c
	}
	many := map[string]string{}
	for i := range 5000 {
		many[strings.Repeat("a", 1+i%60)+string(rune('a'+i%26))+strings.Repeat("b", i/1500)] = "v"
	}
	contacts := map[string]*deliveryv1.Contact{
		"long email":         contact(func(c *deliveryv1.Contact) { c.Email = long + "@example.com" }),
		"long phone":         contact(func(c *deliveryv1.Contact) { c.Phone = "+" + strings.Repeat("1", 10_000) }),
		"long user id":       contact(func(c *deliveryv1.Contact) { c.UserId = long }),
		"nul in user id":     contact(func(c *deliveryv1.Contact) { c.UserId = "u\x00" }),
		"long attribute":     contact(func(c *deliveryv1.Contact) { c.Attributes = map[string]string{"k": long, long: "v"} }),
		"nul attribute":      contact(func(c *deliveryv1.Contact) { c.Attributes = map[string]string{"k": "a\x00b"} }),
		"many attributes":    contact(func(c *deliveryv1.Contact) { c.Attributes = many }),
		"zone Go only":       contact(func(c *deliveryv1.Contact) { c.TimeZone = "right/UTC" }),
		"long zone":          contact(func(c *deliveryv1.Contact) { c.TimeZone = long }),
		"long locale":        contact(func(c *deliveryv1.Contact) { c.Locale = long }),
		"unknown consent":    contact(func(c *deliveryv1.Contact) { c.EmailConsent.State = 12345 }),
		"negative consent":   contact(func(c *deliveryv1.Contact) { c.SmsConsent = &deliveryv1.Consent{State: -1, Source: "x"} }),
		"long source":        contact(func(c *deliveryv1.Contact) { c.EmailConsent.Source = long }),
		"consent time max":   contact(func(c *deliveryv1.Contact) { c.EmailConsent.Time = &timestamppb.Timestamp{Seconds: math.MaxInt64} }),
		"consent time min":   contact(func(c *deliveryv1.Contact) { c.EmailConsent.Time = &timestamppb.Timestamp{Seconds: math.MinInt64} }),
		"consent time nanos": contact(func(c *deliveryv1.Contact) { c.EmailConsent.Time = &timestamppb.Timestamp{Nanos: -1} }),
		"consent year 1":     contact(func(c *deliveryv1.Contact) { c.EmailConsent.Time = &timestamppb.Timestamp{Seconds: -62135596800} }),
		"consent year 9999":  contact(func(c *deliveryv1.Contact) { c.EmailConsent.Time = &timestamppb.Timestamp{Seconds: 253402300799} }),
		"output only fields": contact(func(c *deliveryv1.Contact) { c.Id, c.Etag, c.Suppressed = "x", "y", true }),
	}
	check := func(what string, err error) {
		t.Helper()
		if c := status.Code(err); c != codes.OK && c != codes.InvalidArgument && c != codes.NotFound && c != codes.AlreadyExists {
			t.Errorf("%s: %v, want OK or a refusal of the input", what, err)
		}
	}
	for name, c := range contacts {
		_, err := e.client.CreateContact(ctx, &deliveryv1.CreateContactRequest{Contact: c})
		check("create with "+name, err)
	}
	for _, id := range []string{"", "x", long, "00000000-0000-0000-0000-000000000000", "'; DROP TABLE contacts; --"} {
		_, err := e.client.GetContact(ctx, &deliveryv1.GetContactRequest{Id: id})
		check("get "+id[:min(len(id), 20)], err)
		_, err = e.client.GetSegment(ctx, &deliveryv1.GetSegmentRequest{Id: id})
		check("get segment "+id[:min(len(id), 20)], err)
	}
	for _, size := range []int32{math.MaxInt32, math.MinInt32} {
		_, err := e.client.ListContacts(ctx, &deliveryv1.ListContactsRequest{PageSize: size})
		check("list contacts", err)
		_, err = e.client.ListSegments(ctx, &deliveryv1.ListSegmentsRequest{PageSize: size})
		check("list segments", err)
	}
	for _, token := range []string{long, "eyJ0IjoiOTk5OTktMDEtMDFUMDA6MDA6MDBaIiwiaWQiOiIwMDAwMDAwMC0wMDAwLTAwMDAtMDAwMC0wMDAwMDAwMDAwMDAifQ"} {
		_, err := e.client.ListContacts(ctx, &deliveryv1.ListContactsRequest{PageToken: token})
		check("list contacts with a forged token", err)
	}
	segments := map[string]*deliveryv1.SegmentFilter{
		"unknown op":       {Attributes: []*deliveryv1.AttributeCondition{{Key: "k", Op: 999, Values: []string{"v"}}}},
		"unknown channel":  {ConsentGranted: []deliveryv1.Channel{-5}},
		"many conditions":  {Attributes: make([]*deliveryv1.AttributeCondition, 5000)},
		"nil condition":    {Attributes: []*deliveryv1.AttributeCondition{nil}},
		"many values":      {Attributes: []*deliveryv1.AttributeCondition{{Key: "k", Op: deliveryv1.AttributeCondition_OPERATOR_IN, Values: make([]string, 100_000)}}},
		"long value":       {Attributes: []*deliveryv1.AttributeCondition{{Key: "k", Op: deliveryv1.AttributeCondition_OPERATOR_PREFIX, Values: []string{long}}}},
		"nul value":        {Attributes: []*deliveryv1.AttributeCondition{{Key: "k", Op: deliveryv1.AttributeCondition_OPERATOR_EQUALS, Values: []string{"\x00"}}}},
		"max days":         {Behaviour: &deliveryv1.BehaviourCondition{EventType: "click", WithinDays: math.MaxInt32}},
		"negative days":    {Behaviour: &deliveryv1.BehaviourCondition{EventType: "click", WithinDays: math.MinInt32}},
		"long event type":  {Behaviour: &deliveryv1.BehaviourCondition{EventType: long, WithinDays: 1}},
		"garbage campaign": {Behaviour: &deliveryv1.BehaviourCondition{EventType: "click", CampaignId: long, WithinDays: 1}},
		"prefix with %":    {Attributes: []*deliveryv1.AttributeCondition{{Key: "k", Op: deliveryv1.AttributeCondition_OPERATOR_PREFIX, Values: []string{"%_\\"}}}},
	}
	for name, f := range segments {
		_, err := e.client.CreateSegment(ctx, &deliveryv1.CreateSegmentRequest{Segment: &deliveryv1.Segment{Name: "s " + name, Filter: f}})
		check("segment with "+name, err)
	}
	_, err := e.client.CreateSegment(ctx, &deliveryv1.CreateSegmentRequest{Segment: &deliveryv1.Segment{Name: long}})
	check("segment with a long name", err)
}

// rpcDocs reads the doc comment of every RPC from the proto source file (generated
// descriptors carry no comments).
func rpcDocs(t *testing.T, file string) map[string]string {
	t.Helper()
	src, err := os.ReadFile("../../../proto/campaignmesh/delivery/v1/" + file)
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string]string{}
	var comment []string
	for _, line := range strings.Split(string(src), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "//"):
			comment = append(comment, strings.TrimSpace(strings.TrimPrefix(line, "//")))
		case strings.HasPrefix(line, "rpc "):
			name, _, _ := strings.Cut(strings.TrimPrefix(line, "rpc "), "(")
			docs[name] = strings.Join(comment, " ")
			comment = nil
		default:
			comment = nil
		}
	}
	return docs
}

// The platform's registry test walks only the service packages it imports; this one walks
// DeliveryService and MessagesService: every RPC has an access rule, a REST mapping and a doc
// comment that names the caller, the permission and whether it is audited.
func TestEveryRPCHasARuleARESTMappingAndADocComment(t *testing.T) {
	t.Parallel()
	everyRPCHasARuleARESTMappingAndADocComment(t, serviceDesc, rpcDocs(t, "service.proto"))
	everyRPCHasARuleARESTMappingAndADocComment(t, messagesDesc, rpcDocs(t, "messages.proto"))
}

func everyRPCHasARuleARESTMappingAndADocComment(t *testing.T, serviceDesc protoreflect.ServiceDescriptor, docs map[string]string) {
	t.Helper()
	for i := 0; i < serviceDesc.Methods().Len(); i++ {
		md := serviceDesc.Methods().Get(i)
		full := "/" + string(serviceDesc.FullName()) + "/" + string(md.Name())
		rule := access.RuleOf(full)
		if rule == nil {
			t.Errorf("%s has no (campaignmesh.access.v1.rule)", full)
			continue
		}
		http, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
		switch {
		case md.IsStreamingClient():
			// A client stream has no grpc-gateway mapping: a plain gateway handler serves it,
			// and its doc comment names the route.
			if http != nil || !strings.Contains(docs[string(md.Name())], "REST: POST /v1/") {
				t.Errorf("%s: a client stream must name its gateway route in its doc comment and have no google.api.http", full)
			}
		case http == nil || http.GetPattern() == nil:
			t.Errorf("%s has no google.api.http mapping", full)
		}
		doc := docs[string(md.Name())]
		if !strings.Contains(doc, "Caller:") {
			t.Errorf("%s: doc comment does not name its caller", full)
		}
		if p := rule.GetPermission(); p != "" && !strings.Contains(doc, "Permission: "+p) {
			t.Errorf("%s: doc comment does not name permission %s", full, p)
		}
		if rule.GetAudit() && !strings.Contains(doc, "Audited") {
			t.Errorf("%s: audited, but its doc comment does not say so", full)
		}
	}
}
