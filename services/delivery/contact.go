// Package delivery is the delivery service's domain: audiences (contacts with their consent per
// channel, CSV import, segments evaluated at send time) and the sending of campaign messages.
// It declares the ports its adapters implement (the PostgreSQL store, the analytics behaviour
// source, the providers) and holds every rule, so each is testable without gRPC.
package delivery

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/mail"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/language"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
)

// Limits of a contact's fields.
const (
	MaxEmailLen     = 254 // RFC 5321's path limit
	MaxUserIDLen    = 256 // the dsr identifier's limit
	MaxAttributes   = 50
	MaxAttrKeyLen   = 64
	MaxAttrValueLen = 1024
	MaxTimeZoneLen  = 64
	MaxLocaleLen    = 35 // RFC 5646's recommended minimum buffer
)

// Contact is a person a tenant may send messages to. At least one of Email, Phone and UserID is
// set; each is unique within the tenant when set. Everything but the ids, times and revision
// is personal data: ExportContact returns it, EraseContact removes it.
type Contact struct {
	ID       string
	TenantID string
	// UserID is the id the tenant's apps send as an event's user_id: it ties a contact to its
	// behaviour in analytics and to identify events.
	UserID string
	// Email is stored lower-cased.
	Email string
	// Phone is in E.164 form (+ and up to 15 digits).
	Phone string
	// Attributes are the tenant's own fields (first_name, plan, city…), for templates and
	// segments.
	Attributes map[string]string
	// TimeZone is an IANA zone name (quiet hours, send at local time); "" when not known.
	TimeZone string
	// Locale is a BCP 47 tag in canonical form; "" when not known.
	Locale            string
	Consent           Consents
	Suppressed        bool
	SuppressionReason string
	// Revision increases with every change: the API's etag.
	Revision   int64
	CreateTime time.Time
	UpdateTime time.Time
}

var (
	e164        = regexp.MustCompile(`^\+[1-9][0-9]{6,14}$`)
	attrKey     = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
	uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
)

// NormalizeEmail returns the form an address is stored and matched in: trimmed, lower-cased.
// (Local parts are case-sensitive in theory; no provider treats them so, and two rows for
// Ann@x and ann@x would send twice.)
func NormalizeEmail(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// NormalizePhone strips the separators people write in numbers (spaces, dashes, dots,
// parentheses); the result must then be E.164.
func NormalizePhone(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '-', '.', '(', ')', '\u00a0':
			return -1
		}
		return r
	}, strings.TrimSpace(s))
}

// NormalizeLocale returns the canonical form of a BCP 47 tag ("en-us" → "en-US"), or s itself
// when it does not parse (validation then reports it).
func NormalizeLocale(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	t, err := language.Parse(s)
	if err != nil {
		return s
	}
	return t.String()
}

func (c *Contact) normalize() {
	c.Email, c.Phone, c.UserID = NormalizeEmail(c.Email), NormalizePhone(c.Phone), strings.TrimSpace(c.UserID)
	c.TimeZone, c.Locale = strings.TrimSpace(c.TimeZone), NormalizeLocale(c.Locale)
	c.Consent.normalize()
	if len(c.Attributes) == 0 {
		c.Attributes = nil
	}
}

// validate checks every field of a normalized contact and reports all violations at once.
func (c *Contact) validate() error {
	var v apperr.Violations
	if c.Email == "" && c.Phone == "" && c.UserID == "" {
		v.Add("contact", "needs an email, a phone or a user_id")
	}
	validateEmail(&v, "email", c.Email)
	validatePhone(&v, "phone", c.Phone)
	validateUserID(&v, "user_id", c.UserID)
	validateAttributes(&v, "attributes", c.Attributes)
	validateTimeZone(&v, "time_zone", c.TimeZone)
	validateLocale(&v, "locale", c.Locale)
	validateConsent(&v, "consent.email", c.Consent.Email)
	validateConsent(&v, "consent.sms", c.Consent.SMS)
	if len(c.SuppressionReason) > MaxSuppressionReasonLen || !printableText(c.SuppressionReason) {
		v.Add("suppression_reason", "must be at most %d printable characters", MaxSuppressionReasonLen)
	}
	return v.Err()
}

func validateEmail(v *apperr.Violations, field, s string) {
	if s == "" {
		return
	}
	a, err := mail.ParseAddress(s)
	if len(s) > MaxEmailLen || err != nil || a.Address != s || a.Name != "" || !strings.Contains(s[strings.LastIndexByte(s, '@')+1:], ".") {
		v.Add(field, "must be a plain email address (local@domain.tld), at most %d characters", MaxEmailLen)
	}
}

func validatePhone(v *apperr.Violations, field, s string) {
	if s != "" && !e164.MatchString(s) {
		v.Add(field, "must be an E.164 number: + then 7 to 15 digits, e.g. +14155550123")
	}
}

func validateUserID(v *apperr.Violations, field, s string) {
	if len(s) > MaxUserIDLen || !printableText(s) {
		v.Add(field, "must be at most %d printable characters", MaxUserIDLen)
	}
}

func validateAttributes(v *apperr.Violations, field string, attrs map[string]string) {
	if len(attrs) > MaxAttributes {
		v.Add(field, "at most %d attributes", MaxAttributes)
		return
	}
	for k, val := range attrs {
		if !attrKey.MatchString(k) {
			v.Add(field, "key %q: must be lowercase letters, digits and '_', starting with a letter, at most %d characters", truncate(k, MaxAttrKeyLen), MaxAttrKeyLen)
			continue
		}
		if len(val) > MaxAttrValueLen || !printableText(strings.NewReplacer("\n", " ", "\t", " ").Replace(val)) {
			v.Add(field+"."+k, "must be at most %d bytes of text (line breaks and tabs allowed)", MaxAttrValueLen)
		}
	}
}

func validateTimeZone(v *apperr.Violations, field, s string) {
	if s == "" {
		return
	}
	if len(s) > MaxTimeZoneLen || s == "Local" || !printableText(s) {
		v.Add(field, "must be an IANA time zone name, e.g. Europe/Paris")
		return
	}
	if _, err := time.LoadLocation(s); err != nil {
		v.Add(field, "must be an IANA time zone name, e.g. Europe/Paris")
	}
}

func validateLocale(v *apperr.Violations, field, s string) {
	if s == "" {
		return
	}
	if len(s) > MaxLocaleLen {
		v.Add(field, "must be a BCP 47 language tag, e.g. en-US")
		return
	}
	if _, err := language.Parse(s); err != nil {
		v.Add(field, "must be a BCP 47 language tag, e.g. en-US")
	}
}

// printableText reports whether s is valid UTF-8 without control characters.
func printableText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// checkContactID validates a resource id (the store's UUIDs).
func checkContactID(field, id string) error {
	if !uuidPattern.MatchString(id) {
		var v apperr.Violations
		v.Add(field, "must be a UUID")
		return v.Err()
	}
	return nil
}

var errNoTenant = apperr.New(apperr.PermissionDenied, "TENANT_REQUIRED", "contacts belong to a tenant; this credential has none")

// audienceTenant rejects a call without a tenant: contacts exist only within one.
func audienceTenant(tenantID string) error {
	if tenantID == "" {
		return errNoTenant
	}
	return nil
}

// takeAudienceRecord takes the pending audit record of the call in ctx, if it is audited, for
// the store to write with the change.
func takeAudienceRecord(ctx context.Context, tenantID, resource string) *audit.Record {
	r, ok := audit.Take(ctx, tenantID, resource)
	if !ok {
		return nil
	}
	return &r
}

// IdentifierKind is what an identifier of a contact is.
type IdentifierKind string

// The identifiers that find a contact.
const (
	IdentifierUserID IdentifierKind = "user_id"
	IdentifierEmail  IdentifierKind = "email"
	IdentifierPhone  IdentifierKind = "phone"
)

// Identifier names a contact by one of its unique fields (a dsr request's identifiers).
type Identifier struct {
	Kind  IdentifierKind
	Value string
}

// MaxIdentifiers bounds the identifiers of one export or erasure (the dsr interface's limit).
const MaxIdentifiers = 1000

// normalizeIdentifiers normalizes values as the store keeps them and rejects unknown kinds.
func normalizeIdentifiers(ids []Identifier) ([]Identifier, error) {
	var v apperr.Violations
	if len(ids) == 0 || len(ids) > MaxIdentifiers {
		v.Add("identifiers", "must be 1-%d identifiers", MaxIdentifiers)
	}
	out := make([]Identifier, 0, len(ids))
	for _, id := range ids {
		switch id.Kind {
		case IdentifierEmail:
			id.Value = NormalizeEmail(id.Value)
		case IdentifierPhone:
			id.Value = NormalizePhone(id.Value)
		case IdentifierUserID:
			id.Value = strings.TrimSpace(id.Value)
		default:
			v.Add("identifiers.kind", "must be user_id, email or phone")
			continue
		}
		if id.Value != "" {
			out = append(out, id)
		}
	}
	return out, v.Err()
}

// ContactCursor is the position after the last contact of a page.
type ContactCursor struct {
	CreateTime time.Time `json:"t"`
	ID         string    `json:"id"`
}

// ContactQuery pages a tenant's contacts, oldest first.
type ContactQuery struct {
	Size  int
	After *ContactCursor
}

// Page sizes of contact and segment lists.
const (
	DefaultPageSize = 50
	MaxPageSize     = 1000
)

// ParseContactPage validates a page request.
func ParseContactPage(pageSize int32, pageToken string) (ContactQuery, error) {
	var v apperr.Violations
	q := ContactQuery{Size: int(pageSize)}
	switch {
	case pageSize < 0:
		v.Add("page_size", "must not be negative")
	case pageSize == 0:
		q.Size = DefaultPageSize
	case pageSize > MaxPageSize:
		q.Size = MaxPageSize
	}
	if pageToken != "" {
		var c ContactCursor
		b, err := base64.RawURLEncoding.DecodeString(pageToken)
		if err != nil || len(pageToken) > 256 || json.Unmarshal(b, &c) != nil || !uuidPattern.MatchString(c.ID) {
			v.Add("page_token", "is not a token this list returned")
		} else {
			q.After = &c
		}
	}
	return q, v.Err()
}

func contactPageToken(cs []Contact) string {
	last := cs[len(cs)-1]
	b, _ := json.Marshal(ContactCursor{CreateTime: last.CreateTime, ID: last.ID})
	return base64.RawURLEncoding.EncodeToString(b)
}

// ContactUpsert is what an import row or an identify event says about a contact: the
// identifiers that find it (any of them matching an existing contact makes it an update) and
// the fields to set. Empty fields keep what is stored; attributes are merged key by key; a
// consent with an empty State is kept.
type ContactUpsert struct {
	UserID, Email, Phone string
	Attributes           map[string]string
	TimeZone, Locale     string
	Consent              Consents
}

func (u *ContactUpsert) normalize() {
	u.Email, u.Phone, u.UserID = NormalizeEmail(u.Email), NormalizePhone(u.Phone), strings.TrimSpace(u.UserID)
	u.TimeZone, u.Locale = strings.TrimSpace(u.TimeZone), NormalizeLocale(u.Locale)
}

func (u *ContactUpsert) validate() error {
	var v apperr.Violations
	if u.Email == "" && u.Phone == "" && u.UserID == "" {
		v.Add("contact", "needs an email, a phone or a user_id")
	}
	validateEmail(&v, "email", u.Email)
	validatePhone(&v, "phone", u.Phone)
	validateUserID(&v, "user_id", u.UserID)
	validateAttributes(&v, "attributes", u.Attributes)
	validateTimeZone(&v, "time_zone", u.TimeZone)
	validateLocale(&v, "locale", u.Locale)
	for _, ch := range Channels {
		if c := u.Consent.For(ch); c.State != "" {
			validateConsent(&v, "consent."+string(ch), c)
		}
	}
	return v.Err()
}

// UpsertOutcome is what an upsert did.
type UpsertOutcome string

// The outcomes of one upsert.
const (
	UpsertCreated UpsertOutcome = "created"
	UpsertUpdated UpsertOutcome = "updated"
	// UpsertUnchanged: the identifiers found a contact that already holds every value given
	// (a consent counts as unchanged when its state and source are; its time stays the first).
	UpsertUnchanged UpsertOutcome = "unchanged"
	// UpsertConflict: the identifiers belong to two or more different contacts; nothing changed.
	UpsertConflict UpsertOutcome = "conflict"
	// UpsertTooManyAttributes: merging would exceed MaxAttributes; nothing changed.
	UpsertTooManyAttributes UpsertOutcome = "too_many_attributes"
)

// UpsertResult is the outcome of one upsert, with the contact's id when one was written.
type UpsertResult struct {
	Outcome UpsertOutcome
	ID      string
}

// AudienceStore is the port to the contacts and segments database. Every call names the tenant;
// another tenant's contact is NOT_FOUND. Writes that set identifiers answer ALREADY_EXISTS when
// one is another contact's.
type AudienceStore interface {
	CreateContact(ctx context.Context, c Contact, rec *audit.Record) (Contact, error)
	GetContact(ctx context.Context, tenantID, id string) (Contact, error)
	ListContacts(ctx context.Context, tenantID string, q ContactQuery) ([]Contact, error)
	// UpdateContact locks the contact, lets change modify it, validates nothing (the domain
	// did), and stores it with the next revision and rec, atomically. An error from change
	// aborts and is returned as is.
	UpdateContact(ctx context.Context, tenantID, id string, change func(*Contact) error, rec *audit.Record) (Contact, error)
	DeleteContact(ctx context.Context, tenantID, id string, rec *audit.Record) error
	// UpsertContacts applies us in order, in one transaction, each seeing the ones before it,
	// and returns one result per upsert. now is the time of a consent that names none.
	UpsertContacts(ctx context.Context, tenantID string, us []ContactUpsert, now time.Time) ([]UpsertResult, error)
	// FilterContacts returns up to limit contacts matching f's attribute and consent
	// conditions (not its behaviour condition), by id, with ids after afterID ("" for the
	// start).
	FilterContacts(ctx context.Context, tenantID string, f Filter, afterID string, limit int) ([]Contact, error)
	// ExportContact returns every contact any of ids names.
	ExportContact(ctx context.Context, tenantID string, ids []Identifier) ([]Contact, error)
	// EraseContact deletes every contact any of ids names and returns their ids.
	EraseContact(ctx context.Context, tenantID string, ids []Identifier) ([]string, error)

	CreateSegment(ctx context.Context, s Segment, rec *audit.Record) (Segment, error)
	GetSegment(ctx context.Context, tenantID, id string) (Segment, error)
	ListSegments(ctx context.Context, tenantID string, afterID string, limit int) ([]Segment, error)
	// UpdateSegment replaces a segment's name and filter with s's, with rec.
	UpdateSegment(ctx context.Context, s Segment, rec *audit.Record) (Segment, error)
	DeleteSegment(ctx context.Context, tenantID, id string, rec *audit.Record) error
}

// Audiences implements the contact and segment use cases. Callers pass the tenant from the
// caller's credential (or from an event's verified tenant), never from a request body.
type Audiences struct {
	store     AudienceStore
	behaviour BehaviourSource
	// suppressions is the platform's suppression list; nil: none is consulted.
	suppressions Suppressions
	limits       ImportLimits
	now          func() time.Time
}

// NewAudiences returns the audiences use cases. behaviour may be nil: segments with a
// behaviour condition then answer UNAVAILABLE.
func NewAudiences(store AudienceStore, behaviour BehaviourSource) *Audiences {
	return &Audiences{store: store, behaviour: behaviour, limits: DefaultImportLimits, now: time.Now}
}

// WithClock replaces the clock (tests).
func (a *Audiences) WithClock(now func() time.Time) *Audiences { a.now = now; return a }

// WithImportLimits replaces the CSV import's limits.
func (a *Audiences) WithImportLimits(l ImportLimits) *Audiences { a.limits = l; return a }

// CreateContact creates a contact in the tenant. Consents given without a time are stamped
// with now. Audited.
func (a *Audiences) CreateContact(ctx context.Context, tenantID string, c Contact) (Contact, error) {
	if err := audienceTenant(tenantID); err != nil {
		return Contact{}, err
	}
	c.normalize()
	a.stampConsent(&c.Consent)
	if err := c.validate(); err != nil {
		return Contact{}, err
	}
	if c.Suppressed && c.SuppressionReason == "" {
		c.SuppressionReason = "manual"
	}
	c.ID, c.TenantID, c.Revision = "", tenantID, 1
	return a.store.CreateContact(ctx, c, takeAudienceRecord(ctx, tenantID, ""))
}

func (a *Audiences) stampConsent(cs *Consents) {
	now := a.now().UTC()
	for _, c := range []*Consent{&cs.Email, &cs.SMS} {
		if c.State != "" && c.State != ConsentUnknown && c.Time.IsZero() {
			c.Time = now
		}
	}
}

// GetContact returns a contact of the tenant.
func (a *Audiences) GetContact(ctx context.Context, tenantID, id string) (Contact, error) {
	if err := apperr.First(audienceTenant(tenantID), checkContactID("id", id)); err != nil {
		return Contact{}, err
	}
	return a.store.GetContact(ctx, tenantID, id)
}

// ListContacts returns one page of the tenant's contacts, oldest first, and the next page's
// token ("" on the last page).
func (a *Audiences) ListContacts(ctx context.Context, tenantID string, pageSize int32, pageToken string) ([]Contact, string, error) {
	if err := audienceTenant(tenantID); err != nil {
		return nil, "", err
	}
	q, err := ParseContactPage(pageSize, pageToken)
	if err != nil {
		return nil, "", err
	}
	// One more than the page tells whether there is a next page: the last page never hands out
	// a token that leads to an empty one.
	size := q.Size
	q.Size++
	cs, err := a.store.ListContacts(ctx, tenantID, q)
	if err != nil {
		return nil, "", err
	}
	if len(cs) <= size {
		return cs, "", nil
	}
	cs = cs[:size]
	return cs, contactPageToken(cs), nil
}

// ContactField is a field UpdateContact can change.
type ContactField string

// The fields of a contact an update may name. Consent and suppression change through
// SetConsent and Suppress, which record their source.
const (
	FieldEmail      ContactField = "email"
	FieldPhone      ContactField = "phone"
	FieldUserID     ContactField = "user_id"
	FieldAttributes ContactField = "attributes"
	FieldTimeZone   ContactField = "time_zone"
	FieldLocale     ContactField = "locale"
)

// UpdateContact sets the fields named by mask to in's values (an empty value clears it). A
// non-zero revision must be the stored one (CONFLICT otherwise). Audited.
func (a *Audiences) UpdateContact(ctx context.Context, tenantID string, in Contact, mask []ContactField, revision int64) (Contact, error) {
	var v apperr.Violations
	if len(mask) == 0 {
		v.Add("update_mask", "is required: name the fields to change")
	}
	for _, f := range mask {
		switch f {
		case FieldEmail, FieldPhone, FieldUserID, FieldAttributes, FieldTimeZone, FieldLocale:
		default:
			v.Add("update_mask", "unknown or read-only field %q", truncate(string(f), 80))
		}
	}
	if err := apperr.First(audienceTenant(tenantID), checkContactID("contact.id", in.ID), v.Err()); err != nil {
		return Contact{}, err
	}
	in.normalize()
	return a.store.UpdateContact(ctx, tenantID, in.ID, func(cur *Contact) error {
		if revision != 0 && revision != cur.Revision {
			return apperr.New(apperr.Conflict, "ETAG_MISMATCH", "contact %s changed since it was read", cur.ID)
		}
		for _, f := range mask {
			switch f {
			case FieldEmail:
				cur.Email = in.Email
			case FieldPhone:
				cur.Phone = in.Phone
			case FieldUserID:
				cur.UserID = in.UserID
			case FieldAttributes:
				cur.Attributes = in.Attributes
			case FieldTimeZone:
				cur.TimeZone = in.TimeZone
			case FieldLocale:
				cur.Locale = in.Locale
			}
		}
		cur.normalize()
		return cur.validate()
	}, takeAudienceRecord(ctx, tenantID, in.ID))
}

// DeleteContact deletes a contact of the tenant. Audited.
func (a *Audiences) DeleteContact(ctx context.Context, tenantID, id string) error {
	if err := apperr.First(audienceTenant(tenantID), checkContactID("id", id)); err != nil {
		return err
	}
	return a.store.DeleteContact(ctx, tenantID, id, takeAudienceRecord(ctx, tenantID, id))
}

// Identify creates or updates the contact an identify event names (by user id, email or
// phone), and returns what it did. Not audited: it is the tenant's event stream, not a
// management call.
func (a *Audiences) Identify(ctx context.Context, tenantID string, u ContactUpsert) (UpsertResult, error) {
	if err := audienceTenant(tenantID); err != nil {
		return UpsertResult{}, err
	}
	u.normalize()
	a.stampConsent(&u.Consent)
	if err := u.validate(); err != nil {
		return UpsertResult{}, err
	}
	rs, err := a.store.UpsertContacts(ctx, tenantID, []ContactUpsert{u}, a.now().UTC())
	if err != nil {
		return UpsertResult{}, err
	}
	switch rs[0].Outcome {
	case UpsertConflict:
		return rs[0], apperr.New(apperr.FailedPrecondition, "IDENTIFIERS_CONFLICT", "the identifiers belong to different contacts")
	case UpsertTooManyAttributes:
		var v apperr.Violations
		v.Add("attributes", "a contact has at most %d attributes", MaxAttributes)
		return rs[0], v.Err()
	}
	return rs[0], nil
}

// ExportContact returns every contact any of ids names, for a data subject's access request.
func (a *Audiences) ExportContact(ctx context.Context, tenantID string, ids []Identifier) ([]Contact, error) {
	ids, err := normalizeIdentifiers(ids)
	if err = apperr.First(audienceTenant(tenantID), err); err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, nil
	}
	return a.store.ExportContact(ctx, tenantID, ids)
}

// EraseContact deletes every contact any of ids names, with all its personal fields, and
// returns the erased contacts' ids (the ledger erases its entries' personal fields by them).
// Repeating it erases nothing more and succeeds.
func (a *Audiences) EraseContact(ctx context.Context, tenantID string, ids []Identifier) ([]string, error) {
	ids, err := normalizeIdentifiers(ids)
	if err = apperr.First(audienceTenant(tenantID), err); err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, nil
	}
	return a.store.EraseContact(ctx, tenantID, ids)
}
