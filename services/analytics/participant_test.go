package analytics_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/services/analytics"
)

// Every participant call is validated before the store is asked (these run without one): the
// tenant (a subject token), the dsr request, 1 to 1,000 identifiers of a known kind, each 1-256
// printable characters.
func TestParticipantValidatesRequests(t *testing.T) {
	p := analytics.NewParticipant(nil, analytics.NewEraser(nil, nil, nil, analytics.ErasureConfig{}, slog.New(slog.DiscardHandler), nil))
	user := analytics.Identifier{Kind: analytics.KindUserID, Value: "u1"}
	many := make([]analytics.Identifier, 1001)
	for i := range many {
		many[i] = user
	}
	for _, tc := range []struct {
		name, tenant, request, field string
		ids                          []analytics.Identifier
	}{
		{"no tenant", "", "r", "tenant_id", []analytics.Identifier{user}},
		{"a tenant with a dot", "t.1", "r", "tenant_id", []analytics.Identifier{user}},
		{"a tenant with a wildcard", "t*", "r", "tenant_id", []analytics.Identifier{user}},
		{"no request", "t1", "", "dsr_request", []analytics.Identifier{user}},
		{"a long request", "t1", strings.Repeat("r", 201), "dsr_request", []analytics.Identifier{user}},
		{"no identifier", "t1", "r", "identifiers", nil},
		{"1,001 identifiers", "t1", "r", "identifiers", many},
		{"an empty value", "t1", "r", "identifiers", []analytics.Identifier{{Kind: analytics.KindUserID}}},
		{"a value of 257 characters", "t1", "r", "identifiers", []analytics.Identifier{{Kind: analytics.KindUserID, Value: strings.Repeat("é", 257)}}},
		{"a control character", "t1", "r", "identifiers", []analytics.Identifier{{Kind: analytics.KindAnonymousID, Value: "a\x00b"}}},
		{"invalid UTF-8", "t1", "r", "identifiers", []analytics.Identifier{{Kind: analytics.KindAnonymousID, Value: "a\xffb"}}},
		{"no kind", "t1", "r", "identifiers", []analytics.Identifier{{Value: "x"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			_, errResolve := p.Resolve(ctx, tc.tenant, tc.request, tc.ids)
			errExport := p.Export(ctx, tc.tenant, tc.request, tc.ids, func(analytics.SubjectEvent) error { return nil })
			_, errStart := p.StartErasure(ctx, tc.tenant, tc.request, tc.ids)
			for call, err := range map[string]error{"resolve": errResolve, "export": errExport, "start": errStart} {
				var e *apperr.Error
				if !asAppErr(err, &e) || e.Code != apperr.Invalid || len(e.Violations) == 0 || e.Violations[0].Field != tc.field {
					t.Errorf("%s: %v, want a violation of %s", call, err, tc.field)
				}
			}
		})
	}
	// 256 characters of several bytes each are allowed.
	if _, err := p.StartErasure(context.Background(), "t1", "r", []analytics.Identifier{{Kind: analytics.KindUserID, Value: strings.Repeat("é", 256)}}); err != nil {
		t.Fatalf("256 characters: %v", err)
	}
}

func asAppErr(err error, e **apperr.Error) bool {
	x, ok := err.(*apperr.Error)
	if ok {
		*e = x
	}
	return ok
}

// GetErasure of a request this process does not know (never started, or lost in a restart)
// answers NOT_FOUND; an erasure naming only emails (no event column holds one) is done at
// once with nothing erased; a repeated StartErasure returns the same status without queueing
// again, one with a new identifier queues it again.
func TestErasureStatusLifecycle(t *testing.T) {
	e := analytics.NewEraser(nil, nil, nil, analytics.ErasureConfig{}, slog.New(slog.DiscardHandler), nil)
	p := analytics.NewParticipant(nil, e)
	ctx := context.Background()
	if _, err := p.GetErasure(ctx, "t1", "unknown"); !apperr.HasCode(err, apperr.NotFound) {
		t.Fatalf("unknown erasure: %v, want NOT_FOUND", err)
	}
	st, err := p.StartErasure(ctx, "t1", "emails", []analytics.Identifier{{Kind: analytics.KindEmail, Value: "a@example.com"}})
	if err != nil || !st.Done || st.Counts["events"] != 0 {
		t.Fatalf("emails only: %+v, %v; want done with nothing erased", st, err)
	}
	if st, err = p.GetErasure(ctx, "t1", "emails"); err != nil || !st.Done {
		t.Fatalf("emails only, asked again: %+v, %v", st, err)
	}
	if _, err := p.GetErasure(ctx, "t2", "emails"); !apperr.HasCode(err, apperr.NotFound) {
		t.Fatalf("another tenant's erasure: %v, want NOT_FOUND", err)
	}
	ids := []analytics.Identifier{{Kind: analytics.KindUserID, Value: "u1"}}
	if st, err = p.StartErasure(ctx, "t1", "r1", ids); err != nil || st.Done || st.Message != "queued" {
		t.Fatalf("start: %+v, %v", st, err)
	}
	if st, err = p.StartErasure(ctx, "t1", "r1", ids); err != nil || st.Done || st.Message != "queued" {
		t.Fatalf("repeated start: %+v, %v", st, err)
	}
	// The emails-only request learns of an event identifier: erased again.
	if st, err = p.StartErasure(ctx, "t1", "emails", append(ids, analytics.Identifier{Kind: analytics.KindEmail, Value: "a@example.com"})); err != nil || st.Done {
		t.Fatalf("a new identifier for a done erasure: %+v, %v; want it queued again", st, err)
	}
}
