// Package audit owns the audit record of a call or of audited work, the Sink that stores it
// durably, and the annotation through which a domain says what the access layer cannot know.
//
// The flow is the same in every service:
//
//   - The access layer (internal/platform/access) decides whether a call is audited. Before the
//     handler runs it installs the call's pending record in the context (Begin); when the call is
//     denied or fails, or succeeds without its record having been taken, the access layer hands
//     the record to the service's Sink.
//   - A domain that changes state takes the pending record (Take) and passes it explicitly to its
//     store, which writes it in the transaction of the change: the record commits with the change
//     or neither does, so a crash after the commit cannot lose it and the access layer does not
//     record the call again.
//   - Work outside a call (a scheduler) starts audited work with WithWork and takes its records
//     the same way.
//
// A Sink is durable: Record returns only once the record is stored (auth's own log, or a
// service's outbox: audit/postgres, audit/natsjs), from where it is delivered to auth's
// tamper-evident log exactly once (auth skips record ids it already holds).
//
// This package depends on nothing of the gRPC layer but the status code type, so domain
// packages may import it.
package audit

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode"

	"google.golang.org/grpc/codes"
)

// Record is one audited call or piece of audited work, allowed or denied.
type Record struct {
	// ID identifies the record wherever it travels, so redelivery never duplicates it.
	ID       string
	Time     time.Time
	Method   string
	TenantID string
	// Actor is the user or key id, or "service:<name>" for mesh callers.
	Actor         string
	ActorKind     string
	Resource      string
	Outcome       codes.Code
	RequestID     string
	TraceID       string
	ClientAddress string
	// PeerService is the mesh identity that forwarded the call (e.g. "gateway").
	PeerService string
	// Service is the service that handled the call.
	Service string
}

// Sink stores records durably: Record returns nil only once r is stored where it cannot be lost.
type Sink interface {
	Record(ctx context.Context, r Record) error
}

// Waker is implemented by sinks that deliver records written by stores (Take + the store's
// transaction): Wake says some are waiting.
type Waker interface{ Wake() }

// pending is the record of the audited call or work in a context, and what the domain said
// about it.
type pending struct {
	mu                        sync.Mutex
	tenantID, actor, resource string
	annotated                 bool
	// base builds the record of the work as a success.
	base  func() Record
	taken bool
}

type pendingKey struct{}

// Begin installs the pending record of an audited call in ctx: base builds it (as a success)
// when it is needed. The access layer calls it; services use WithWork.
func Begin(ctx context.Context, base func() Record) context.Context {
	return context.WithValue(ctx, pendingKey{}, &pending{base: base})
}

// WithWork starts audited work outside a call (e.g. a scheduler's): Take in the returned ctx
// builds its records from what record returns.
func WithWork(ctx context.Context, record func() Record) context.Context {
	return Begin(ctx, record)
}

// Annotate records, for the audit record of the current call, the tenant and actor it concerns
// (e.g. the account of a login, which has no credential yet) and the resource acted on. Empty
// values keep what the access layer found. It does nothing outside audited work.
func Annotate(ctx context.Context, tenantID, actor, resource string) {
	p, ok := ctx.Value(pendingKey{}).(*pending)
	if !ok {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tenantID, p.actor, p.resource, p.annotated = tenantID, actor, resource, true
}

// Take returns the record of the audited work in ctx as a success on resource (in tenantID when
// the record names no tenant), with a new id, and marks it taken: the caller passes it to the
// store that writes it with the change, and the access layer records the call itself only if it
// then fails. It returns false outside audited work.
func Take(ctx context.Context, tenantID, resource string) (Record, bool) {
	p, ok := ctx.Value(pendingKey{}).(*pending)
	if !ok || p.base == nil {
		return Record{}, false
	}
	r := Annotated(ctx, p.base())
	p.mu.Lock()
	p.taken = true
	p.mu.Unlock()
	r.ID, r.Time, r.Resource = NewID(), time.Now().UTC(), resource
	if r.TenantID == "" {
		r.TenantID = tenantID
	}
	return r, true
}

// Taken reports whether the record of the audited work in ctx was taken by a store.
func Taken(ctx context.Context) bool {
	p, ok := ctx.Value(pendingKey{}).(*pending)
	if !ok {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.taken
}

// Annotated returns r with what Annotate said in ctx applied: a tenant, an actor (an anonymous
// record then names a user, e.g. the account that just logged in) and a resource.
func Annotated(ctx context.Context, r Record) Record {
	p, ok := ctx.Value(pendingKey{}).(*pending)
	if !ok {
		return r
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.annotated {
		return r
	}
	if p.tenantID != "" {
		r.TenantID = p.tenantID
	}
	if p.actor != "" {
		r.Actor = p.actor
		if r.ActorKind == "anonymous" {
			r.ActorKind = "user"
		}
	}
	if p.resource != "" {
		r.Resource = p.resource
	}
	return r
}

// NewID returns a random (version 4) UUID for a record.
func NewID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// CodeName turns a gRPC code into its canonical name: PermissionDenied → PERMISSION_DENIED.
func CodeName(c codes.Code) string {
	var b strings.Builder
	prev := ' '
	for _, r := range c.String() {
		if unicode.IsUpper(r) && unicode.IsLower(prev) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
		prev = r
	}
	return b.String()
}

// CodeFromName is the inverse of CodeName; unknown names give codes.Unknown.
func CodeFromName(name string) codes.Code {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if CodeName(c) == name {
			return c
		}
	}
	return codes.Unknown
}
