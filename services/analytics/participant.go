package analytics

import (
	"context"
	"regexp"
	"slices"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// The analytics side of a data-subject request (dsr's ParticipantService): the identifiers
// linked to a subject in stored events, an export of its events, and its erasure (Eraser).
// A subject's events are those of the tenant whose user_id or anonymous_id is one of the
// subject's user or anonymous id values, whatever kind the request gives the value, as
// suppression matches them; emails are not event columns and are ignored.

// IdentifierKind is what an identifier of a data subject is.
type IdentifierKind int

// Identifier kinds (dsr's Identifier.Kind).
const (
	KindUserID IdentifierKind = iota + 1
	KindAnonymousID
	KindEmail
)

// Identifier names a data subject in one of the ways events store it.
type Identifier struct {
	Kind  IdentifierKind
	Value string
}

// Bounds of a data-subject request.
const (
	maxSubjectIdentifiers = 1000
	maxIdentifierLen      = 256
	maxDSRRequestLen      = 200
	// MaxLinked is the most identifiers ResolveSubject returns.
	MaxLinked = 1000
)

// tenantToken is the shape of a tenant id: a token of the event subjects (events.<tenant>.<p>)
// and of the fence keys, as auth's slugs and UUIDs are.
var tenantToken = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Subject is one identifier value of a tenant: its events are those whose user_id or
// anonymous_id is Value.
type Subject struct {
	Tenant, Value string
}

// SubjectEvent is one stored event of a data subject, every column of it, as an export holds it.
type SubjectEvent struct {
	EventID, Type, Name, UserID, AnonymousID, CampaignID, Variant string
	ValueMicros                                                   int64
	Currency                                                      string
	// Time is the corrected event time; ClientTime the client's timestamp (zero when it
	// gave none); ReceivedTime when ingest received it.
	Time, ClientTime, ReceivedTime time.Time
	// PropKeys and PropValues are the properties, sorted by key (nested values as JSON text).
	PropKeys, PropValues                       []string
	IP, UserAgent, Locale, App, Device, Source string
}

// SubjectRows counts the stored events of one (tenant, user id, anonymous id).
type SubjectRows struct {
	Tenant, UserID, AnonymousID string
	Rows                        int64
}

// RollupHour is one (tenant, campaign, hour) of the rollup on one shard of the store.
type RollupHour struct {
	Shard              int
	Tenant, CampaignID string
	Hour               time.Time
}

// SubjectStore is what a data-subject request needs of the events store, on every shard.
type SubjectStore interface {
	// Links returns the distinct (user id, anonymous id) pairs stored together in events of
	// tenant whose user id is one of userIDs or whose anonymous id is one of anonymousIDs, at
	// most limit.
	Links(ctx context.Context, tenant string, userIDs, anonymousIDs []string, limit int) ([]Link, error)
	// SubjectEvents calls fn with every stored event of the tenant whose user_id or
	// anonymous_id is one of values, as it reads them; an error of fn stops it.
	SubjectEvents(ctx context.Context, tenant string, values []string, fn func(SubjectEvent) error) error
	// CountSubjectRows counts the stored events of subjects by tenant, user id and anonymous id.
	CountSubjectRows(ctx context.Context, subjects []Subject) ([]SubjectRows, error)
	// SubjectHours returns the rollup hours the events of subjects are counted in.
	SubjectHours(ctx context.Context, subjects []Subject) ([]RollupHour, error)
	// RebuildHours deletes the rollup rows of hours and inserts them again from the raw events
	// of those hours less those of without, waiting first until no writer insert running when
	// it is called still runs. It returns the number of mutations it ran.
	RebuildHours(ctx context.Context, hours []RollupHour, without []Subject) (mutations int, err error)
	// DeleteSubjects deletes the raw events of subjects with as few mutations as the query
	// size allows (one per shard for up to some thousands of identifiers), and waits until
	// they are done. It returns the number of mutations it ran, also when it fails.
	DeleteSubjects(ctx context.Context, subjects []Subject) (mutations int, err error)
}

// Link is a user id and an anonymous id stored in the same event.
type Link struct{ UserID, AnonymousID string }

// ResolveWindow is how long the participant gathers ResolveSubject calls of one tenant after
// the first arrives, to answer them all from one look-up: a look-up scans the tenant's events,
// so a thousand erasures submitted at once must not cost a thousand scans.
const ResolveWindow = 200 * time.Millisecond

// maxBatchLinks bounds the pairs one batched look-up reads.
const maxBatchLinks = 1_000_000

// Participant answers dsr's participant calls for analytics: ResolveSubject, ExportSubject
// and the erasure (Eraser).
type Participant struct {
	store  SubjectStore
	eraser *Eraser

	mu      sync.Mutex
	pending map[string]*linkBatch // by tenant: the batch gathering callers
	lookups chan struct{}         // one look-up at a time: the others wait, gathering more
}

// linkBatch is one batched look-up of links: the identifiers of every caller that joined it,
// and, once done is closed, its answer.
type linkBatch struct {
	users, anons []string
	callers      int
	done         chan struct{}
	links        []Link
	err          error
}

// NewParticipant returns the participant over store, erasing through eraser.
func NewParticipant(store SubjectStore, eraser *Eraser) *Participant {
	return &Participant{store: store, eraser: eraser, pending: map[string]*linkBatch{}, lookups: make(chan struct{}, 1)}
}

// links returns the stored links of users and anons (and possibly of other callers' ids: the
// caller picks its own). Callers of one tenant within ResolveWindow share one look-up; the
// first of them runs it for all.
func (p *Participant) links(ctx context.Context, tenant string, users, anons []string) ([]Link, error) {
	p.mu.Lock()
	b := p.pending[tenant]
	first := b == nil
	if first {
		b = &linkBatch{done: make(chan struct{})}
		p.pending[tenant] = b
	}
	b.users, b.anons, b.callers = appendNew(b.users, users), appendNew(b.anons, anons), b.callers+1
	p.mu.Unlock()
	if first {
		// The look-up serves every caller that joined: it outlives the first one's context.
		go p.lookUp(context.WithoutCancel(ctx), tenant, b)
	}
	select {
	case <-b.done:
		return b.links, b.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// lookUp gathers callers for ResolveWindow, then runs b's look-up (one at a time) and answers
// them.
func (p *Participant) lookUp(ctx context.Context, tenant string, b *linkBatch) {
	defer close(b.done)
	<-time.After(ResolveWindow) // the window callers join in
	p.lookups <- struct{}{}
	defer func() { <-p.lookups }()
	p.mu.Lock()
	if p.pending[tenant] == b {
		delete(p.pending, tenant) // later callers start the next batch
	}
	users, anons, callers := b.users, b.anons, b.callers
	p.mu.Unlock()
	limit := min(maxBatchLinks, callers*MaxLinked+len(users)+len(anons))
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	b.links, b.err = p.store.Links(ctx, tenant, users, anons, limit)
}

func appendNew(to, from []string) []string {
	for _, v := range from {
		if !slices.Contains(to, v) {
			to = append(to, v)
		}
	}
	return to
}

// checkSubject validates a participant call and returns the user and anonymous id values
// (distinct, in order).
func checkSubject(tenant, request string, ids []Identifier) (users, anons []string, err error) {
	var v apperr.Violations
	if !tenantToken.MatchString(tenant) {
		v.Add("tenant_id", "is required: 1-64 letters, digits, '_' or '-'")
	}
	if request == "" || len(request) > maxDSRRequestLen {
		v.Add("dsr_request", "is required (at most %d bytes)", maxDSRRequestLen)
	}
	if len(ids) == 0 || len(ids) > maxSubjectIdentifiers {
		v.Add("identifiers", "give 1 to %d identifiers", maxSubjectIdentifiers)
	}
	for _, id := range ids {
		if !validIdentifier(id.Value) {
			v.Add("identifiers", "a value must be 1-%d characters of printable UTF-8", maxIdentifierLen)
			break
		}
		switch id.Kind {
		case KindUserID:
			if !slices.Contains(users, id.Value) {
				users = append(users, id.Value)
			}
		case KindAnonymousID:
			if !slices.Contains(anons, id.Value) {
				anons = append(anons, id.Value)
			}
		case KindEmail:
		default:
			v.Add("identifiers", "kind must be user id, anonymous id or email")
		}
	}
	return users, anons, v.Err()
}

func validIdentifier(s string) bool {
	if s == "" || len(s) > 4*maxIdentifierLen || utf8.RuneCountInString(s) > maxIdentifierLen || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// values is users and anons as one list of distinct values.
func values(users, anons []string) []string {
	out := slices.Clone(users)
	for _, a := range anons {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// Resolve returns the identifiers linked to ids in stored events that ids do not hold: the
// anonymous ids seen in the same events as its user ids, and the user ids seen with its
// anonymous ids — one hop (dsr asks again with the result), at most MaxLinked.
func (p *Participant) Resolve(ctx context.Context, tenant, request string, ids []Identifier) ([]Identifier, error) {
	users, anons, err := checkSubject(tenant, request, ids)
	if err != nil {
		return nil, err
	}
	if len(users) == 0 && len(anons) == 0 {
		return nil, nil
	}
	links, err := p.links(ctx, tenant, users, anons)
	if err != nil {
		return nil, err
	}
	var out []Identifier
	add := func(kind IdentifierKind, v string) {
		id := Identifier{Kind: kind, Value: v}
		if len(out) < MaxLinked && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	for _, l := range links { // the batch holds other callers' links too: keep this caller's
		if slices.Contains(users, l.UserID) && !slices.Contains(anons, l.AnonymousID) {
			add(KindAnonymousID, l.AnonymousID)
		}
		if slices.Contains(anons, l.AnonymousID) && !slices.Contains(users, l.UserID) {
			add(KindUserID, l.UserID)
		}
	}
	return out, nil
}

// Export calls fn with every stored event of the subject ids name, as the store reads them
// (memory stays bounded whatever the subject's size); an error of fn (the stream broke) ends it.
func (p *Participant) Export(ctx context.Context, tenant, request string, ids []Identifier, fn func(SubjectEvent) error) error {
	users, anons, err := checkSubject(tenant, request, ids)
	if err != nil {
		return err
	}
	vals := values(users, anons)
	if len(vals) == 0 {
		return nil
	}
	return p.store.SubjectEvents(ctx, tenant, vals, fn)
}

// StartErasure starts erasing the subject ids name (Eraser.Start).
func (p *Participant) StartErasure(ctx context.Context, tenant, request string, ids []Identifier) (ErasureStatus, error) {
	users, anons, err := checkSubject(tenant, request, ids)
	if err != nil {
		return ErasureStatus{}, err
	}
	return p.eraser.Start(tenant, request, values(users, anons)), nil
}

// GetErasure reports an erasure's progress (Eraser.Status).
func (p *Participant) GetErasure(ctx context.Context, tenant, request string) (ErasureStatus, error) {
	var v apperr.Violations
	if !tenantToken.MatchString(tenant) {
		v.Add("tenant_id", "is required: 1-64 letters, digits, '_' or '-'")
	}
	if request == "" || len(request) > maxDSRRequestLen {
		v.Add("dsr_request", "is required (at most %d bytes)", maxDSRRequestLen)
	}
	if err := v.Err(); err != nil {
		return ErasureStatus{}, err
	}
	return p.eraser.Status(tenant, request)
}
