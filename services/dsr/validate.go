package dsr

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
)

// Limits of requests and policies.
const (
	MaxIdentifiers   = 20
	MaxValueLen      = 256
	MaxCovered       = 1000
	MaxExtensionDays = 60
	MaxReasonLen     = 500
	MaxPropertyRules = 200
	MaxRuleKeyLen    = 128
	MaxRetentionDays = 3650
	DefaultPageSize  = 50
	MaxPageSize      = 1000
	// DeadlineDays is the time a request has, from receipt (GDPR Art. 12(3): one month).
	DeadlineDays = 30
	// ExportRetention is how long an export stays downloadable after completion, and how
	// long raw identifiers stay on an ended request.
	ExportRetention = 7 * 24 * time.Hour
)

var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// CreateInput is a request as a client creates it.
type CreateInput struct {
	Kind       Kind
	Regulation Regulation
	Subject    []Identifier
	RequestID  string
}

// Validate checks in and returns it with duplicate identifiers removed.
func (in CreateInput) Validate() (CreateInput, error) {
	var v apperr.Violations
	if !slices.Contains(Kinds, in.Kind) {
		v.Add("request.kind", "must be ACCESS, ERASURE, SUPPRESS or UNSUPPRESS")
	}
	if in.Regulation != GDPR && in.Regulation != CCPA {
		v.Add("request.regulation", "must be GDPR or CCPA")
	}
	if len(in.Subject) == 0 || len(in.Subject) > MaxIdentifiers {
		v.Add("request.subject", "must name 1-%d identifiers", MaxIdentifiers)
	}
	var out []Identifier
	for i, id := range in.Subject {
		if i >= MaxIdentifiers {
			break
		}
		field := "request.subject[" + strconv.Itoa(i) + "]"
		if id.Kind != UserID && id.Kind != AnonymousID && id.Kind != Email {
			v.Add(field+".kind", "must be USER_ID, ANONYMOUS_ID or EMAIL")
		}
		if n := utf8.RuneCountInString(id.Value); !utf8.ValidString(id.Value) || n < 1 || n > MaxValueLen || strings.ContainsRune(id.Value, 0) {
			v.Add(field+".value", "must be 1-%d characters of valid UTF-8", MaxValueLen)
		}
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	if in.RequestID != "" && !requestIDPattern.MatchString(in.RequestID) {
		v.Add("request_id", "must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-'")
	}
	in.Subject = out
	return in, v.Err()
}

// validatePolicy checks a policy's fields.
func validatePolicy(p privacy.Policy, v *apperr.Violations) {
	if p.RetentionDays < 0 || p.RetentionDays > MaxRetentionDays {
		v.Add("policy.retention_days", "must be 0-%d", MaxRetentionDays)
	}
	if len(p.PropertyRules) > MaxPropertyRules {
		v.Add("policy.property_rules", "at most %d rules", MaxPropertyRules)
	}
	for k, a := range p.PropertyRules {
		if n := utf8.RuneCountInString(k); n < 1 || n > MaxRuleKeyLen || !utf8.ValidString(k) {
			v.Add("policy.property_rules", "keys must be 1-%d characters", MaxRuleKeyLen)
			break
		}
		if a != privacy.ActionKeep && a != privacy.ActionHash && a != privacy.ActionDrop {
			v.Add("policy.property_rules", "actions must be KEEP, HASH or DROP")
			break
		}
	}
	switch p.DefaultPropertyAction {
	case "", privacy.ActionKeep, privacy.ActionHash, privacy.ActionDrop:
	default:
		v.Add("policy.default_property_action", "must be KEEP, HASH or DROP")
	}
	switch p.IP {
	case "", privacy.IPKeep, privacy.IPTruncate, privacy.IPDrop:
	default:
		v.Add("policy.ip_handling", "must be KEEP, TRUNCATE or DROP")
	}
	switch p.UserAgent {
	case "", privacy.UserAgentKeep, privacy.UserAgentDrop:
	default:
		v.Add("policy.user_agent_handling", "must be KEEP or DROP")
	}
}

// ListQuery selects and pages a tenant's requests, newest first.
type ListQuery struct {
	States  []State
	Kinds   []Kind
	Overdue bool
	// Now is the instant overdue is judged at.
	Now   time.Time
	Size  int
	After *Cursor
}

// Cursor is the position after the last request of a page.
type Cursor struct {
	CreateTime time.Time
	ID         string
}

// ListRequest is a list request as a caller sends it.
type ListRequest struct {
	PageSize  int32
	PageToken string
	States    []State
	Kinds     []Kind
	Overdue   bool
}

type token struct {
	F string    `json:"f"`
	T time.Time `json:"t"`
	I string    `json:"i"`
}

var errPageToken = apperr.New(apperr.Invalid, "INVALID_PAGE_TOKEN", "invalid page token")

func pageSize(n int32, v *apperr.Violations) int {
	switch {
	case n < 0:
		v.Add("page_size", "must not be negative")
	case n == 0:
		return DefaultPageSize
	case n > MaxPageSize:
		return MaxPageSize
	}
	return int(n)
}

func parseList(r ListRequest, now time.Time) (ListQuery, error) {
	var v apperr.Violations
	q := ListQuery{Size: pageSize(r.PageSize, &v), Overdue: r.Overdue, Now: now}
	for _, s := range r.States {
		if !slices.Contains(States, s) {
			v.Add("states", "unknown state")
			break
		}
	}
	for _, k := range r.Kinds {
		if !slices.Contains(Kinds, k) {
			v.Add("kinds", "unknown kind")
			break
		}
	}
	if err := v.Err(); err != nil {
		return q, err
	}
	q.States = slices.Compact(slices.Sorted(slices.Values(r.States)))
	q.Kinds = slices.Compact(slices.Sorted(slices.Values(r.Kinds)))
	if r.PageToken != "" {
		c, err := decodeToken(r.PageToken, q.fingerprint())
		if err != nil {
			return q, err
		}
		q.After = c
	}
	return q, nil
}

func (q ListQuery) fingerprint() string {
	h := sha256.New()
	for _, s := range q.States {
		h.Write([]byte("s:" + s + "\x00"))
	}
	for _, k := range q.Kinds {
		h.Write([]byte("k:" + k + "\x00"))
	}
	if q.Overdue {
		h.Write([]byte("overdue"))
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

func encodeToken(fp string, t time.Time, id string) string {
	b, _ := json.Marshal(token{F: fp, T: t.UTC(), I: id})
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeToken(s, fp string) (*Cursor, error) {
	var tok token
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil && len(raw) <= 1024 {
		err = json.Unmarshal(raw, &tok)
	}
	if err != nil || len(raw) > 1024 || tok.F != fp || tok.I == "" || len(tok.I) > 128 {
		return nil, errPageToken
	}
	return &Cursor{CreateTime: tok.T, ID: tok.I}, nil
}
