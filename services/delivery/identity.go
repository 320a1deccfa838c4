package delivery

import (
	"context"
	"regexp"
	"strings"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// Limits of a sender identity's fields.
const (
	MaxSenderNameLen    = 100
	MaxSenderIdentities = 50
)

var messagingServiceSID = regexp.MustCompile(`^MG[0-9a-fA-F]{32}$`)

// SenderIdentity is who a tenant's messages come from on one channel: for email a from
// address (with a display name and an optional reply-to), for SMS a Twilio messaging service
// or a from number. An email identity must be verified before content may use it.
//
// Verified is set by an administrator through VerifySenderIdentity: this service checks no DNS
// records (SPF, DKIM, a confirmation mail) itself — that is the provider's sender verification,
// which an operator confirms by hand before marking the identity verified.
type SenderIdentity struct {
	ID       string
	TenantID string
	Channel  Channel
	// FromEmail, FromName and ReplyTo are an email identity's.
	FromEmail, FromName, ReplyTo string
	// MessagingServiceSID or FromNumber (E.164) is an SMS identity's (exactly one).
	MessagingServiceSID, FromNumber string
	Verified                        bool
	CreateTime, UpdateTime          time.Time
}

// normalize trims the fields and lower-cases addresses, as contacts store them.
func (s *SenderIdentity) normalize() {
	s.FromEmail, s.ReplyTo = NormalizeEmail(s.FromEmail), NormalizeEmail(s.ReplyTo)
	s.FromName = strings.TrimSpace(s.FromName)
	s.MessagingServiceSID, s.FromNumber = strings.TrimSpace(s.MessagingServiceSID), NormalizePhone(s.FromNumber)
}

func (s *SenderIdentity) validate() error {
	var v apperr.Violations
	switch s.Channel {
	case ChannelEmail:
		if s.FromEmail == "" {
			v.Add("sender_identity.from_email", "is required for an email identity")
		}
		validateEmail(&v, "sender_identity.from_email", s.FromEmail)
		validateEmail(&v, "sender_identity.reply_to", s.ReplyTo)
		if len(s.FromName) > MaxSenderNameLen || !printableText(s.FromName) || strings.ContainsAny(s.FromName, "<>\"") {
			v.Add("sender_identity.from_name", "must be at most %d printable characters without <, > or \"", MaxSenderNameLen)
		}
		if s.MessagingServiceSID != "" || s.FromNumber != "" {
			v.Add("sender_identity", "an email identity has no messaging service or from number")
		}
	case ChannelSMS:
		if (s.MessagingServiceSID == "") == (s.FromNumber == "") {
			v.Add("sender_identity", "an SMS identity needs exactly one of messaging_service_sid and from_number")
		}
		if s.MessagingServiceSID != "" && !messagingServiceSID.MatchString(s.MessagingServiceSID) {
			v.Add("sender_identity.messaging_service_sid", "must be a Twilio messaging service SID (MG and 32 hex digits)")
		}
		validatePhone(&v, "sender_identity.from_number", s.FromNumber)
		if s.FromEmail != "" || s.FromName != "" || s.ReplyTo != "" {
			v.Add("sender_identity", "an SMS identity has no email fields")
		}
	default:
		v.Add("sender_identity.channel", "must be email or sms")
	}
	return v.Err()
}

// CreateSenderIdentity adds an identity to the tenant, unverified. Audited.
func (m *Messages) CreateSenderIdentity(ctx context.Context, tenantID string, s SenderIdentity) (SenderIdentity, error) {
	if err := audienceTenant(tenantID); err != nil {
		return SenderIdentity{}, err
	}
	s.normalize()
	if err := s.validate(); err != nil {
		return SenderIdentity{}, err
	}
	s.ID, s.TenantID, s.Verified = "", tenantID, false
	return m.store.CreateSenderIdentity(ctx, s, MaxSenderIdentities, takeAudienceRecord(ctx, tenantID, ""))
}

// ListSenderIdentities returns the tenant's identities (at most MaxSenderIdentities), oldest
// first.
func (m *Messages) ListSenderIdentities(ctx context.Context, tenantID string) ([]SenderIdentity, error) {
	if err := audienceTenant(tenantID); err != nil {
		return nil, err
	}
	return m.store.ListSenderIdentities(ctx, tenantID)
}

// VerifySenderIdentity marks an identity verified (idempotent). Audited.
func (m *Messages) VerifySenderIdentity(ctx context.Context, tenantID, id string) (SenderIdentity, error) {
	if err := apperr.First(audienceTenant(tenantID), checkContactID("id", id)); err != nil {
		return SenderIdentity{}, err
	}
	s, err := m.store.VerifySenderIdentity(ctx, tenantID, id, takeAudienceRecord(ctx, tenantID, "sender_identities/"+id))
	if err == nil {
		m.forgetIdentity(id)
	}
	return s, err
}

// DeleteSenderIdentity deletes an identity no campaign's content uses (else
// FAILED_PRECONDITION). Audited.
func (m *Messages) DeleteSenderIdentity(ctx context.Context, tenantID, id string) error {
	if err := apperr.First(audienceTenant(tenantID), checkContactID("id", id)); err != nil {
		return err
	}
	err := m.store.DeleteSenderIdentity(ctx, tenantID, id, takeAudienceRecord(ctx, tenantID, "sender_identities/"+id))
	if err == nil {
		m.forgetIdentity(id)
	}
	return err
}
