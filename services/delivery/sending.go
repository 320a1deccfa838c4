package delivery

import (
	"context"
	"strconv"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/quota"
)

// LedgerEntry is a ledger row as the sending API shows it: the recipient's progress and when
// the row was added and last changed.
type LedgerEntry struct {
	Recipient
	CreateTime, UpdateTime time.Time
}

// CampaignProgress is a campaign's sending progress: its ledger's counts, when its first
// recipient was added (zero: none yet) and when its last open row finished (zero while any is
// pending, sending or unknown, or before any was added).
type CampaignProgress struct {
	Counts                Counts
	StartTime, FinishTime time.Time
	// Channel is the campaign's channel once a dispatcher has driven it ("" before).
	Channel Channel
	// QuotaHold, while recipients are pending, is the tenant's hard quota on the channel that
	// holds them (Sending.WithQuotas): they are sent after its reset or a plan change.
	QuotaHold *quota.Exceeded
}

// SendingStore reads the ledger for the sending API.
type SendingStore interface {
	// CampaignProgress returns the campaign's counts and times.
	CampaignProgress(ctx context.Context, tenantID, campaignID string) (CampaignProgress, error)
	// LedgerEntries returns up to limit rows of the campaign with ids above afterID, by id.
	LedgerEntries(ctx context.Context, tenantID, campaignID string, afterID int64, limit int) ([]LedgerEntry, error)
}

// Sending is the read side of sending: what campaigns' ledgers say.
type Sending struct {
	store  SendingStore
	quotas *quota.View
	now    func() time.Time
}

// NewSending returns the sending reports over store.
func NewSending(store SendingStore) *Sending { return &Sending{store: store, now: time.Now} }

// WithQuotas makes CampaignDelivery name the hard quota holding a campaign's pending
// recipients (v: the quotas the senders apply).
func (s *Sending) WithQuotas(v *quota.View) *Sending {
	s.quotas = v
	return s
}

// CampaignDelivery returns the progress of a campaign of the tenant; a campaign never sent
// (or another tenant's) has zero counts.
func (s *Sending) CampaignDelivery(ctx context.Context, tenantID, campaignID string) (CampaignProgress, error) {
	if err := apperr.First(audienceTenant(tenantID), checkContactID("campaign_id", campaignID)); err != nil {
		return CampaignProgress{}, err
	}
	p, err := s.store.CampaignProgress(ctx, tenantID, campaignID)
	if err != nil || s.quotas == nil || p.Channel == "" || p.Counts.ByState[StatePending] == 0 {
		return p, err
	}
	p.QuotaHold = Quotas{View: s.quotas}.held(tenantID, p.Channel.QuotaMeter(), s.now())
	return p, nil
}

// CampaignRecipients returns one page of a campaign's recipients by ledger id and the next
// page's token ("" on the last page). pageSize 0 means DefaultPageSize; above MaxPageSize,
// MaxPageSize.
func (s *Sending) CampaignRecipients(ctx context.Context, tenantID, campaignID string, pageSize int32, pageToken string) ([]LedgerEntry, string, error) {
	var v apperr.Violations
	size := int(pageSize)
	switch {
	case pageSize < 0:
		v.Add("page_size", "must not be negative")
	case pageSize == 0:
		size = DefaultPageSize
	case pageSize > MaxPageSize:
		size = MaxPageSize
	}
	var after int64
	if pageToken != "" {
		n, err := strconv.ParseInt(pageToken, 10, 64)
		if err != nil || n < 1 {
			v.Add("page_token", "is not a token this list returned")
		}
		after = n
	}
	if err := apperr.First(audienceTenant(tenantID), checkContactID("campaign_id", campaignID), v.Err()); err != nil {
		return nil, "", err
	}
	es, err := s.store.LedgerEntries(ctx, tenantID, campaignID, after, size+1)
	if err != nil || len(es) <= size {
		return es, "", err
	}
	es = es[:size]
	return es, es[size-1].ID, nil
}
