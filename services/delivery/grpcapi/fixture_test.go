package grpcapi_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/rbac"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

// Permissions of the delivery API. No role of the rbac table holds them yet (the roles change
// is the lead's); callers that hold them here are API keys with those scopes.
const (
	contactsRead  = "contacts.read"
	contactsWrite = "contacts.write"
)

// env is the delivery service built by its app package as cmd/delivery builds it, on its own
// fresh PostgreSQL database, serving over real mTLS with a certificate of a test CA; clients
// call it with the gateway's identity. Credentials are verified by keyring: access tokens of
// a test issuer (signed as auth signs them, with the rbac table's roles) and API keys with any
// scopes (auth's API keys can only carry the table's permissions, which do not yet include
// contacts.*).
type env struct {
	d      *servicetest.Delivery
	aud    *delivery.Audiences
	conn   *grpc.ClientConn
	client deliveryv1.DeliveryServiceClient
	issuer *meshtest.Issuer
	keys   *keyring
}

// keyring verifies the issuer's access tokens and the test's API keys.
type keyring struct {
	jwt  authn.Verifier
	keys sync.Map // secret → *authn.Principal
	n    atomic.Int64
}

func (k *keyring) Verify(ctx context.Context, credential string) (*authn.Principal, error) {
	if p, ok := k.keys.Load(credential); ok {
		cp := *p.(*authn.Principal)
		return &cp, nil
	}
	return k.jwt.Verify(ctx, credential)
}

func newEnv(t *testing.T) *env {
	t.Helper()
	issuer := meshtest.NewIssuer(t)
	keys := &keyring{jwt: issuer.Verifier()}
	d := servicetest.StartDelivery(t, servicetest.DeliveryOptions{Verifier: keys})
	conn := servicetest.Dial(t, d.Addr(), d.CA, "gateway", "delivery")
	return &env{d: d, aud: d.Audiences(), conn: conn, client: deliveryv1.NewDeliveryServiceClient(conn), issuer: issuer, keys: keys}
}

// apiKey returns a new API key of tenant with scopes.
func (e *env) apiKey(tenant string, scopes ...string) string {
	secret := fmt.Sprintf("cmk_test_%d", e.keys.n.Add(1))
	e.keys.keys.Store(secret, &authn.Principal{TenantID: tenant, Subject: "key-" + secret, Kind: authn.KindAPIKey, Permissions: scopes})
	return secret
}

// token returns an access token of a user with role in tenant.
func (e *env) token(t *testing.T, tenant string, role rbac.Role) string {
	return e.issuer.Token(t, tenant, role, string(role)+"@"+tenant)
}

var seq atomic.Int64

// contactIn makes, in tenant and directly through the domain, a contact with a unique email.
func (e *env) contactIn(t *testing.T, tenant string) delivery.Contact {
	t.Helper()
	c, err := e.aud.CreateContact(context.Background(), tenant, delivery.Contact{
		Email: fmt.Sprintf("p%d@example.com", seq.Add(1)), Attributes: map[string]string{"plan": "pro"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// segmentIn makes, in tenant and directly through the domain, a segment with a unique name.
func (e *env) segmentIn(t *testing.T, tenant string) delivery.Segment {
	t.Helper()
	s, err := e.aud.CreateSegment(context.Background(), tenant, delivery.Segment{
		Name:   fmt.Sprint("segment ", seq.Add(1)),
		Filter: delivery.Filter{Attributes: []delivery.AttributeCondition{{Key: "plan", Op: delivery.AttrEquals, Values: []string{"pro"}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newContact is a complete contact as a client sends it.
func newContact() *deliveryv1.Contact {
	n := seq.Add(1)
	return &deliveryv1.Contact{
		Email: fmt.Sprintf("New%d@Example.com", n), Phone: fmt.Sprintf("+49 30 1234 %04d", n), UserId: fmt.Sprint("u-", n),
		Attributes: map[string]string{"first_name": "Ann", "plan": "pro"}, TimeZone: "Europe/Berlin", Locale: "de-de",
		EmailConsent: &deliveryv1.Consent{State: deliveryv1.Consent_STATE_GRANTED, Source: "signup_form",
			Time: timestamppb.New(timestamppb.Now().AsTime().Add(-3600e9))},
	}
}

func newSegment() *deliveryv1.Segment {
	return &deliveryv1.Segment{Name: fmt.Sprint("segment ", seq.Add(1)), Filter: &deliveryv1.SegmentFilter{
		Attributes:     []*deliveryv1.AttributeCondition{{Key: "plan", Op: deliveryv1.AttributeCondition_OPERATOR_IN, Values: []string{"pro", "team"}}},
		ConsentGranted: []deliveryv1.Channel{deliveryv1.Channel_CHANNEL_EMAIL},
	}}
}

func lower(s string) string { return strings.ToLower(s) }
