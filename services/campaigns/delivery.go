package campaigns

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// DeliveryChannels are the channels the delivery service sends on.
var DeliveryChannels = []Channel{ChannelEmail, ChannelSMS}

// DeliveryQuery selects active email and SMS campaigns of every tenant, or of one tenant
// (and some of its campaigns), by (tenant, id), after a cursor.
type DeliveryQuery struct {
	TenantID string
	IDs      []string
	// AfterTenant and AfterID: the last campaign of the previous page ("" for the start).
	AfterTenant, AfterID string
	Limit                int
}

// DeliveryRequest is ListDeliveryCampaigns' input as the API gives it.
type DeliveryRequest struct {
	PageSize  int32
	PageToken string
	TenantID  string
	IDs       []string
}

type deliveryToken struct {
	F string `json:"f"`
	T string `json:"t"`
	I string `json:"i"`
}

// deliveryFingerprint binds a page token to its filters.
func deliveryFingerprint(r DeliveryRequest) string {
	return r.TenantID + "\x00" + strings.Join(r.IDs, ",")
}

// ListDeliveryCampaigns returns one page of the active email and SMS campaigns, across
// tenants unless the request names one, and the next page's token ("" on the last page).
// Only the delivery service calls it (its access rule): it is not scoped to a caller's tenant.
func (s *Service) ListDeliveryCampaigns(ctx context.Context, r DeliveryRequest) ([]Campaign, string, error) {
	var v apperr.Violations
	size := int(r.PageSize)
	switch {
	case r.PageSize < 0:
		v.Add("page_size", "must not be negative")
	case r.PageSize == 0 || r.PageSize > MaxPageSize:
		size = MaxPageSize
	}
	if len(r.IDs) > MaxPageSize {
		v.Add("campaign_ids", "at most %d", MaxPageSize)
	}
	if len(r.IDs) > 0 && r.TenantID == "" {
		v.Add("campaign_ids", "require tenant_id")
	}
	if len(r.TenantID) > 200 {
		v.Add("tenant_id", "at most 200 characters")
	}
	for _, id := range r.IDs {
		if !uuidPattern.MatchString(id) {
			v.Add("campaign_ids", "must be campaign ids")
			break
		}
	}
	if err := v.Err(); err != nil {
		return nil, "", err
	}
	q := DeliveryQuery{TenantID: r.TenantID, IDs: r.IDs, Limit: size}
	fp := deliveryFingerprint(r)
	if r.PageToken != "" {
		var tok deliveryToken
		raw, err := base64.RawURLEncoding.DecodeString(r.PageToken)
		if err == nil && len(raw) <= 2048 {
			err = json.Unmarshal(raw, &tok)
		}
		if err != nil || len(raw) > 2048 || tok.F != fp || !uuidPattern.MatchString(tok.I) {
			return nil, "", apperr.New(apperr.Invalid, "INVALID_PAGE_TOKEN", "invalid page token")
		}
		q.AfterTenant, q.AfterID = tok.T, tok.I
	}
	cs, err := s.store.DeliveryCampaigns(ctx, q)
	if err != nil || len(cs) < size {
		return cs, "", err
	}
	last := cs[len(cs)-1]
	b, _ := json.Marshal(deliveryToken{F: fp, T: last.TenantID, I: last.ID})
	return cs, base64.RawURLEncoding.EncodeToString(b), nil
}
