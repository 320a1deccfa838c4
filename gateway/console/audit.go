package console

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/auth/v1"
)

// The audit log's limits: what the filter form accepts before asking auth.
const (
	auditDefaultPage = 50
	auditMaxPage     = 100
	auditMaxActor    = 200
	auditMaxMethod   = 200
	auditMaxResource = 256
	auditMaxToken    = 1024
	// auditDefaultSpan is how far back the log looks when the query names no start: the
	// records come oldest first, so an unbounded first page would show the tenant's oldest
	// records instead of what just happened.
	auditDefaultSpan = 24 * time.Hour
	// auditMaxNames bounds the lookups of actors' names a page makes (a page rarely has more
	// than a few actors).
	auditMaxNames = 25
)

// auditOutcomes are the outcomes a record can have (gRPC code names), for the filter.
var auditOutcomes = []string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
	"UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

// auditFilter is the audit log's query: the filter form's values as entered (for the form and
// the paging links) and as ListAuditRecords takes them.
type auditFilter struct {
	Actor, Method, Resource, Outcome string
	// From and To are as entered ("2006-01-02T15:04", UTC); Start and End their times.
	From, To   string
	Start, End time.Time
	PageSize   int
	PageToken  string
}

// auditTimeLayouts are the forms a time filter may take: the datetime-local input's, with
// seconds, a date alone, or RFC 3339. Without a zone they are UTC.
var auditTimeLayouts = []string{"2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02", time.RFC3339}

// parseAuditFilter reads the audit log's query. A query without from starts 24 hours before
// now; an empty from means no start.
func parseAuditFilter(q url.Values, now time.Time) (auditFilter, error) {
	f := auditFilter{
		Actor: strings.TrimSpace(q.Get("actor")), Method: strings.TrimSpace(q.Get("method")),
		Resource: strings.TrimSpace(q.Get("resource")), Outcome: strings.ToUpper(strings.TrimSpace(q.Get("outcome"))),
		From: strings.TrimSpace(q.Get("from")), To: strings.TrimSpace(q.Get("to")),
		PageToken: q.Get("page_token"), PageSize: auditDefaultPage,
	}
	if !q.Has("from") {
		f.From = now.Add(-auditDefaultSpan).UTC().Format(auditTimeLayouts[0])
	}
	switch {
	case len(f.Actor) > auditMaxActor:
		return f, fmt.Errorf("the actor is longer than %d characters", auditMaxActor)
	case len(f.Method) > auditMaxMethod:
		return f, fmt.Errorf("the action is longer than %d characters", auditMaxMethod)
	case f.Method != "" && !strings.HasPrefix(f.Method, "/"):
		return f, errors.New("the action is a full method name, like /campaignmesh.auth.v1.AuthService/CreateUser")
	case len(f.Resource) > auditMaxResource:
		return f, fmt.Errorf("the resource is longer than %d characters", auditMaxResource)
	case f.Outcome != "" && !slices.Contains(auditOutcomes, f.Outcome):
		return f, errors.New("the outcome is not one of the list")
	case len(f.PageToken) > auditMaxToken:
		return f, errors.New("the page link is not valid")
	}
	if s := q.Get("size"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > auditMaxPage {
			return f, fmt.Errorf("the page size is a number from 1 to %d", auditMaxPage)
		}
		f.PageSize = n
	}
	var err error
	if f.Start, err = parseAuditTime(f.From); err != nil {
		return f, fmt.Errorf("the start time: %w", err)
	}
	if f.End, err = parseAuditTime(f.To); err != nil {
		return f, fmt.Errorf("the end time: %w", err)
	}
	if !f.Start.IsZero() && !f.End.IsZero() && !f.End.After(f.Start) {
		return f, errors.New("the end time is not after the start time")
	}
	return f, nil
}

func parseAuditTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if len(s) <= len(time.RFC3339Nano) {
		for _, layout := range auditTimeLayouts {
			if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
				return t.UTC(), nil
			}
		}
	}
	return time.Time{}, errors.New("write it as 2026-01-31T14:30 (UTC)")
}

// request is the ListAuditRecords request of the filter.
func (f auditFilter) request() *authv1.ListAuditRecordsRequest {
	req := &authv1.ListAuditRecordsRequest{Actor: f.Actor, Method: f.Method, Resource: f.Resource, Outcome: f.Outcome,
		PageSize: int32(f.PageSize), PageToken: f.PageToken}
	if !f.Start.IsZero() {
		req.StartTime = timestamppb.New(f.Start)
	}
	if !f.End.IsZero() {
		req.EndTime = timestamppb.New(f.End)
	}
	return req
}

// link is the audit log's address with the filter, changed by kv (pairs of name, value): the
// paging links and the "only this actor" links keep every other filter.
func (f auditFilter) link(kv ...string) string {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("actor", f.Actor)
	set("method", f.Method)
	set("resource", f.Resource)
	set("outcome", f.Outcome)
	q.Set("from", f.From) // kept even when empty: empty means no start, absent the default
	set("to", f.To)
	if f.PageSize != auditDefaultPage {
		q.Set("size", strconv.Itoa(f.PageSize))
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			q.Del(kv[i])
		} else {
			q.Set(kv[i], kv[i+1])
		}
	}
	return Prefix + "audit?" + q.Encode()
}

// auditPage is the audit log's data.
type auditPage struct {
	Filter   auditFilter
	Outcomes []string
	Records  []auditRow
	// Next is the next page's address; empty on the last page.
	Next string
	// First is the first page's address, when this is a later page.
	First string
	// Verify is the address of the chain verification with this filter.
	Verify string
	// Chain is the verification's result, when it was asked for.
	Chain *authv1.VerifyAuditChainResponse
}

// auditRow is one record as the table shows it.
type auditRow struct {
	*authv1.AuditRecord
	// ActorName is the actor's email (a user) or name (an API key), when the caller may read
	// it; the id stays in the title and the filter link.
	ActorName string
	// Action is the method without its package, e.g. AuthService/CreateUser.
	Action                         string
	ActorLink, ActionLink, ResLink string
	OutcomeClass                   string
}

func (c *Console) auditRoutes(m *http.ServeMux) {
	m.HandleFunc("GET "+Prefix+"audit", c.signedIn(func(rq *request) { c.auditPage(rq, false) }))
	// The chain verification reads the tenant's whole chain, so it runs only when asked.
	m.HandleFunc("GET "+Prefix+"audit/verify", c.signedIn(func(rq *request) { c.auditPage(rq, true) }))
}

func (c *Console) auditPage(rq *request, verify bool) {
	f, err := parseAuditFilter(rq.r.URL.Query(), rq.now())
	if err != nil {
		rq.renderError(http.StatusBadRequest, "Please check the filter: "+err.Error()+".")
		return
	}
	p := auditPage{Filter: f, Outcomes: auditOutcomes}
	if verify {
		if p.Chain, err = c.api.Auth.VerifyAuditChain(rq.ctx, &authv1.VerifyAuditChainRequest{}); err != nil {
			rq.fail(err)
			return
		}
	}
	resp, err := c.api.Auth.ListAuditRecords(rq.ctx, f.request())
	if err != nil {
		rq.fail(err)
		return
	}
	for _, r := range resp.GetRecords() {
		row := auditRow{AuditRecord: r, Action: shortMethod(r.GetMethod()), OutcomeClass: "active"}
		if r.GetOutcome() != "OK" {
			row.OutcomeClass = "failed"
		}
		if r.GetActor() != "" {
			row.ActorLink = f.link("actor", r.GetActor(), "page_token", "")
		}
		if r.GetMethod() != "" {
			row.ActionLink = f.link("method", r.GetMethod(), "page_token", "")
		}
		if r.GetResource() != "" {
			row.ResLink = f.link("resource", r.GetResource(), "page_token", "")
		}
		p.Records = append(p.Records, row)
	}
	c.nameActors(rq, p.Records)
	if next := resp.GetNextPageToken(); next != "" {
		p.Next = f.link("page_token", next)
	}
	if f.PageToken != "" {
		p.First = f.link("page_token", "")
	}
	p.Verify = strings.Replace(f.link("page_token", f.PageToken), Prefix+"audit?", Prefix+"audit/verify?", 1)
	rq.render("audit", "Audit log", p)
}

// shortMethod drops a full method's package: "/campaignmesh.auth.v1.AuthService/CreateUser"
// → "AuthService/CreateUser".
func shortMethod(m string) string {
	svc, method, ok := strings.Cut(strings.TrimPrefix(m, "/"), "/")
	if !ok {
		return m
	}
	if i := strings.LastIndexByte(svc, '.'); i >= 0 {
		svc = svc[i+1:]
	}
	return svc + "/" + method
}

// nameActors puts a name on the actors of a page: users' emails (with users.read) and API
// keys' names (with apikeys.manage), one lookup per actor. An actor that cannot be read (gone,
// another tenant's, no permission) keeps its id.
func (c *Console) nameActors(rq *request, rows []auditRow) {
	users, keys := rq.can("users.read"), rq.can("apikeys.manage")
	if !users && !keys {
		return
	}
	names := map[string]string{}
	for i := range rows {
		actor := rows[i].GetActor()
		name, known := names[actor]
		if !known && len(names) < auditMaxNames && actor != "" {
			switch kind := rows[i].GetActorKind(); {
			case users && (kind == "access_token" || kind == "user"):
				if u, err := c.api.Auth.GetUser(rq.ctx, &authv1.GetUserRequest{Id: actor}); err == nil {
					name = u.GetEmail()
				}
			case keys && kind == "api_key":
				if k, err := c.api.Auth.GetApiKey(rq.ctx, &authv1.GetApiKeyRequest{Id: actor}); err == nil {
					name = k.GetName()
				}
			}
			names[actor] = name
		}
		rows[i].ActorName = name
	}
}
