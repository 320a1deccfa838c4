package grpcapi_test

import (
	"context"
	"io"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	dsrv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/dsr/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/postgres"
)

const campaignA, campaignB = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"

// export collects an ExportSubject stream by record type.
func export(t *testing.T, p dsrv1.ParticipantServiceClient, tenant string, ids ...*dsrv1.Identifier) map[string][]map[string]any {
	t.Helper()
	stream, err := p.ExportSubject(context.Background(), &dsrv1.ExportSubjectRequest{TenantId: tenant, DsrRequest: "dsr_export", Identifiers: ids})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]map[string]any{}
	for {
		r, err := stream.Recv()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[r.GetType()] = append(out[r.GetType()], r.GetData().AsMap())
	}
}

// delivery is a dsr participant: it resolves, exports and erases a subject's contacts and their
// ledger rows' personal field, verifies that nothing is left, and answers only dsr.
func TestParticipant(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	bg := context.Background()
	dsrConn := servicetest.Dial(t, e.d.Addr(), e.d.CA, "dsr", "delivery")
	p := dsrv1.NewParticipantServiceClient(dsrConn)

	ann, err := e.aud.CreateContact(bg, "t1", delivery.Contact{UserID: "user-ann", Email: "ann@example.com", Phone: "+14155550100",
		Attributes: map[string]string{"first_name": "Ann"}})
	if err != nil {
		t.Fatal(err)
	}
	bob, err := e.aud.CreateContact(bg, "t1", delivery.Contact{Email: "bob@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := e.aud.CreateContact(bg, "t2", delivery.Contact{UserID: "user-ann", Email: "ann@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	pool := e.d.Store().Pool()
	ledger := postgres.NewLedger(pool)
	variants := []delivery.Variant{{Name: "a", Weight: 1}}
	for _, c := range []struct {
		tenant, campaign string
		contact          delivery.Contact
	}{{"t1", campaignA, ann}, {"t1", campaignB, ann}, {"t1", campaignA, bob}, {"t2", campaignA, other}} {
		if _, err := ledger.AddRecipients(bg, c.tenant, c.campaign, variants, []delivery.NewRecipient{{ContactID: c.contact.ID, Address: c.contact.Email}}); err != nil {
			t.Fatal(err)
		}
	}
	// Ann's message of campaign A was sent; campaign B's is in flight (a sender holds it).
	if _, err := pool.Exec(bg, `UPDATE ledger SET state = 'sent', provider_id = 'msg-1' WHERE contact_id = $1 AND campaign_id = $2`, ann.ID, campaignA); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(bg, `UPDATE ledger SET state = 'sending', lease_owner = 'sender-1', lease_expiry = now() + interval '1 minute', attempt = 1
		WHERE contact_id = $1 AND campaign_id = $2`, ann.ID, campaignB); err != nil {
		t.Fatal(err)
	}

	byEmail := &dsrv1.Identifier{Kind: dsrv1.Identifier_KIND_EMAIL, Value: "ANN@example.com"}
	res, err := p.ResolveSubject(bg, &dsrv1.ResolveSubjectRequest{TenantId: "t1", DsrRequest: "dsr_1", Identifiers: []*dsrv1.Identifier{byEmail}})
	if err != nil || len(res.GetLinked()) != 1 || res.GetLinked()[0].GetKind() != dsrv1.Identifier_KIND_USER_ID || res.GetLinked()[0].GetValue() != "user-ann" {
		t.Fatalf("resolve: %v %v; want the contact's user id", res, err)
	}

	recs := export(t, p, "t1", byEmail, &dsrv1.Identifier{Kind: dsrv1.Identifier_KIND_ANONYMOUS_ID, Value: "anon-1"})
	if len(recs["contact"]) != 1 || recs["contact"][0]["phone"] != "+14155550100" || len(recs["delivery"]) != 2 {
		t.Fatalf("export: %v", recs)
	}
	for _, d := range recs["delivery"] {
		if d["address"] != "ann@example.com" || d["contact_id"] != ann.ID {
			t.Errorf("exported delivery %v", d)
		}
	}

	erase := &dsrv1.StartErasureRequest{TenantId: "t1", DsrRequest: "dsr_2", Identifiers: []*dsrv1.Identifier{{Kind: dsrv1.Identifier_KIND_USER_ID, Value: "user-ann"}}}
	st, err := p.StartErasure(bg, erase)
	if err != nil {
		t.Fatal(err)
	}
	// The row in flight keeps its address until it settles: not done yet.
	if st.GetDone() || st.GetRemaining() != 1 || st.GetCounts()["contacts"] != 1 || st.GetCounts()["deliveries"] != 1 {
		t.Fatalf("start erasure: %v", st)
	}
	if _, err := e.aud.GetContact(bg, "t1", ann.ID); !apperr.HasCode(err, apperr.NotFound) {
		t.Errorf("ann after erasure: %v", err)
	}
	if _, err := pool.Exec(bg, `UPDATE ledger SET state = 'sent', lease_owner = '', lease_expiry = NULL WHERE contact_id = $1 AND campaign_id = $2`, ann.ID, campaignB); err != nil {
		t.Fatal(err)
	}
	st, err = p.GetErasure(bg, &dsrv1.GetErasureRequest{TenantId: "t1", DsrRequest: "dsr_2"})
	if err != nil || !st.GetDone() || st.GetRemaining() != 0 || st.GetCounts()["deliveries"] != 2 {
		t.Fatalf("get erasure: %v %v", st, err)
	}
	// Verified by hand too: no contact, no address of Ann's rows; Bob's row and the other
	// tenant's Ann are untouched.
	var left, bobs, theirs int
	if err := pool.QueryRow(bg, `SELECT
			(SELECT count(*) FROM contacts WHERE tenant_id = 't1' AND (email = 'ann@example.com' OR user_id = 'user-ann')),
			(SELECT count(*) FROM ledger WHERE contact_id = $1 AND address = 'bob@example.com'),
			(SELECT count(*) FROM ledger WHERE tenant_id = 't2' AND address = 'ann@example.com')
			+ (SELECT count(*) FROM contacts WHERE tenant_id = 't2')`, bob.ID).Scan(&left, &bobs, &theirs); err != nil {
		t.Fatal(err)
	}
	if left != 0 || bobs != 1 || theirs != 2 {
		t.Errorf("after erasure: %d of ann left, %d of bob's rows, %d of the other tenant's", left, bobs, theirs)
	}
	if n := len(export(t, p, "t1", byEmail)); n != 0 {
		t.Errorf("export after erasure: %d kinds of records", n)
	}
	// Repeating it is harmless and still done.
	if st, err := p.StartErasure(bg, erase); err != nil || !st.GetDone() || st.GetCounts()["contacts"] != 1 {
		t.Errorf("repeated erasure: %v %v", st, err)
	}
	if _, err := p.GetErasure(bg, &dsrv1.GetErasureRequest{TenantId: "t1", DsrRequest: "dsr_never"}); status.Code(err) != codes.NotFound {
		t.Errorf("unknown erasure: %v, want NOT_FOUND", err)
	}
	// A pending row of an erased contact will never be sent: it is skipped.
	if _, err := ledger.AddRecipients(bg, "t1", campaignB, variants, []delivery.NewRecipient{{ContactID: bob.ID, Address: bob.Email}}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.StartErasure(bg, &dsrv1.StartErasureRequest{TenantId: "t1", DsrRequest: "dsr_3", Identifiers: []*dsrv1.Identifier{{Kind: dsrv1.Identifier_KIND_EMAIL, Value: "bob@example.com"}}}); err != nil {
		t.Fatal(err)
	}
	var skipped int
	if err := pool.QueryRow(bg, `SELECT count(*) FROM ledger WHERE contact_id = $1 AND state = 'skipped' AND reason = 'erased' AND address = ''`, bob.ID).Scan(&skipped); err != nil || skipped != 2 {
		t.Errorf("bob's pending rows after erasure: %d skipped (%v), want 2", skipped, err)
	}
}

// ParticipantService answers dsr only: the gateway's identity (and any other) is refused.
func TestParticipantCallers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, id := range []string{"gateway", "analytics", "campaigns"} {
		p := dsrv1.NewParticipantServiceClient(servicetest.Dial(t, e.d.Addr(), e.d.CA, id, "delivery"))
		calls := map[string]func() error{
			"ResolveSubject": func() error {
				_, err := p.ResolveSubject(context.Background(), &dsrv1.ResolveSubjectRequest{TenantId: "t1", DsrRequest: "r"})
				return err
			},
			"ExportSubject": func() error {
				s, err := p.ExportSubject(context.Background(), &dsrv1.ExportSubjectRequest{TenantId: "t1", DsrRequest: "r"})
				if err == nil {
					_, err = s.Recv()
				}
				return err
			},
			"StartErasure": func() error {
				_, err := p.StartErasure(context.Background(), &dsrv1.StartErasureRequest{TenantId: "t1", DsrRequest: "r"})
				return err
			},
			"GetErasure": func() error {
				_, err := p.GetErasure(context.Background(), &dsrv1.GetErasureRequest{TenantId: "t1", DsrRequest: "r"})
				return err
			},
		}
		for name, call := range calls {
			if err := call(); status.Code(err) != codes.PermissionDenied {
				t.Errorf("%s as %s: %v, want PERMISSION_DENIED", name, id, err)
			}
		}
	}
}
