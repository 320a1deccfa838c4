package delivery_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit/auditpb"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgtest"
	"github.com/campaignmesh/campaignmesh/services/delivery"
	"github.com/campaignmesh/campaignmesh/services/delivery/postgres"
)

// fixedPricing prices every campaign alike.
type fixedPricing struct{ message, click delivery.Money }

func (p fixedPricing) Costs(context.Context, string, string) (delivery.Money, delivery.Money, error) {
	return p.message, p.click, nil
}

// recordingSink keeps what was published, per tenant, and can be made to fail.
type recordingSink struct {
	mu     sync.Mutex
	fail   error
	calls  int
	events map[string][]delivery.Event
}

func (s *recordingSink) Publish(_ context.Context, tenantID string, evs []delivery.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.fail != nil {
		return s.fail
	}
	if s.events == nil {
		s.events = map[string][]delivery.Event{}
	}
	s.events[tenantID] = append(s.events[tenantID], evs...)
	return nil
}

// unique returns the tenant's events with ingest's dedup applied (one per id).
func (s *recordingSink) unique(tenantID string) []delivery.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	var out []delivery.Event
	for _, e := range s.events[tenantID] {
		if !seen[e.ID] {
			seen[e.ID] = true
			out = append(out, e)
		}
	}
	return out
}

var (
	messageCost = delivery.Money{Micros: 1500, Currency: "USD"}
	clickCost   = delivery.Money{Micros: 250000, Currency: "USD"}
)

// trackRig is a tracker over a real database with one contact in one campaign's ledger.
type trackRig struct {
	store    *postgres.Store
	tracking *postgres.Tracking
	aud      *delivery.Audiences
	sink     *recordingSink
	tracker  *delivery.Tracker
	links    delivery.TrackingLinks
	contact  delivery.Contact
	ref      string
	variant  string
}

const (
	trackTenant   = "tenant-t"
	trackCampaign = "campaign-t"
)

func newTrackRig(t *testing.T) *trackRig {
	t.Helper()
	ctx := context.Background()
	store, err := postgres.Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	r := &trackRig{store: store, tracking: postgres.NewTracking(store.Pool()), aud: delivery.NewAudiences(store, nil), sink: &recordingSink{}}
	r.tracker = delivery.NewTracker(testKey, r.tracking, r.aud, fixedPricing{messageCost, clickCost}, r.sink, nil)
	r.links = delivery.TrackingLinks{BaseURL: "https://gw.example", Key: testKey}
	granted := delivery.Consent{State: delivery.ConsentGranted, Source: "form"}
	r.contact, err = r.aud.CreateContact(ctx, trackTenant, delivery.Contact{Email: "ann@example.com", Phone: "+14155550100",
		Consent: delivery.Consents{Email: granted, SMS: granted}})
	if err != nil {
		t.Fatal(err)
	}
	r.ref, r.variant = r.addRecipient(t, trackTenant, trackCampaign, r.contact.ID, "ann@example.com")
	return r
}

// addRecipient adds a contact to a campaign's ledger and returns its row's id and variant.
func (r *trackRig) addRecipient(t *testing.T, tenant, campaign, contactID, address string) (string, string) {
	t.Helper()
	ctx := context.Background()
	if _, err := postgres.NewLedger(r.store.Pool()).AddRecipients(ctx, tenant, campaign,
		[]delivery.Variant{{Name: "a", Weight: 1}, {Name: "b", Weight: 1}}, []delivery.NewRecipient{{ContactID: contactID, Address: address}}); err != nil {
		t.Fatal(err)
	}
	var id int64
	var variant string
	if err := r.store.Pool().QueryRow(ctx, `SELECT id, variant FROM ledger WHERE tenant_id = $1 AND campaign_id = $2 AND contact_id = $3`,
		tenant, campaign, contactID).Scan(&id, &variant); err != nil {
		t.Fatal(err)
	}
	return strconv.FormatInt(id, 10), variant
}

func (r *trackRig) contactNow(t *testing.T) delivery.Contact {
	t.Helper()
	c, err := r.aud.GetContact(context.Background(), trackTenant, r.contact.ID)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// auditRecords returns the audit records the store wrote, oldest first.
func (r *trackRig) auditRecords(t *testing.T) []audit.Record {
	t.Helper()
	rows, err := r.store.Pool().Query(context.Background(), `SELECT record FROM audit_outbox ORDER BY create_time`)
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

// A click on a tracked link is a click event for the row's campaign, variant and contact,
// worth the click cost, and redirects to the link.
func TestClickBecomesAPricedClickEvent(t *testing.T) {
	r := newTrackRig(t)
	ctx := context.Background()
	link := r.links.Click(r.ref, "https://shop.example.com/sale?email=ann%40example.com#top")
	out, err := r.tracker.Click(ctx, tokenOf(t, link, "https://gw.example/t/c/", ""), "Mozilla/5.0", "198.51.100.7")
	if err != nil || out != (delivery.ClickOutcome{Target: "https://shop.example.com/sale?email=ann%40example.com#top", Recorded: true}) {
		t.Fatalf("click: %+v %v", out, err)
	}
	evs := r.sink.unique(trackTenant)
	if len(evs) != 1 {
		t.Fatalf("events %+v, want one click", evs)
	}
	e := evs[0]
	if e.Type != delivery.EventClick || e.CampaignID != trackCampaign || e.Variant != r.variant || e.UserID != r.contact.ID ||
		e.Value != clickCost || e.Properties["url"] != "https://shop.example.com/sale" || e.IP != "198.51.100.7" || e.ID == "" {
		t.Errorf("click event %+v", e)
	}
	// A second click is a second event.
	if _, err := r.tracker.Click(ctx, tokenOf(t, link, "https://gw.example/t/c/", ""), "", ""); err != nil || len(r.sink.unique(trackTenant)) != 2 {
		t.Errorf("second click: %v, %d events", err, len(r.sink.unique(trackTenant)))
	}
	// The pipeline down: the link still redirects, unrecorded.
	r.sink.fail = errors.New("ingest unavailable")
	if out, err := r.tracker.Click(ctx, tokenOf(t, link, "https://gw.example/t/c/", ""), "", ""); err != nil || out.Recorded || out.Target == "" {
		t.Errorf("click with the pipeline down: %+v %v", out, err)
	}
}

// Forged and altered click, open and unsubscribe tokens, and tokens of a row that does not
// exist, are all NotFound, with nothing published.
func TestForgedLinksRefused(t *testing.T) {
	r := newTrackRig(t)
	ctx := context.Background()
	other := delivery.TrackingKey{Current: []byte("another key of thirty-two bytes!")}
	good := tokenOf(t, r.links.Click(r.ref, "https://shop.example.com/"), "https://gw.example/t/c/", "")
	altered := []byte(good)
	altered[5] ^= 0x02
	for name, tok := range map[string]string{
		"forged":     other.Sign(delivery.TokenClick, r.ref, "https://evil.example/"),
		"altered":    string(altered),
		"no row":     testKey.Sign(delivery.TokenClick, "999999", "https://shop.example.com/"),
		"not an id":  testKey.Sign(delivery.TokenClick, "abc", "https://shop.example.com/"),
		"open token": testKey.Sign(delivery.TokenOpen, r.ref, ""),
	} {
		if _, err := r.tracker.Click(ctx, tok, "", ""); !apperr.HasCode(err, apperr.NotFound) {
			t.Errorf("click %s: %v, want NotFound", name, err)
		}
		if err := r.tracker.Open(ctx, tok, "", ""); name != "open token" && !apperr.HasCode(err, apperr.NotFound) {
			t.Errorf("open %s: %v, want NotFound", name, err)
		}
		if err := r.tracker.Unsubscribe(ctx, tok); !apperr.HasCode(err, apperr.NotFound) {
			t.Errorf("unsubscribe %s: %v, want NotFound", name, err)
		}
	}
	if evs := r.sink.unique(trackTenant); len(evs) != 1 || evs[0].Name != delivery.EventNameOpened { // the real open token's
		t.Errorf("forged links published %+v", evs)
	}
	if c := r.contactNow(t); c.Consent.Email.State != delivery.ConsentGranted {
		t.Errorf("forged unsubscribe changed consent: %+v", c.Consent.Email)
	}
}

// An open is an unpriced track event (analytics counts impression and click values as spend).
func TestOpenIsAnUnpricedTrackEvent(t *testing.T) {
	r := newTrackRig(t)
	tok := tokenOf(t, r.links.Open(r.ref), "https://gw.example/t/o/", ".gif")
	if err := r.tracker.Open(context.Background(), tok, "Mail/1.0", ""); err != nil {
		t.Fatal(err)
	}
	evs := r.sink.unique(trackTenant)
	if len(evs) != 1 || evs[0].Type != delivery.EventTrack || evs[0].Name != delivery.EventNameOpened || evs[0].Value != (delivery.Money{}) ||
		evs[0].CampaignID != trackCampaign || evs[0].UserID != r.contact.ID || evs[0].Variant != r.variant {
		t.Errorf("open events %+v", evs)
	}
}
