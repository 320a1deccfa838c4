package dsr

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/internal/platform/authn"
	"github.com/campaignmesh/campaignmesh/internal/platform/privacy"
	"github.com/campaignmesh/campaignmesh/services/dsr/receipt"
)

// Service is the API's domain: it validates, applies the rules and calls the store. The tenant
// always comes from the caller's principal.
type Service struct {
	store        Store
	hasher       *privacy.Hasher
	pub          Publisher
	participants []string
	keys         *Keyring
	now          func() time.Time
	logger       *slog.Logger
	wake         func()
}

// NewService returns the service over store. participants names the configured participants
// (every ACCESS and ERASURE request gets a status for each).
func NewService(store Store, hasher *privacy.Hasher, pub Publisher, participants []string, keys *Keyring) *Service {
	return &Service{store: store, hasher: hasher, pub: pub, participants: participants, keys: keys,
		now: time.Now, logger: slog.New(slog.DiscardHandler), wake: func() {}}
}

// WithLogger sets the logger.
func (s *Service) WithLogger(l *slog.Logger) *Service { s.logger = l; return s }

// WithClock sets the clock (tests).
func (s *Service) WithClock(now func() time.Time) *Service { s.now = now; return s }

// WithWake sets what a new request calls so a runner starts on it at once.
func (s *Service) WithWake(wake func()) *Service { s.wake = wake; return s }

var errNoTenant = apperr.New(apperr.PermissionDenied, "TENANT_REQUIRED", "data-subject requests belong to a tenant; this credential has none")

func tenantOf(caller *authn.Principal) (string, error) {
	if caller == nil || caller.TenantID == "" {
		return "", errNoTenant
	}
	return caller.TenantID, nil
}

func takeRecord(ctx context.Context, tenantID, resource string) *audit.Record {
	r, ok := audit.Take(ctx, tenantID, resource)
	if !ok {
		return nil
	}
	return &r
}

// NewRequestID returns a new request id: "dsr_" and 26 base32 characters of randomness.
func NewRequestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "dsr_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

// CreateRequest accepts a request. ERASURE and SUPPRESS suppress the named identifiers in the
// same transaction, and publish them to the bucket before answering (best effort: the runner
// and the reconcile loop publish them again). A request_id the tenant used before returns the
// first request.
func (s *Service) CreateRequest(ctx context.Context, caller *authn.Principal, in CreateInput) (Request, error) {
	tenant, err := tenantOf(caller)
	if err != nil {
		return Request{}, err
	}
	if in, err = in.Validate(); err != nil {
		return Request{}, err
	}
	now := s.now().UTC()
	r := Request{
		ID: NewRequestID(), TenantID: tenant, Kind: in.Kind, Regulation: in.Regulation, State: Received,
		RequestID: in.RequestID, Subject: in.Subject, CreatedBy: caller.Subject,
		CreateTime: now, UpdateTime: now, Deadline: now.AddDate(0, 0, DeadlineDays), NextAttempt: now,
	}
	var sups []string
	for _, id := range in.Subject {
		h := s.hasher.SubjectHash(tenant, id.Value)
		r.Covered = append(r.Covered, Covered{Identifier: id, Hash: h})
		if (in.Kind == KindErasure || in.Kind == KindSuppress) && !slices.Contains(sups, h) {
			sups = append(sups, h)
		}
	}
	if in.Kind == KindAccess || in.Kind == KindErasure {
		for _, name := range s.participants {
			r.Participants = append(r.Participants, ParticipantStatus{Name: name, State: PPending, UpdateTime: now})
		}
	}
	out, created, err := s.store.CreateRequest(ctx, r, sups, takeRecord(ctx, tenant, r.ID))
	if err != nil {
		return Request{}, err
	}
	if created {
		for _, h := range sups {
			if err := s.pub.PutSuppression(ctx, tenant, h, out.ID); err != nil {
				s.logger.Warn("publish suppression; the runner publishes it again", "request", out.ID, "error", err)
				break
			}
		}
		s.wake()
	}
	return out, nil
}

// GetRequest returns a request of the caller's tenant.
func (s *Service) GetRequest(ctx context.Context, caller *authn.Principal, id string) (Request, error) {
	tenant, err := tenantOf(caller)
	if err != nil {
		return Request{}, err
	}
	return s.store.GetRequest(ctx, tenant, id)
}

// ListRequests lists the caller's tenant's requests, newest first.
func (s *Service) ListRequests(ctx context.Context, caller *authn.Principal, r ListRequest) ([]Request, string, error) {
	tenant, err := tenantOf(caller)
	if err != nil {
		return nil, "", err
	}
	q, err := parseList(r, s.now())
	if err != nil {
		return nil, "", err
	}
	items, err := s.store.ListRequests(ctx, tenant, q)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(items) == q.Size {
		last := items[len(items)-1]
		next = encodeToken(q.fingerprint(), last.CreateTime, last.ID)
	}
	return items, next, nil
}

// Cancellable reports whether a request may be cancelled: ERASURE, SUPPRESS and UNSUPPRESS
// before their effects start (received, suppressing), ACCESS until it ends.
func Cancellable(r Request) bool {
	if r.Kind == KindAccess {
		return r.State.Open()
	}
	return r.State == Received || r.State == Suppressing
}

// CancelRequest cancels a request and removes the suppressions it added, except where another
// request of the tenant holds the same hash.
func (s *Service) CancelRequest(ctx context.Context, caller *authn.Principal, id string) (Request, error) {
	tenant, err := tenantOf(caller)
	if err != nil {
		return Request{}, err
	}
	now := s.now().UTC()
	r, removed, err := s.store.UpdateRequest(ctx, tenant, id, func(r *Request) (bool, *audit.Record, error) {
		if !Cancellable(*r) {
			return false, nil, apperr.New(apperr.FailedPrecondition, "NOT_CANCELLABLE",
				"a %s request in state %s cannot be cancelled", strings.ToUpper(string(r.Kind)), strings.ToUpper(string(r.State)))
		}
		r.State, r.EndTime, r.UpdateTime = Cancelled, &now, now
		return true, takeRecord(ctx, tenant, id), nil
	})
	if err != nil {
		return Request{}, err
	}
	s.unpublish(ctx, tenant, removed)
	return r, nil
}

// unpublish deletes from the bucket those of hashes no request holds any more.
func (s *Service) unpublish(ctx context.Context, tenant string, hashes []string) {
	if len(hashes) == 0 {
		return
	}
	gone, err := s.store.Unheld(ctx, tenant, hashes)
	if err != nil {
		s.logger.Warn("check removed suppressions; the reconcile loop removes them", "error", err)
		return
	}
	for _, h := range gone {
		if err := s.pub.DeleteSuppression(ctx, tenant, h); err != nil {
			s.logger.Warn("remove suppression from the bucket; the reconcile loop removes it", "error", err)
			return
		}
	}
}

// ExtendDeadline extends an open request's deadline once, by 1-60 days, with a reason.
func (s *Service) ExtendDeadline(ctx context.Context, caller *authn.Principal, id string, days int, reason string) (Request, error) {
	tenant, err := tenantOf(caller)
	if err != nil {
		return Request{}, err
	}
	var v apperr.Violations
	if days < 1 || days > MaxExtensionDays {
		v.Add("days", "must be 1-%d", MaxExtensionDays)
	}
	if n := utf8.RuneCountInString(strings.TrimSpace(reason)); n < 1 || n > MaxReasonLen || !utf8.ValidString(reason) {
		v.Add("reason", "must be 1-%d characters", MaxReasonLen)
	}
	if err := v.Err(); err != nil {
		return Request{}, err
	}
	now := s.now().UTC()
	r, _, err := s.store.UpdateRequest(ctx, tenant, id, func(r *Request) (bool, *audit.Record, error) {
		switch {
		case !r.State.Open():
			return false, nil, apperr.New(apperr.FailedPrecondition, "REQUEST_ENDED", "the request has ended")
		case r.Extension != nil:
			return false, nil, apperr.New(apperr.FailedPrecondition, "ALREADY_EXTENDED", "the deadline was already extended once")
		}
		r.Extension = &Extension{Days: days, Reason: strings.TrimSpace(reason), CreateTime: now, ExtendedBy: caller.Subject}
		r.Deadline = r.Deadline.AddDate(0, 0, days)
		r.UpdateTime = now
		return false, takeRecord(ctx, tenant, id), nil
	})
	return r, err
}

// DownloadExport sends a completed ACCESS request's manifest, then its records one chunk at a
// time (memory stays bounded by one chunk whatever the export's size).
func (s *Service) DownloadExport(ctx context.Context, caller *authn.Principal, id string, manifest func(Manifest) error, record func(ExportRecord) error) error {
	tenant, err := tenantOf(caller)
	if err != nil {
		return err
	}
	r, err := s.store.GetRequest(ctx, tenant, id)
	if err != nil {
		return err
	}
	if r.Kind != KindAccess || r.State != Completed || r.Export == nil || !s.now().Before(r.Export.ExpireTime) {
		return apperr.NotFoundf("export of request %s", id)
	}
	if err := manifest(*r.Export); err != nil {
		return err
	}
	participant, seq := "", -1
	for {
		c, ok, err := s.store.NextExportChunk(ctx, id, participant, seq)
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
		participant, seq = c.Participant, c.Seq
		if err := eachRecord(c, record); err != nil {
			return err
		}
	}
}

// GetReceipt returns a completed request's receipt.
func (s *Service) GetReceipt(ctx context.Context, caller *authn.Principal, id string) (receipt.Receipt, error) {
	r, err := s.GetRequest(ctx, caller, id)
	if err != nil {
		return receipt.Receipt{}, err
	}
	if r.Receipt == nil {
		return receipt.Receipt{}, apperr.New(apperr.FailedPrecondition, "NO_RECEIPT", "the request has no receipt: only a completed request has one")
	}
	return *r.Receipt, nil
}

// ReceiptKeys lists the receipt verification keys, newest first.
func (s *Service) ReceiptKeys(ctx context.Context) ([]ReceiptKey, error) { return s.keys.Public(ctx) }

// VerifyReceipt checks a receipt against the receipt keys: "" when valid, else why not.
func (s *Service) VerifyReceipt(ctx context.Context, r receipt.Receipt) (string, error) {
	keys, err := s.keys.Public(ctx)
	if err != nil {
		return "", err
	}
	m := map[string]ed25519.PublicKey{}
	for _, k := range keys {
		m[k.KID] = k.Public
	}
	if _, err := receipt.Verify(r, m); err != nil {
		return err.Error(), nil
	}
	return "", nil
}

// ListSuppressions lists the caller's tenant's suppressions, newest first.
func (s *Service) ListSuppressions(ctx context.Context, caller *authn.Principal, size int32, pageToken string) ([]Suppression, string, error) {
	tenant, err := tenantOf(caller)
	if err != nil {
		return nil, "", err
	}
	var v apperr.Violations
	n := pageSize(size, &v)
	if err := v.Err(); err != nil {
		return nil, "", err
	}
	var after *Suppression
	if pageToken != "" {
		c, err := decodeToken(pageToken, "suppressions")
		if err != nil || !privacy.IsSubjectHash(c.ID) {
			return nil, "", errPageToken
		}
		after = &Suppression{Hash: c.ID, CreateTime: c.CreateTime}
	}
	items, err := s.store.ListSuppressions(ctx, tenant, n, after)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(items) == n {
		last := items[len(items)-1]
		next = encodeToken("suppressions", last.CreateTime, last.Hash)
	}
	return items, next, nil
}

// GetSuppression looks an identifier up by value (hashed here) or by hash.
func (s *Service) GetSuppression(ctx context.Context, caller *authn.Principal, value, hash string) (Suppression, error) {
	tenant, err := tenantOf(caller)
	if err != nil {
		return Suppression{}, err
	}
	var v apperr.Violations
	switch {
	case value != "" && hash != "":
		v.Add("value", "give value or subject_hash, not both")
	case value != "":
		if n := utf8.RuneCountInString(value); n > MaxValueLen || !utf8.ValidString(value) {
			v.Add("value", "must be 1-%d characters", MaxValueLen)
		}
		hash = s.hasher.SubjectHash(tenant, value)
	case hash != "":
		if !privacy.IsSubjectHash(hash) {
			v.Add("subject_hash", "must be 64 lowercase hex digits")
		}
	default:
		v.Add("value", "give value or subject_hash")
	}
	if err := v.Err(); err != nil {
		return Suppression{}, err
	}
	return s.store.GetSuppression(ctx, tenant, hash)
}

// Etag is a policy's etag: its version.
func Etag(p Policy) string { return strconv.Quote("v" + strconv.FormatInt(p.Version, 10)) }

// GetPolicy returns the caller's tenant's policy (the default one until updated).
func (s *Service) GetPolicy(ctx context.Context, caller *authn.Principal) (Policy, error) {
	tenant, err := tenantOf(caller)
	if err != nil {
		return Policy{}, err
	}
	return s.store.GetPolicy(ctx, tenant)
}

// PolicyFields are the fields an update mask may name.
var PolicyFields = []string{"retention_days", "property_rules", "default_property_action", "ip_handling", "user_agent_handling"}

// UpdatePolicy changes the fields in mask (all when empty) to in's, with etag (when given)
// matching the current policy, raises the version and publishes the policy after commit.
func (s *Service) UpdatePolicy(ctx context.Context, caller *authn.Principal, in privacy.Policy, mask []string, etag string) (Policy, error) {
	tenant, err := tenantOf(caller)
	if err != nil {
		return Policy{}, err
	}
	var v apperr.Violations
	if len(mask) == 0 {
		mask = PolicyFields
	}
	for _, f := range mask {
		if !slices.Contains(PolicyFields, f) {
			v.Add("update_mask", "unknown field %q", f)
		}
	}
	validatePolicy(in, &v)
	if err := v.Err(); err != nil {
		return Policy{}, err
	}
	now := s.now().UTC()
	p, err := s.store.UpdatePolicy(ctx, tenant, func(p *Policy) (*audit.Record, error) {
		if etag != "" && etag != Etag(*p) {
			return nil, apperr.New(apperr.Conflict, "ETAG_MISMATCH", "the policy changed since it was read (etag mismatch)")
		}
		for _, f := range mask {
			switch f {
			case "retention_days":
				p.RetentionDays = in.RetentionDays
			case "property_rules":
				p.PropertyRules = in.PropertyRules
			case "default_property_action":
				p.DefaultPropertyAction = in.DefaultPropertyAction
			case "ip_handling":
				p.IP = in.IP
			case "user_agent_handling":
				p.UserAgent = in.UserAgent
			}
		}
		p.Version++
		p.UpdateTime = &now
		return takeRecord(ctx, tenant, "policy"), nil
	})
	if err != nil {
		return Policy{}, err
	}
	if err := s.pub.PutPolicy(ctx, tenant, p.Policy); err != nil {
		s.logger.Warn("publish privacy policy; the reconcile loop publishes it again", "tenant", tenant, "error", err)
	}
	return p, nil
}

// chunkLine is a record's line in a chunk (newline-delimited JSON).
type chunkLine struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// eachRecord decodes a chunk's newline-delimited JSON records.
func eachRecord(c Chunk, fn func(ExportRecord) error) error {
	dec := json.NewDecoder(bytes.NewReader(c.Data))
	for {
		var l chunkLine
		err := dec.Decode(&l)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("export chunk of %s: %w", c.Participant, err)
		}
		if err := fn(ExportRecord{Participant: c.Participant, Type: l.Type, Data: l.Data}); err != nil {
			return err
		}
	}
}

// formatRecord is a record's line in a chunk; data must be a JSON object.
func formatRecord(typ string, data []byte) ([]byte, error) {
	var compact bytes.Buffer
	if err := json.Compact(&compact, data); err != nil {
		return nil, fmt.Errorf("export record: %w", err)
	}
	b, err := json.Marshal(chunkLine{Type: typ, Data: compact.Bytes()})
	if err != nil {
		return nil, fmt.Errorf("export record: %w", err)
	}
	return append(b, '\n'), nil
}
