package grpcapi_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/campaignmesh/campaignmesh/gateway"
	deliveryv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/delivery/v1"
	"github.com/campaignmesh/campaignmesh/internal/meshtest"
	"github.com/campaignmesh/campaignmesh/internal/servicetest"
)

func mask(paths ...string) *fieldmaskpb.FieldMask { return &fieldmaskpb.FieldMask{Paths: paths} }

// A contact's life through the API: created normalized with its consent stamped, read, updated
// by field mask under its etag (a stale etag is refused, a foreign one is not an etag), its
// consent changed with a source and the server's time, deleted.
func TestContactLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := meshtest.Bearer(context.Background(), e.apiKey("t1", contactsRead, contactsWrite))
	in := newContact()
	in.EmailConsent.Time = nil // stamped with now
	before := time.Now()
	c, err := e.client.CreateContact(ctx, &deliveryv1.CreateContactRequest{Contact: in})
	if err != nil {
		t.Fatal(err)
	}
	if c.GetEmail() != lower(in.GetEmail()) || !strings.HasPrefix(c.GetPhone(), "+4930") || c.GetLocale() != "de-DE" || c.GetEtag() != "r1" ||
		c.GetEmailConsent().GetState() != deliveryv1.Consent_STATE_GRANTED || c.GetEmailConsent().GetTime().AsTime().Before(before.Add(-time.Second)) ||
		c.GetSmsConsent().GetState() != deliveryv1.Consent_STATE_UNKNOWN || c.GetSmsConsent().GetTime() != nil {
		t.Fatalf("created %v", c)
	}
	got, err := e.client.GetContact(ctx, &deliveryv1.GetContactRequest{Id: c.GetId()})
	if err != nil || !proto.Equal(got, c) {
		t.Fatalf("get %v %v, want %v", got, err, c)
	}

	upd, err := e.client.UpdateContact(ctx, &deliveryv1.UpdateContactRequest{
		Contact: &deliveryv1.Contact{Id: c.GetId(), Etag: c.GetEtag(), TimeZone: "America/New_York", Email: "ignored@example.com"}, UpdateMask: mask("time_zone")})
	if err != nil || upd.GetTimeZone() != "America/New_York" || upd.GetEmail() != c.GetEmail() || upd.GetEtag() != "r2" {
		t.Fatalf("update: %v %v", upd, err)
	}
	_, err = e.client.UpdateContact(ctx, &deliveryv1.UpdateContactRequest{
		Contact: &deliveryv1.Contact{Id: c.GetId(), Etag: c.GetEtag(), Locale: "en"}, UpdateMask: mask("locale")})
	if status.Code(err) != codes.Aborted {
		t.Errorf("update with a stale etag: %v, want ABORTED", err)
	}
	for _, bad := range []*deliveryv1.UpdateContactRequest{
		{Contact: &deliveryv1.Contact{Id: c.GetId(), Etag: "W/\"x\"", Locale: "en"}, UpdateMask: mask("locale")},
		{Contact: &deliveryv1.Contact{Id: c.GetId(), Locale: "en"}},
		{Contact: &deliveryv1.Contact{Id: c.GetId(), Suppressed: true}, UpdateMask: mask("email_consent")},
		{Contact: &deliveryv1.Contact{Id: c.GetId()}, UpdateMask: mask("id", "etag")},
		{Contact: &deliveryv1.Contact{Id: c.GetId(), Email: "not an address"}, UpdateMask: mask("email")},
	} {
		if _, err := e.client.UpdateContact(ctx, bad); status.Code(err) != codes.InvalidArgument {
			t.Errorf("update %v: %v, want INVALID_ARGUMENT", bad, err)
		}
	}

	set, err := e.client.SetContactConsent(ctx, &deliveryv1.SetContactConsentRequest{Id: c.GetId(), Channel: deliveryv1.Channel_CHANNEL_EMAIL,
		State: deliveryv1.Consent_STATE_REVOKED, Source: "support_ticket"})
	if err != nil || set.GetEmailConsent().GetState() != deliveryv1.Consent_STATE_REVOKED || set.GetEmailConsent().GetSource() != "support_ticket" ||
		set.GetEmailConsent().GetTime() == nil || set.GetEtag() != "r3" {
		t.Fatalf("set consent: %v %v", set, err)
	}
	for _, bad := range []*deliveryv1.SetContactConsentRequest{
		{Id: c.GetId(), State: deliveryv1.Consent_STATE_GRANTED, Source: "form"},                                             // no channel
		{Id: c.GetId(), Channel: deliveryv1.Channel_CHANNEL_SMS, State: deliveryv1.Consent_STATE_GRANTED},                    // no source
		{Id: c.GetId(), Channel: deliveryv1.Channel(99), State: deliveryv1.Consent_STATE_GRANTED, Source: "form"},            // unknown channel
		{Id: c.GetId(), Channel: deliveryv1.Channel_CHANNEL_SMS, State: deliveryv1.Consent_State(99), Source: "form"},        // unknown state
		{Id: "not-a-uuid", Channel: deliveryv1.Channel_CHANNEL_SMS, State: deliveryv1.Consent_STATE_GRANTED, Source: "form"}, // bad id
	} {
		if _, err := e.client.SetContactConsent(ctx, bad); status.Code(err) != codes.InvalidArgument {
			t.Errorf("set consent %v: %v, want INVALID_ARGUMENT", bad, err)
		}
	}

	// The same address twice is one person: ALREADY_EXISTS, whatever its case.
	dup := newContact()
	dup.Email = strings.ToUpper(c.GetEmail())
	if _, err := e.client.CreateContact(ctx, &deliveryv1.CreateContactRequest{Contact: dup}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("a second contact with the same email: %v, want ALREADY_EXISTS", err)
	}

	if _, err := e.client.DeleteContact(ctx, &deliveryv1.DeleteContactRequest{Id: c.GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.GetContact(ctx, &deliveryv1.GetContactRequest{Id: c.GetId()}); status.Code(err) != codes.NotFound {
		t.Errorf("get a deleted contact: %v, want NOT_FOUND", err)
	}
	if _, err := e.client.DeleteContact(ctx, &deliveryv1.DeleteContactRequest{Id: c.GetId()}); status.Code(err) != codes.NotFound {
		t.Errorf("delete a deleted contact: %v, want NOT_FOUND", err)
	}
}

// Pages of contacts and of segments: every item once, in order, whatever the page size; a
// token the list did not return is refused.
func TestListsPage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := meshtest.Bearer(context.Background(), e.apiKey("t1", contactsRead))
	var contacts, segments []string
	for i := 0; i < 7; i++ {
		contacts = append(contacts, e.contactIn(t, "t1").ID)
		segments = append(segments, e.segmentIn(t, "t1").ID)
	}
	for _, size := range []int32{1, 3, 7, 0} {
		var got []string
		token := ""
		for pages := 0; ; pages++ {
			resp, err := e.client.ListContacts(ctx, &deliveryv1.ListContactsRequest{PageSize: size, PageToken: token})
			if err != nil || pages > 10 {
				t.Fatalf("page %d of %d: %v", pages, size, err)
			}
			for _, c := range resp.GetContacts() {
				got = append(got, c.GetId())
			}
			if token = resp.GetNextPageToken(); token == "" {
				break
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(contacts) {
			t.Errorf("contacts by %d: %v, want %v", size, got, contacts)
		}
		got, token = nil, ""
		for pages := 0; ; pages++ {
			resp, err := e.client.ListSegments(ctx, &deliveryv1.ListSegmentsRequest{PageSize: size, PageToken: token})
			if err != nil || pages > 10 || (size > 0 && len(resp.GetSegments()) > int(size)) {
				t.Fatalf("segment page %d of %d: %v %v", pages, size, resp, err)
			}
			for _, s := range resp.GetSegments() {
				got = append(got, s.GetId())
			}
			if token = resp.GetNextPageToken(); token == "" {
				break
			}
		}
		if len(got) != len(segments) || !sameSet(got, segments) {
			t.Errorf("segments by %d: %v, want %v", size, got, segments)
		}
	}
	for _, token := range []string{"nonsense", "eyJ0IjoiMjAyNiJ9"} {
		if _, err := e.client.ListContacts(ctx, &deliveryv1.ListContactsRequest{PageToken: token}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("contacts with token %q: %v, want INVALID_ARGUMENT", token, err)
		}
		if _, err := e.client.ListSegments(ctx, &deliveryv1.ListSegmentsRequest{PageToken: token}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("segments with token %q: %v, want INVALID_ARGUMENT", token, err)
		}
	}
	if _, err := e.client.ListSegments(ctx, &deliveryv1.ListSegmentsRequest{PageSize: -1}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a negative page size: %v, want INVALID_ARGUMENT", err)
	}
}

func sameSet(a, b []string) bool {
	seen := map[string]int{}
	for _, x := range a {
		seen[x]++
	}
	for _, x := range b {
		if seen[x] != 1 {
			return false
		}
		delete(seen, x)
	}
	return len(seen) == 0
}

// A segment's life: created with its filter, read back the same, renamed by a mask that keeps
// its filter, refiltered by a mask that keeps its name, deleted; invalid filters are reported.
func TestSegmentLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := meshtest.Bearer(context.Background(), e.apiKey("t1", contactsRead, contactsWrite))
	in := newSegment()
	in.Filter.Behaviour = &deliveryv1.BehaviourCondition{EventType: "click", WithinDays: 30}
	s, err := e.client.CreateSegment(ctx, &deliveryv1.CreateSegmentRequest{Segment: in})
	if err != nil || s.GetId() == "" || s.GetName() != in.GetName() || !proto.Equal(s.GetFilter(), in.GetFilter()) || s.GetCreateTime() == nil {
		t.Fatalf("create: %v %v", s, err)
	}
	if got, err := e.client.GetSegment(ctx, &deliveryv1.GetSegmentRequest{Id: s.GetId()}); err != nil || !proto.Equal(got, s) {
		t.Fatalf("get: %v %v, want %v", got, err, s)
	}
	renamed, err := e.client.UpdateSegment(ctx, &deliveryv1.UpdateSegmentRequest{Segment: &deliveryv1.Segment{Id: s.GetId(), Name: "renamed"}, UpdateMask: mask("name")})
	if err != nil || renamed.GetName() != "renamed" || !proto.Equal(renamed.GetFilter(), s.GetFilter()) {
		t.Fatalf("rename: %v %v", renamed, err)
	}
	f := &deliveryv1.SegmentFilter{Attributes: []*deliveryv1.AttributeCondition{{Key: "city", Op: deliveryv1.AttributeCondition_OPERATOR_EXISTS}}}
	refiltered, err := e.client.UpdateSegment(ctx, &deliveryv1.UpdateSegmentRequest{Segment: &deliveryv1.Segment{Id: s.GetId(), Filter: f}, UpdateMask: mask("filter")})
	if err != nil || refiltered.GetName() != "renamed" || !proto.Equal(refiltered.GetFilter(), f) {
		t.Fatalf("refilter: %v %v", refiltered, err)
	}
	for _, bad := range []*deliveryv1.Segment{
		{Name: ""},
		{Name: "x", Filter: &deliveryv1.SegmentFilter{Attributes: []*deliveryv1.AttributeCondition{{Key: "Bad Key", Op: deliveryv1.AttributeCondition_OPERATOR_EQUALS, Values: []string{"v"}}}}},
		{Name: "x", Filter: &deliveryv1.SegmentFilter{Attributes: []*deliveryv1.AttributeCondition{{Key: "k", Values: []string{"v"}}}}},
		{Name: "x", Filter: &deliveryv1.SegmentFilter{ConsentGranted: []deliveryv1.Channel{deliveryv1.Channel_CHANNEL_UNSPECIFIED}}},
		{Name: "x", Filter: &deliveryv1.SegmentFilter{Behaviour: &deliveryv1.BehaviourCondition{EventType: "click", WithinDays: 0}}},
	} {
		if _, err := e.client.CreateSegment(ctx, &deliveryv1.CreateSegmentRequest{Segment: bad}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("create %v: %v, want INVALID_ARGUMENT", bad, err)
		}
	}
	if _, err := e.client.UpdateSegment(ctx, &deliveryv1.UpdateSegmentRequest{Segment: &deliveryv1.Segment{Id: s.GetId(), Name: "y"}, UpdateMask: mask("create_time")}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("update naming only an output-only field: %v, want INVALID_ARGUMENT", err)
	}
	if _, err := e.client.DeleteSegment(ctx, &deliveryv1.DeleteSegmentRequest{Id: s.GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.GetSegment(ctx, &deliveryv1.GetSegmentRequest{Id: s.GetId()}); status.Code(err) != codes.NotFound {
		t.Errorf("get a deleted segment: %v, want NOT_FOUND", err)
	}
}

// Over REST a PATCH infers its mask from the body (the id, the etag, the map's keys and the
// filter's nested fields included): the update changes what the body holds and nothing else.
func TestRESTPatchInfersTheMask(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	key := e.apiKey("t1", contactsRead, contactsWrite)
	rest := servicetest.NewREST(t, serviceDesc, gateway.Backend{Package: "campaignmesh.delivery.v1", Conn: e.conn,
		RegisterREST: deliveryv1.RegisterDeliveryServiceHandler})
	c := e.contactIn(t, "t1")
	code, body := rest.Do("UpdateContact", &deliveryv1.UpdateContactRequest{Contact: &deliveryv1.Contact{Id: c.ID, Etag: "r1",
		Attributes: map[string]string{"city": "Berlin"}}}, key)
	var got deliveryv1.Contact
	if code != http.StatusOK || protojson.Unmarshal(body, &got) != nil || got.GetAttributes()["city"] != "Berlin" || len(got.GetAttributes()) != 1 || got.GetEmail() != c.Email {
		t.Fatalf("PATCH contact: %d %s", code, body)
	}
	s := e.segmentIn(t, "t1")
	f := newSegment().GetFilter()
	code, body = rest.Do("UpdateSegment", &deliveryv1.UpdateSegmentRequest{Segment: &deliveryv1.Segment{Id: s.ID, Filter: f}}, key)
	var seg deliveryv1.Segment
	if code != http.StatusOK || protojson.Unmarshal(body, &seg) != nil || seg.GetName() != s.Name || !proto.Equal(seg.GetFilter(), f) {
		t.Fatalf("PATCH segment: %d %s", code, body)
	}
}

// Every change is audited once through the service's outbox (auth is unreachable here, so the
// records stay in it); reads are not audited.
func TestChangesAreAudited(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := meshtest.Bearer(context.Background(), e.apiKey("t1", contactsRead, contactsWrite))
	pending := func() int {
		n, err := e.d.Outbox().Pending(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	calls := []struct {
		name    string
		audited bool
		call    func() error
	}{
		{"CreateContact", true, func() error {
			_, err := e.client.CreateContact(ctx, &deliveryv1.CreateContactRequest{Contact: newContact()})
			return err
		}},
		{"GetContact", false, func() error {
			_, err := e.client.GetContact(ctx, &deliveryv1.GetContactRequest{Id: e.contactIn(t, "t1").ID})
			return err
		}},
		{"UpdateContact", true, func() error {
			_, err := e.client.UpdateContact(ctx, &deliveryv1.UpdateContactRequest{Contact: &deliveryv1.Contact{Id: e.contactIn(t, "t1").ID}, UpdateMask: mask("locale")})
			return err
		}},
		{"SetContactConsent", true, func() error {
			_, err := e.client.SetContactConsent(ctx, &deliveryv1.SetContactConsentRequest{Id: e.contactIn(t, "t1").ID, Channel: deliveryv1.Channel_CHANNEL_EMAIL,
				State: deliveryv1.Consent_STATE_GRANTED, Source: "form"})
			return err
		}},
		{"DeleteContact", true, func() error {
			_, err := e.client.DeleteContact(ctx, &deliveryv1.DeleteContactRequest{Id: e.contactIn(t, "t1").ID})
			return err
		}},
		{"CreateSegment", true, func() error {
			_, err := e.client.CreateSegment(ctx, &deliveryv1.CreateSegmentRequest{Segment: newSegment()})
			return err
		}},
		{"ListSegments", false, func() error {
			_, err := e.client.ListSegments(ctx, &deliveryv1.ListSegmentsRequest{})
			return err
		}},
		{"UpdateSegment", true, func() error {
			_, err := e.client.UpdateSegment(ctx, &deliveryv1.UpdateSegmentRequest{Segment: &deliveryv1.Segment{Id: e.segmentIn(t, "t1").ID, Name: newSegment().GetName()}, UpdateMask: mask("name")})
			return err
		}},
		{"DeleteSegment", true, func() error {
			_, err := e.client.DeleteSegment(ctx, &deliveryv1.DeleteSegmentRequest{Id: e.segmentIn(t, "t1").ID})
			return err
		}},
	}
	for _, c := range calls {
		// Seeding through the domain writes no record (no audited call in its context).
		before := pending()
		if err := c.call(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		want := before
		if c.audited {
			want++
		}
		if got := pending(); got != want {
			t.Errorf("%s: %d records in the outbox, want %d", c.name, got, want)
		}
	}
}

// Creates are idempotent by request_id per tenant: a retry returns the first result and
// creates nothing more; the same id with another request is refused; another tenant's same id
// is its own.
func TestCreateIsIdempotentByRequestID(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := meshtest.Bearer(context.Background(), e.apiKey("t1", contactsRead, contactsWrite))
	other := meshtest.Bearer(context.Background(), e.apiKey("t2", contactsRead, contactsWrite))
	req := &deliveryv1.CreateContactRequest{Contact: newContact(), RequestId: "req-1"}
	first, err := e.client.CreateContact(m, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.client.CreateContact(m, req)
	if err != nil || again.GetId() != first.GetId() {
		t.Fatalf("retry = %v, %v; want the first result %s", again, err, first.GetId())
	}
	if list, err := e.client.ListContacts(m, &deliveryv1.ListContactsRequest{}); err != nil || len(list.GetContacts()) != 1 {
		t.Fatalf("contacts after a retried create: %d (%v), want 1", len(list.GetContacts()), err)
	}
	if _, err := e.client.CreateContact(m, &deliveryv1.CreateContactRequest{Contact: newContact(), RequestId: "req-1"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("same request id, different contact: %v, want INVALID_ARGUMENT", err)
	}
	if c, err := e.client.CreateContact(other, req); err != nil || c.GetId() == first.GetId() {
		t.Fatalf("the same request id in another tenant: %v, %v; want a contact of its own", c, err)
	}
	sreq := &deliveryv1.CreateSegmentRequest{Segment: newSegment(), RequestId: "req-1"}
	s1, err := e.client.CreateSegment(m, sreq)
	if err != nil {
		t.Fatal(err)
	}
	if s2, err := e.client.CreateSegment(m, sreq); err != nil || s2.GetId() != s1.GetId() {
		t.Fatalf("segment retry = %v, %v; want the first result %s", s2, err, s1.GetId())
	}
}
