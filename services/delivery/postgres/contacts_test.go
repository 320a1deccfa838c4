package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit/auditpb"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/postgres"
)

func openStore(t *testing.T) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func code(err error) apperr.Code {
	var de *apperr.Error
	if errors.As(err, &de) {
		return de.Code
	}
	return 0
}

func mustCreate(t *testing.T, a *delivery.Audiences, tenant string, c delivery.Contact) delivery.Contact {
	t.Helper()
	out, err := a.CreateContact(context.Background(), tenant, c)
	if err != nil {
		t.Fatalf("create %+v: %v", c, err)
	}
	return out
}

func count(t *testing.T, s *postgres.Store, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := s.Pool().QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestContactCRUDAndPaging(t *testing.T) {
	s := openStore(t)
	a := delivery.NewAudiences(s, nil)
	ctx := context.Background()
	granted := delivery.Consent{State: delivery.ConsentGranted, Source: "signup_form"}
	c := mustCreate(t, a, "t1", delivery.Contact{
		Email: " Ann.Lee@Example.com", Phone: "+33 6 12 34 56 78", UserID: "u-ann",
		Attributes: map[string]string{"first_name": "Ann", "plan": "pro"},
		TimeZone:   "Europe/Paris", Locale: "fr-fr", Consent: delivery.Consents{Email: granted},
	})
	if c.ID == "" || c.TenantID != "t1" || c.Email != "ann.lee@example.com" || c.Phone != "+33612345678" || c.Locale != "fr-FR" || c.Revision != 1 {
		t.Fatalf("created %+v", c)
	}
	if c.Consent.Email.State != delivery.ConsentGranted || c.Consent.Email.Source != "signup_form" || c.Consent.Email.Time.IsZero() {
		t.Errorf("email consent %+v: want granted with source and a time", c.Consent.Email)
	}
	if c.Consent.SMS.State != delivery.ConsentUnknown || !c.Consent.SMS.Time.IsZero() {
		t.Errorf("sms consent %+v: want unknown", c.Consent.SMS)
	}
	got, err := a.GetContact(ctx, "t1", c.ID)
	if err != nil || got.Attributes["plan"] != "pro" || got.TimeZone != "Europe/Paris" || !got.Consent.Email.Time.Equal(c.Consent.Email.Time) {
		t.Fatalf("get: %+v %v", got, err)
	}

	// Update by mask: only the named fields change; clearing the phone makes it NULL so another
	// contact may take it.
	up, err := a.UpdateContact(ctx, "t1", delivery.Contact{ID: c.ID, Phone: "", Attributes: map[string]string{"plan": "free"}, Email: "ignored@x.io"},
		[]delivery.ContactField{delivery.FieldPhone, delivery.FieldAttributes}, c.Revision)
	if err != nil || up.Phone != "" || up.Email != c.Email || up.Attributes["plan"] != "free" || up.Attributes["first_name"] != "" || up.Revision != 2 {
		t.Fatalf("update: %+v %v", up, err)
	}
	mustCreate(t, a, "t1", delivery.Contact{Phone: "+33612345678"})
	if _, err := a.UpdateContact(ctx, "t1", delivery.Contact{ID: c.ID, Locale: "de"}, []delivery.ContactField{delivery.FieldLocale}, 1); code(err) != apperr.Conflict {
		t.Errorf("stale revision: %v, want Conflict", err)
	}
	if _, err := a.UpdateContact(ctx, "t1", delivery.Contact{ID: c.ID}, []delivery.ContactField{delivery.FieldEmail, delivery.FieldUserID}, 0); code(err) != apperr.Invalid {
		t.Errorf("clearing every identifier: %v, want Invalid", err)
	}
	if _, err := a.UpdateContact(ctx, "t1", delivery.Contact{ID: c.ID, TimeZone: "Nowhere/Land"}, []delivery.ContactField{delivery.FieldTimeZone}, 0); code(err) != apperr.Invalid {
		t.Errorf("bad zone: %v, want Invalid", err)
	}
	if _, err := a.UpdateContact(ctx, "t1", delivery.Contact{ID: c.ID}, []delivery.ContactField{"suppressed"}, 0); code(err) != apperr.Invalid {
		t.Errorf("read-only field: %v, want Invalid", err)
	}

	// Paging: 23 more contacts, pages of 5, every contact exactly once, oldest first.
	for i := range 23 {
		mustCreate(t, a, "t1", delivery.Contact{UserID: fmt.Sprintf("u-%02d", i)})
	}
	var seen []string
	token := ""
	pages := 0
	for {
		page, next, err := a.ListContacts(ctx, "t1", 5, token)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, p := range page {
			seen = append(seen, p.ID)
		}
		if next == "" {
			break
		}
		token = next
	}
	if len(seen) != 25 || pages != 5 {
		t.Fatalf("listed %d contacts in %d pages, want 25 in 5", len(seen), pages)
	}
	uniq := map[string]bool{}
	for _, id := range seen {
		uniq[id] = true
	}
	if len(uniq) != 25 || seen[0] != c.ID {
		t.Errorf("listing has %d distinct contacts, first %s; want 25, first %s", len(uniq), seen[0], c.ID)
	}

	if err := a.DeleteContact(ctx, "t1", c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.GetContact(ctx, "t1", c.ID); code(err) != apperr.NotFound {
		t.Errorf("get after delete: %v, want NotFound", err)
	}
	if err := a.DeleteContact(ctx, "t1", c.ID); code(err) != apperr.NotFound {
		t.Errorf("second delete: %v, want NotFound", err)
	}
}

// Each of the three identifiers is unique within a tenant (case-insensitively for email),
// on create and on update; absent identifiers never collide; other tenants are free to use
// the same values.
func TestIdentifiersUniquePerTenant(t *testing.T) {
	s := openStore(t)
	a := delivery.NewAudiences(s, nil)
	ctx := context.Background()
	first := mustCreate(t, a, "t1", delivery.Contact{Email: "ann@example.com", Phone: "+14155550100", UserID: "u1"})
	for name, c := range map[string]delivery.Contact{
		"email":        {Email: "ANN@example.com"},
		"phone":        {Phone: "+1 415 555 0100"},
		"user_id":      {UserID: "u1"},
		"one of three": {Email: "new@example.com", Phone: "+14155550199", UserID: "u1"},
	} {
		if _, err := a.CreateContact(ctx, "t1", c); code(err) != apperr.AlreadyExists {
			t.Errorf("%s taken: %v, want AlreadyExists", name, err)
		}
	}
	// Contacts with only one identifier each: the missing ones are NULL, not "" duplicates.
	mustCreate(t, a, "t1", delivery.Contact{Email: "only-email@example.com"})
	mustCreate(t, a, "t1", delivery.Contact{Email: "only-email2@example.com"})
	second := mustCreate(t, a, "t1", delivery.Contact{Phone: "+14155550101"})
	mustCreate(t, a, "t1", delivery.Contact{UserID: "u2"})
	// Another tenant may hold the same values.
	mustCreate(t, a, "t2", delivery.Contact{Email: "ann@example.com", Phone: "+14155550100", UserID: "u1"})

	for name, tc := range map[string]struct {
		in   delivery.Contact
		mask delivery.ContactField
	}{
		"email":   {delivery.Contact{ID: second.ID, Email: "ann@example.com"}, delivery.FieldEmail},
		"phone":   {delivery.Contact{ID: second.ID, Phone: "+14155550100"}, delivery.FieldPhone},
		"user_id": {delivery.Contact{ID: second.ID, UserID: "u1"}, delivery.FieldUserID},
	} {
		if _, err := a.UpdateContact(ctx, "t1", tc.in, []delivery.ContactField{tc.mask}, 0); code(err) != apperr.AlreadyExists {
			t.Errorf("update to a taken %s: %v, want AlreadyExists", name, err)
		}
	}
	if got, _ := a.GetContact(ctx, "t1", first.ID); got.Revision != 1 {
		t.Errorf("first contact revision %d, want untouched", got.Revision)
	}
	if n := count(t, s, `SELECT count(*) FROM contacts WHERE tenant_id = 't1'`); n != 5 {
		t.Errorf("t1 has %d contacts, want 5", n)
	}
}

// Another tenant never sees, changes, exports, erases or evaluates a contact.
func TestTenantIsolation(t *testing.T) {
	s := openStore(t)
	a := delivery.NewAudiences(s, nil)
	ctx := context.Background()
	c := mustCreate(t, a, "t1", delivery.Contact{Email: "ann@example.com", UserID: "u1", Attributes: map[string]string{"plan": "pro"},
		Consent: delivery.Consents{Email: delivery.Consent{State: delivery.ConsentGranted, Source: "form"}}})
	if _, err := a.GetContact(ctx, "t2", c.ID); code(err) != apperr.NotFound {
		t.Errorf("get: %v", err)
	}
	if _, err := a.UpdateContact(ctx, "t2", delivery.Contact{ID: c.ID, Locale: "de"}, []delivery.ContactField{delivery.FieldLocale}, 0); code(err) != apperr.NotFound {
		t.Errorf("update: %v", err)
	}
	if _, err := a.SetConsent(ctx, "t2", c.ID, delivery.ChannelEmail, delivery.ConsentRevoked, "x"); code(err) != apperr.NotFound {
		t.Errorf("consent: %v", err)
	}
	if _, err := a.Suppress(ctx, "t2", c.ID, "bounce"); code(err) != apperr.NotFound {
		t.Errorf("suppress: %v", err)
	}
	if err := a.DeleteContact(ctx, "t2", c.ID); code(err) != apperr.NotFound {
		t.Errorf("delete: %v", err)
	}
	if cs, _, err := a.ListContacts(ctx, "t2", 100, ""); err != nil || len(cs) != 0 {
		t.Errorf("list: %d contacts, %v", len(cs), err)
	}
	ids := []delivery.Identifier{{Kind: delivery.IdentifierEmail, Value: "ann@example.com"}, {Kind: delivery.IdentifierUserID, Value: "u1"}}
	if cs, err := a.ExportContact(ctx, "t2", ids); err != nil || len(cs) != 0 {
		t.Errorf("export: %d contacts, %v", len(cs), err)
	}
	if erased, err := a.EraseContact(ctx, "t2", ids); err != nil || len(erased) != 0 {
		t.Errorf("erase: %v, %v", erased, err)
	}
	f := delivery.Filter{Attributes: []delivery.AttributeCondition{{Key: "plan", Op: delivery.AttrEquals, Values: []string{"pro"}}}}
	if n := evaluate(t, a, "t2", f); len(n) != 0 {
		t.Errorf("segment in t2 found %d contacts", len(n))
	}
	// An identify event of t2 with t1's identifiers makes t2's own contact.
	if r, err := a.Identify(ctx, "t2", delivery.ContactUpsert{UserID: "u1", Email: "ann@example.com"}); err != nil || r.Outcome != delivery.UpsertCreated {
		t.Errorf("identify in t2: %+v %v", r, err)
	}
	if got, err := a.GetContact(ctx, "t1", c.ID); err != nil || got.Revision != 1 || got.Consent.Email.State != delivery.ConsentGranted {
		t.Errorf("t1's contact after t2's calls: %+v %v", got, err)
	}
}

// Consent and suppression changes are audited in the transaction of the change, and drive
// eligibility at once.
func TestConsentAndSuppressionAudited(t *testing.T) {
	s := openStore(t)
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	a := delivery.NewAudiences(s, nil).WithClock(func() time.Time { return now })
	ctx := audit.WithWork(context.Background(), func() audit.Record {
		return audit.Record{Method: "test/Consent", Actor: "user:1", Outcome: codes.OK}
	})
	c := mustCreate(t, a, "t1", delivery.Contact{Email: "ann@example.com", Phone: "+14155550100"})
	if ok, why := delivery.Eligible(c, delivery.ChannelEmail); ok || why != delivery.SkipNoConsent {
		t.Errorf("new contact: %v %q, want no consent", ok, why)
	}
	c, err := a.SetConsent(ctx, "t1", c.ID, delivery.ChannelEmail, delivery.ConsentGranted, "double_opt_in")
	if err != nil || c.Consent.Email != (delivery.Consent{State: delivery.ConsentGranted, Source: "double_opt_in", Time: now}) {
		t.Fatalf("grant: %+v %v", c.Consent, err)
	}
	if ok, _ := delivery.Eligible(c, delivery.ChannelEmail); !ok {
		t.Error("granted contact not eligible for email")
	}
	if ok, why := delivery.Eligible(c, delivery.ChannelSMS); ok || why != delivery.SkipNoConsent {
		t.Errorf("sms without consent: %v %q", ok, why)
	}
	if c, err = a.Suppress(ctx, "t1", c.ID, "hard_bounce"); err != nil || !c.Suppressed || c.SuppressionReason != "hard_bounce" {
		t.Fatalf("suppress: %+v %v", c, err)
	}
	if ok, why := delivery.Eligible(c, delivery.ChannelEmail); ok || why != delivery.SkipSuppressed {
		t.Errorf("suppressed contact: %v %q", ok, why)
	}
	if c, err = a.Unsuppress(ctx, "t1", c.ID); err != nil || c.Suppressed {
		t.Fatalf("unsuppress: %+v %v", c, err)
	}
	now = now.Add(time.Hour)
	if c, err = a.SetConsent(ctx, "t1", c.ID, delivery.ChannelEmail, delivery.ConsentRevoked, "unsubscribe_link"); err != nil || c.Consent.Email.Time != now {
		t.Fatalf("revoke: %+v %v", c.Consent, err)
	}
	if ok, why := delivery.Eligible(c, delivery.ChannelEmail); ok || why != delivery.SkipNoConsent {
		t.Errorf("revoked: %v %q", ok, why)
	}
	if _, err := a.SetConsent(ctx, "t1", c.ID, "fax", delivery.ConsentGranted, "x"); code(err) != apperr.Invalid {
		t.Errorf("unknown channel: %v", err)
	}
	if _, err := a.SetConsent(ctx, "t1", c.ID, delivery.ChannelSMS, delivery.ConsentGranted, ""); code(err) != apperr.Invalid {
		t.Errorf("consent without source: %v", err)
	}

	recs := outbox(t, s)
	if len(recs) != 4 { // grant, suppress, unsuppress, revoke; the rejected calls write none
		t.Fatalf("outbox holds %d records, want 4: %+v", len(recs), recs)
	}
	for _, r := range recs {
		if r.Method != "test/Consent" || r.TenantID != "t1" || r.Resource != c.ID {
			t.Errorf("record %+v", r)
		}
	}
}

func outbox(t *testing.T, s *postgres.Store) []audit.Record {
	t.Helper()
	rows, err := s.Pool().Query(context.Background(), `SELECT record FROM audit_outbox ORDER BY create_time`)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (audit.Record, error) {
		var data []byte
		var p authv1.AuditRecord
		if err := row.Scan(&data); err != nil {
			return audit.Record{}, err
		}
		if err := proto.Unmarshal(data, &p); err != nil {
			return audit.Record{}, err
		}
		return auditpb.FromProto(&p), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// Identify upserts by any identifier: it creates, then merges into the same contact, and
// refuses identifiers that belong to two contacts.
func TestIdentify(t *testing.T) {
	s := openStore(t)
	a := delivery.NewAudiences(s, nil)
	ctx := context.Background()
	r1, err := a.Identify(ctx, "t1", delivery.ContactUpsert{UserID: "u1", Attributes: map[string]string{"plan": "free"}})
	if err != nil || r1.Outcome != delivery.UpsertCreated {
		t.Fatalf("first identify: %+v %v", r1, err)
	}
	r2, err := a.Identify(ctx, "t1", delivery.ContactUpsert{UserID: "u1", Email: "Ann@Example.com", Attributes: map[string]string{"city": "Paris"},
		Consent: delivery.Consents{Email: delivery.Consent{State: delivery.ConsentGranted, Source: "identify"}}})
	if err != nil || r2.Outcome != delivery.UpsertUpdated || r2.ID != r1.ID {
		t.Fatalf("second identify: %+v %v", r2, err)
	}
	// By email alone it finds the same contact; empty fields keep what is stored.
	r3, err := a.Identify(ctx, "t1", delivery.ContactUpsert{Email: "ann@example.com", TimeZone: "Europe/Paris"})
	if err != nil || r3.ID != r1.ID {
		t.Fatalf("identify by email: %+v %v", r3, err)
	}
	c, _ := a.GetContact(ctx, "t1", r1.ID)
	if c.UserID != "u1" || c.Email != "ann@example.com" || c.TimeZone != "Europe/Paris" || c.Attributes["plan"] != "free" || c.Attributes["city"] != "Paris" ||
		c.Consent.Email.State != delivery.ConsentGranted || c.Consent.Email.Source != "identify" || c.Consent.Email.Time.IsZero() || c.Revision != 3 {
		t.Errorf("merged contact %+v", c)
	}
	mustCreate(t, a, "t1", delivery.Contact{UserID: "u2"})
	if _, err := a.Identify(ctx, "t1", delivery.ContactUpsert{UserID: "u2", Email: "ann@example.com"}); code(err) != apperr.FailedPrecondition {
		t.Errorf("identifiers of two contacts: %v, want FailedPrecondition", err)
	}
	if _, err := a.Identify(ctx, "t1", delivery.ContactUpsert{Email: "not-an-email"}); code(err) != apperr.Invalid {
		t.Errorf("bad email: %v", err)
	}
}

// Erasure removes the contacts the identifiers name, with every personal field; export
// returns them first. Both are repeatable.
func TestExportAndErase(t *testing.T) {
	s := openStore(t)
	a := delivery.NewAudiences(s, nil)
	ctx := context.Background()
	ann := mustCreate(t, a, "t1", delivery.Contact{Email: "ann@example.com", UserID: "u-ann", Phone: "+14155550100",
		Attributes: map[string]string{"first_name": "Ann"}, TimeZone: "America/New_York"})
	bob := mustCreate(t, a, "t1", delivery.Contact{Phone: "+14155550111"})
	other := mustCreate(t, a, "t1", delivery.Contact{Email: "carol@example.com"})

	ids := []delivery.Identifier{{Kind: delivery.IdentifierEmail, Value: "ANN@example.com"}, {Kind: delivery.IdentifierPhone, Value: "+1 415 555 0111"}}
	got, err := a.ExportContact(ctx, "t1", ids)
	if err != nil || len(got) != 2 {
		t.Fatalf("export: %d contacts, %v", len(got), err)
	}
	for _, c := range got {
		if c.ID == ann.ID && (c.Attributes["first_name"] != "Ann" || c.TimeZone != "America/New_York" || c.UserID != "u-ann") {
			t.Errorf("exported %+v lacks fields", c)
		}
	}
	erased, err := a.EraseContact(ctx, "t1", ids)
	if err != nil || len(erased) != 2 {
		t.Fatalf("erase: %v %v", erased, err)
	}
	for _, id := range []string{ann.ID, bob.ID} {
		if _, err := a.GetContact(ctx, "t1", id); code(err) != apperr.NotFound {
			t.Errorf("erased contact %s: %v", id, err)
		}
	}
	for col, val := range map[string]string{"email": "ann@example.com", "user_id": "u-ann", "phone": "+14155550100"} {
		if n := count(t, s, `SELECT count(*) FROM contacts WHERE `+col+` = $1`, val); n != 0 {
			t.Errorf("%d rows still hold %s", n, col)
		}
	}
	if n := count(t, s, `SELECT count(*) FROM contacts WHERE attributes ? 'first_name'`); n != 0 {
		t.Errorf("%d rows still hold the erased attributes", n)
	}
	if again, err := a.EraseContact(ctx, "t1", ids); err != nil || len(again) != 0 {
		t.Errorf("second erase: %v %v", again, err)
	}
	if _, err := a.GetContact(ctx, "t1", other.ID); err != nil {
		t.Errorf("unnamed contact: %v", err)
	}
	if _, err := a.EraseContact(ctx, "t1", []delivery.Identifier{{Kind: "anonymous_id", Value: "x"}}); code(err) != apperr.Invalid {
		t.Errorf("unknown kind: %v", err)
	}
}

func asDomain(err error, target **apperr.Error) bool { return errors.As(err, target) }

// Concurrent upserts of the same new people (two imports, identify events) never collide on
// the unique indexes: each person ends up as exactly one contact, and no call fails.
func TestConcurrentUpsertsMakeOneContactEach(t *testing.T) {
	s := openStore(t)
	a := delivery.NewAudiences(s, nil)
	ctx := context.Background()
	const people, writers = 40, 4
	errs := make(chan error, writers*people)
	done := make(chan struct{})
	for w := range writers {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range people {
				// Writers name the same person by different identifiers first.
				u := delivery.ContactUpsert{Email: fmt.Sprintf("p%d@example.com", i)}
				if w%2 == 1 {
					u = delivery.ContactUpsert{Email: fmt.Sprintf("p%d@example.com", i), UserID: fmt.Sprintf("p%d", i)}
				}
				if _, err := a.Identify(ctx, "t1", u); err != nil {
					errs <- err
				}
			}
		}()
	}
	for range writers {
		<-done
	}
	close(errs)
	for err := range errs {
		t.Errorf("concurrent identify: %v", err)
	}
	if n := count(t, s, `SELECT count(*) FROM contacts WHERE tenant_id = 't1'`); n != people {
		t.Errorf("%d contacts, want %d", n, people)
	}
}
