package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

// filterJSON is a segment's filter as stored: a shape of its own, so that renaming a Go field
// never changes what is on disk.
type filterJSON struct {
	Attributes []attrJSON     `json:"attributes,omitempty"`
	Consent    []string       `json:"consent_granted,omitempty"`
	Behaviour  *behaviourJSON `json:"behaviour,omitempty"`
}

type attrJSON struct {
	Key    string   `json:"key"`
	Op     string   `json:"op"`
	Values []string `json:"values,omitempty"`
}

type behaviourJSON struct {
	EventType  string `json:"event_type"`
	CampaignID string `json:"campaign_id,omitempty"`
	WithinDays int    `json:"within_days"`
}

func encodeFilter(f delivery.Filter) (string, error) {
	var fj filterJSON
	for _, a := range f.Attributes {
		fj.Attributes = append(fj.Attributes, attrJSON{Key: a.Key, Op: string(a.Op), Values: a.Values})
	}
	for _, ch := range f.ConsentGranted {
		fj.Consent = append(fj.Consent, string(ch))
	}
	if b := f.Behaviour; b != nil {
		fj.Behaviour = &behaviourJSON{EventType: b.EventType, CampaignID: b.CampaignID, WithinDays: b.WithinDays}
	}
	out, err := json.Marshal(fj)
	if err != nil {
		return "", fmt.Errorf("encode filter: %w", err)
	}
	return string(out), nil
}

func decodeFilter(b []byte) (delivery.Filter, error) {
	var fj filterJSON
	var f delivery.Filter
	if err := json.Unmarshal(b, &fj); err != nil {
		return f, err
	}
	for _, a := range fj.Attributes {
		f.Attributes = append(f.Attributes, delivery.AttributeCondition{Key: a.Key, Op: delivery.AttributeOp(a.Op), Values: a.Values})
	}
	for _, ch := range fj.Consent {
		f.ConsentGranted = append(f.ConsentGranted, delivery.Channel(ch))
	}
	if b := fj.Behaviour; b != nil {
		f.Behaviour = &delivery.BehaviourCondition{EventType: b.EventType, CampaignID: b.CampaignID, WithinDays: b.WithinDays}
	}
	return f, nil
}

const segmentCols = `id::text, tenant_id, name, filter, create_time, update_time`

func scanSegment(row pgx.CollectableRow) (delivery.Segment, error) {
	var s delivery.Segment
	var filter []byte
	if err := row.Scan(&s.ID, &s.TenantID, &s.Name, &filter, &s.CreateTime, &s.UpdateTime); err != nil {
		return s, err
	}
	f, err := decodeFilter(filter)
	if err != nil {
		return s, fmt.Errorf("segment %s: stored filter: %w", s.ID, err)
	}
	s.Filter = f
	return s, nil
}

// CreateSegment implements delivery.AudienceStore.
func (s *Store) CreateSegment(ctx context.Context, seg delivery.Segment, rec *audit.Record) (delivery.Segment, error) {
	filter, err := encodeFilter(seg.Filter)
	if err != nil {
		return delivery.Segment{}, err
	}
	var out delivery.Segment
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `INSERT INTO segments (tenant_id, name, filter) VALUES ($1, $2, $3::jsonb) RETURNING `+segmentCols,
			seg.TenantID, seg.Name, filter)
		if err != nil {
			return fmt.Errorf("create segment: %w", err)
		}
		if out, err = pgx.CollectExactlyOneRow(rows, scanSegment); err != nil {
			return uniqueViolation(fmt.Errorf("create segment: %w", err))
		}
		return insertRecord(ctx, tx, rec, out.ID)
	})
	if err != nil {
		return delivery.Segment{}, err
	}
	return out, nil
}

// GetSegment implements delivery.AudienceStore.
func (s *Store) GetSegment(ctx context.Context, tenantID, id string) (delivery.Segment, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+segmentCols+` FROM segments WHERE tenant_id = $1 AND id = $2::uuid`, tenantID, id)
	if err != nil {
		return delivery.Segment{}, fmt.Errorf("get segment %s: %w", id, err)
	}
	seg, err := pgx.CollectExactlyOneRow(rows, scanSegment)
	if errors.Is(err, pgx.ErrNoRows) {
		return delivery.Segment{}, apperr.NotFoundf("segment %s", id)
	}
	if err != nil {
		return delivery.Segment{}, fmt.Errorf("get segment %s: %w", id, err)
	}
	return seg, nil
}

// ListSegments implements delivery.AudienceStore.
func (s *Store) ListSegments(ctx context.Context, tenantID, afterID string, limit int) ([]delivery.Segment, error) {
	if afterID == "" {
		afterID = "00000000-0000-0000-0000-000000000000"
	}
	rows, err := s.pool.Query(ctx, `SELECT `+segmentCols+` FROM segments WHERE tenant_id = $1 AND id > $2::uuid ORDER BY id LIMIT $3`,
		tenantID, afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("list segments: %w", err)
	}
	segs, err := pgx.CollectRows(rows, scanSegment)
	if err != nil {
		return nil, fmt.Errorf("list segments: %w", err)
	}
	return segs, nil
}

// UpdateSegment implements delivery.AudienceStore.
func (s *Store) UpdateSegment(ctx context.Context, seg delivery.Segment, rec *audit.Record) (delivery.Segment, error) {
	filter, err := encodeFilter(seg.Filter)
	if err != nil {
		return delivery.Segment{}, err
	}
	var out delivery.Segment
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `UPDATE segments SET name = $3, filter = $4::jsonb, update_time = clock_timestamp()
			WHERE tenant_id = $1 AND id = $2::uuid RETURNING `+segmentCols, seg.TenantID, seg.ID, seg.Name, filter)
		if err != nil {
			return fmt.Errorf("update segment %s: %w", seg.ID, err)
		}
		out, err = pgx.CollectExactlyOneRow(rows, scanSegment)
		if errors.Is(err, pgx.ErrNoRows) {
			return apperr.NotFoundf("segment %s", seg.ID)
		}
		if err != nil {
			return uniqueViolation(fmt.Errorf("update segment %s: %w", seg.ID, err))
		}
		return insertRecord(ctx, tx, rec, "")
	})
	if err != nil {
		return delivery.Segment{}, err
	}
	return out, nil
}

// DeleteSegment implements delivery.AudienceStore.
func (s *Store) DeleteSegment(ctx context.Context, tenantID, id string, rec *audit.Record) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM segments WHERE tenant_id = $1 AND id = $2::uuid`, tenantID, id)
		if err != nil {
			return fmt.Errorf("delete segment %s: %w", id, err)
		}
		if tag.RowsAffected() == 0 {
			return apperr.NotFoundf("segment %s", id)
		}
		return insertRecord(ctx, tx, rec, "")
	})
}
