package ingest

import (
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/types/known/structpb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
)

// PrivacyState is the tenants' privacy state as dsr publishes it: their policies and
// suppression lists. A privacy.View (kept current by privacy.Watch) is one.
type PrivacyState interface {
	Policy(tenant string) privacy.Policy
	Suppressions(tenant string) int
	Suppressed(tenant, subjectHash string) bool
}

// Privacy applies a tenant's suppression list and policy to accepted events before they are
// published: nothing of a suppressed subject, and no raw value the policy hashes or drops,
// reaches the stream.
type Privacy struct {
	State  PrivacyState
	Hasher *privacy.Hasher
}

// Suppress removes from events those of a subject the tenant has suppressed (the SubjectHash
// of the user_id or of the anonymous_id is in its list) and returns the others, in order, and
// how many were removed. A tenant without suppressions costs no hashing.
func (p Privacy) Suppress(tenant string, events []*ingestv1.AcceptedEvent) ([]*ingestv1.AcceptedEvent, int) {
	if p.State == nil || p.State.Suppressions(tenant) == 0 {
		return events, 0
	}
	var kept []*ingestv1.AcceptedEvent // nil until an event is suppressed: most batches keep all
	for i, a := range events {
		if !p.suppressed(tenant, a.GetEvent()) {
			if kept != nil {
				kept = append(kept, a)
			}
			continue
		}
		if kept == nil { // the first suppressed event: keep what came before it
			kept = make([]*ingestv1.AcceptedEvent, i, len(events)-1)
			copy(kept, events[:i])
		}
	}
	if kept == nil {
		return events, 0
	}
	return kept, len(events) - len(kept)
}

func (p Privacy) suppressed(tenant string, e *ingestv1.Event) bool {
	user, anon := e.GetUserId(), e.GetAnonymousId()
	if user != "" && p.State.Suppressed(tenant, p.Hasher.SubjectHash(tenant, user)) {
		return true
	}
	return anon != "" && anon != user && p.State.Suppressed(tenant, p.Hasher.SubjectHash(tenant, anon))
}

// Apply changes events in place as the tenant's policy says: property values hashed
// (Hasher.ValueHash; a value that is not a string is hashed as its JSON, object keys sorted)
// or dropped per top-level key, the client IP kept, truncated or dropped, the user agent kept
// or dropped. A policy that keeps everything costs nothing. An action the policy does not know
// drops what it applies to: a policy newer than this ingest must not let raw values through.
func (p Privacy) Apply(tenant string, events []*ingestv1.AcceptedEvent) {
	if p.State == nil {
		return
	}
	pol := p.State.Policy(tenant)
	if !pol.TouchesEvents() {
		return
	}
	props := pol.DefaultPropertyAction != "" && pol.DefaultPropertyAction != privacy.ActionKeep
	for _, a := range pol.PropertyRules {
		props = props || a != privacy.ActionKeep
	}
	for _, a := range events {
		e := a.GetEvent()
		if f := e.GetProperties().GetFields(); props && len(f) > 0 {
			for k, v := range f {
				switch pol.PropertyAction(k) {
				case privacy.ActionKeep:
				case privacy.ActionHash:
					hashed := p.Hasher.ValueHash(tenant, valueText(v))
					if s, ok := v.GetKind().(*structpb.Value_StringValue); ok {
						s.StringValue = hashed // in place: the request is ours, and this path is hot
					} else {
						f[k] = structpb.NewStringValue(hashed)
					}
				default:
					delete(f, k)
				}
			}
		}
		if c := e.GetContext(); c != nil {
			if c.Ip != "" {
				c.Ip = privacy.ApplyIP(pol.IP, c.Ip)
			}
			if pol.UserAgent != "" && pol.UserAgent != privacy.UserAgentKeep {
				c.UserAgent = ""
			}
		}
	}
}

// valueText is what a hash rule hashes: a string as it is, anything else as its JSON
// (encoding/json sorts object keys, so equal values give equal text).
func valueText(v *structpb.Value) string {
	if s, ok := v.GetKind().(*structpb.Value_StringValue); ok {
		return s.StringValue
	}
	b, err := json.Marshal(v.AsInterface())
	if err != nil { // NaN or infinity, which JSON cannot hold
		return fmt.Sprint(v.AsInterface())
	}
	return string(b)
}
