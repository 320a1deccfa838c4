// Package postgres is the campaigns service's PostgreSQL store.
package postgres

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/internal/platform/audit"
	auditpg "github.com/campaignmesh/campaignmesh/internal/platform/audit/postgres"
	"github.com/campaignmesh/campaignmesh/internal/platform/pgdb"
	"github.com/campaignmesh/campaignmesh/services/campaigns"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store implements campaigns.Store.
type Store struct{ pool *pgxpool.Pool }

var _ campaigns.Store = (*Store)(nil)

// Open connects to the database at url and applies the migrations. Changes write the audit
// records they are handed into the audit outbox's table, which Open creates too.
func Open(ctx context.Context, url string) (*Store, error) {
	pool, err := pgdb.Open(ctx, url)
	if err != nil {
		return nil, err
	}
	sub, _ := fs.Sub(migrations, "migrations")
	if err = pgdb.Migrate(ctx, pool, sub); err == nil {
		err = auditpg.Migrate(ctx, pool)
	}
	if err != nil {
		pool.Close()
		return nil, err
	}
	return &Store{pool: pool}, nil
}

// Close closes the connection pool.
func (s *Store) Close() { s.pool.Close() }

// Pool exposes the pool to the service's other tables (idempotency keys, audit outbox) and to
// tests.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

const campaignCols = `id::text, tenant_id, name, description, channel, state, schedule_start, schedule_end, time_zone,
	start_time, end_time, budget_total_micros, budget_daily_micros, budget_currency, budget_pacing, goal_event,
	variants, tags, labels, creator, revision, exhausted, resume_time, state_time, launch_time, create_time, update_time`

type variantJSON struct {
	Name   string `json:"name"`
	Weight int    `json:"weight"`
}

func scanCampaign(row pgx.CollectableRow) (campaigns.Campaign, error) {
	var (
		c                   campaigns.Campaign
		start, end          string
		variants, labels    []byte
		channel, state      string
		pacing, exhausted   string
		startTime, endTime  *time.Time
		resumeTime          *time.Time
		total, daily        int64
		currency, timeZone  string
		tags                []string
		creator, goal, desc string
	)
	err := row.Scan(&c.ID, &c.TenantID, &c.Name, &desc, &channel, &state, &start, &end, &timeZone,
		&startTime, &endTime, &total, &daily, &currency, &pacing, &goal,
		&variants, &tags, &labels, &creator, &c.Revision, &exhausted, &resumeTime, &c.StateTime, &c.LaunchTime, &c.CreateTime, &c.UpdateTime)
	if err != nil {
		return c, err
	}
	c.Description, c.Channel, c.State, c.Goal, c.Creator = desc, campaigns.Channel(channel), campaigns.State(state), goal, creator
	c.Schedule = campaigns.Schedule{TimeZone: timeZone, StartTime: startTime, EndTime: endTime}
	if start != "" {
		if c.Schedule.Start, err = campaigns.ParseWallClock(start); err != nil {
			return c, fmt.Errorf("campaign %s: stored schedule start: %w", c.ID, err)
		}
	}
	if end != "" {
		if c.Schedule.End, err = campaigns.ParseWallClock(end); err != nil {
			return c, fmt.Errorf("campaign %s: stored schedule end: %w", c.ID, err)
		}
	}
	c.Budget = campaigns.Budget{TotalMicros: total, DailyMicros: daily, Currency: currency, Pacing: campaigns.Pacing(pacing)}
	var vs []variantJSON
	if err := json.Unmarshal(variants, &vs); err != nil {
		return c, fmt.Errorf("campaign %s: stored variants: %w", c.ID, err)
	}
	for _, v := range vs {
		c.Variants = append(c.Variants, campaigns.Variant{Name: v.Name, Weight: v.Weight})
	}
	if err := json.Unmarshal(labels, &c.Labels); err != nil {
		return c, fmt.Errorf("campaign %s: stored labels: %w", c.ID, err)
	}
	if len(c.Labels) == 0 {
		c.Labels = nil
	}
	if len(tags) > 0 {
		c.Tags = tags
	}
	c.Exhausted, c.ResumeTime = campaigns.Exhaustion(exhausted), resumeTime
	return c, nil
}

// values are the columns a user or the scheduler may change, in the order of writeCols.
func values(c campaigns.Campaign) ([]any, error) {
	vs := make([]variantJSON, len(c.Variants))
	for i, v := range c.Variants {
		vs[i] = variantJSON(v)
	}
	variants, err := json.Marshal(vs)
	if err != nil {
		return nil, fmt.Errorf("encode variants: %w", err)
	}
	labels := c.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	lb, err := json.Marshal(labels)
	if err != nil {
		return nil, fmt.Errorf("encode labels: %w", err)
	}
	tags := c.Tags
	if tags == nil {
		tags = []string{}
	}
	return []any{c.Name, c.Description, string(c.Channel), string(c.State), c.Schedule.Start.String(), c.Schedule.End.String(),
		c.Schedule.TimeZone, c.Schedule.StartTime, c.Schedule.EndTime, c.Budget.TotalMicros, c.Budget.DailyMicros,
		c.Budget.Currency, string(c.Budget.Pacing), c.Goal, string(variants), tags, string(lb),
		string(c.Exhausted), c.ResumeTime, c.StateTime, c.LaunchTime}, nil
}

const writeCols = `name, description, channel, state, schedule_start, schedule_end, time_zone, start_time, end_time,
	budget_total_micros, budget_daily_micros, budget_currency, budget_pacing, goal_event, variants, tags, labels,
	exhausted, resume_time, state_time, launch_time`

// CreateCampaign implements campaigns.Store.
func (s *Store) CreateCampaign(ctx context.Context, c campaigns.Campaign, rec *audit.Record) (campaigns.Campaign, error) {
	args, err := values(c)
	if err != nil {
		return campaigns.Campaign{}, err
	}
	args = append(args, c.TenantID, c.Creator)
	var out campaigns.Campaign
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `INSERT INTO campaigns (`+writeCols+`, tenant_id, creator)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15::jsonb, $16, $17::jsonb, $18, $19, $20, $21, $22, $23)
			RETURNING `+campaignCols, args...)
		if out, err = oneCampaign(rows, err, "new"); err != nil {
			return err
		}
		return insertRecord(ctx, tx, rec, "", out.ID)
	})
	if err != nil {
		return campaigns.Campaign{}, err
	}
	return out, nil
}

// insertRecord writes rec, when there is one, in tx: with id as its id when not empty (the
// change's own row's) and with resource when not empty (the id a new campaign was given).
func insertRecord(ctx context.Context, tx pgx.Tx, rec *audit.Record, id, resource string) error {
	if rec == nil {
		return nil
	}
	r := *rec
	if id != "" {
		r.ID = id
	}
	if resource != "" {
		r.Resource = resource
	}
	return auditpg.InsertTx(ctx, tx, r)
}

func oneCampaign(rows pgx.Rows, err error, id string) (campaigns.Campaign, error) {
	if err != nil {
		return campaigns.Campaign{}, fmt.Errorf("query campaign: %w", err)
	}
	c, err := pgx.CollectExactlyOneRow(rows, scanCampaign)
	if errors.Is(err, pgx.ErrNoRows) {
		return campaigns.Campaign{}, apperr.NotFoundf("campaign %s", id)
	}
	if err != nil {
		return campaigns.Campaign{}, fmt.Errorf("read campaign %s: %w", id, err)
	}
	return c, nil
}

// GetCampaign implements campaigns.Store.
func (s *Store) GetCampaign(ctx context.Context, tenantID, id string) (campaigns.Campaign, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+campaignCols+` FROM campaigns WHERE tenant_id = $1 AND id = $2::uuid`, tenantID, id)
	return oneCampaign(rows, err, id)
}

// ListCampaigns implements campaigns.Store. Pages are keyset pages on the order's key and id:
// a row inserted between two pages sorts either before the cursor (and is not shown) or
// after it (and is shown once) — nothing already listed moves.
func (s *Store) ListCampaigns(ctx context.Context, tenantID string, q campaigns.ListQuery) ([]campaigns.Campaign, error) {
	where := []string{"tenant_id = $1"}
	args := []any{tenantID}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if len(q.States) > 0 {
		states := make([]string, len(q.States))
		for i, st := range q.States {
			states[i] = string(st)
		}
		where = append(where, "state = ANY("+arg(states)+"::text[])")
	}
	if len(q.Channels) > 0 {
		channels := make([]string, len(q.Channels))
		for i, ch := range q.Channels {
			channels[i] = string(ch)
		}
		where = append(where, "channel = ANY("+arg(channels)+"::text[])")
	}
	if q.Tag != "" {
		where = append(where, "tags @> ARRAY["+arg(q.Tag)+"::text]")
	}
	if q.NamePrefix != "" {
		where = append(where, "starts_with(lower(name), lower("+arg(q.NamePrefix)+"::text))")
	}
	if q.WindowEnd != nil {
		where = append(where, "start_time < "+arg(*q.WindowEnd))
	}
	if q.WindowStart != nil {
		where = append(where, "start_time IS NOT NULL AND (end_time IS NULL OR end_time > "+arg(*q.WindowStart)+")")
	}
	cmp, dir := ">", "ASC"
	if q.Order.Desc {
		cmp, dir = "<", "DESC"
	}
	var order string
	switch q.Order.Field {
	case campaigns.OrderName:
		order = `name COLLATE "C" ` + dir + `, id ` + dir
		if q.After != nil {
			where = append(where, `(name COLLATE "C", id) `+cmp+` (`+arg(q.After.Name)+`::text COLLATE "C", `+arg(q.After.ID)+`::uuid)`)
		}
	default:
		order = `create_time ` + dir + `, id ` + dir
		if q.After != nil {
			where = append(where, `(create_time, id) `+cmp+` (`+arg(q.After.CreateTime)+`::timestamptz, `+arg(q.After.ID)+`::uuid)`)
		}
	}
	sql := `SELECT ` + campaignCols + ` FROM campaigns WHERE ` + strings.Join(where, " AND ") +
		` ORDER BY ` + order + ` LIMIT ` + arg(q.Size)
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("list campaigns: %w", err)
	}
	cs, err := pgx.CollectRows(rows, scanCampaign)
	if err != nil {
		return nil, fmt.Errorf("list campaigns: %w", err)
	}
	return cs, nil
}

// UpdateCampaign implements campaigns.Store.
func (s *Store) UpdateCampaign(ctx context.Context, tenantID, id string, change campaigns.ChangeFunc) (campaigns.Campaign, *campaigns.Transition, error) {
	var out campaigns.Campaign
	var tr *campaigns.Transition
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+campaignCols+` FROM campaigns WHERE tenant_id = $1 AND id = $2::uuid FOR UPDATE`, tenantID, id)
		c, err := oneCampaign(rows, err, id)
		if err != nil {
			return err
		}
		out, tr, err = apply(ctx, tx, c, change)
		return err
	})
	if err != nil {
		return campaigns.Campaign{}, nil, err
	}
	return out, tr, nil
}

// apply runs change on the locked campaign c and writes the result and its transition.
func apply(ctx context.Context, tx pgx.Tx, c campaigns.Campaign, change campaigns.ChangeFunc) (campaigns.Campaign, *campaigns.Transition, error) {
	from := c.State
	tr, rec, err := change(&c)
	if err != nil {
		return campaigns.Campaign{}, nil, err
	}
	if (tr == nil) != (c.State == from) {
		return campaigns.Campaign{}, nil, fmt.Errorf("campaign %s: state %s -> %s without a matching transition", c.ID, from, c.State)
	}
	args, err := values(c)
	if err != nil {
		return campaigns.Campaign{}, nil, err
	}
	args = append(args, c.TenantID, c.ID, c.Revision)
	// revision = $24 re-checks under the lock: nothing can have changed, but a bug that lost
	// the lock must fail loudly rather than overwrite.
	rows, err := tx.Query(ctx, `UPDATE campaigns SET (`+writeCols+`, revision, update_time) =
		($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15::jsonb, $16, $17::jsonb, $18, $19, $20, $21, revision + 1, clock_timestamp())
		WHERE tenant_id = $22 AND id = $23::uuid AND revision = $24 RETURNING `+campaignCols, args...)
	updated, err := oneCampaign(rows, err, c.ID)
	if err != nil {
		return campaigns.Campaign{}, nil, fmt.Errorf("update campaign %s: %w", c.ID, err)
	}
	if tr == nil {
		return updated, nil, insertRecord(ctx, tx, rec, "", "")
	}
	tr.TenantID, tr.CampaignID = c.TenantID, c.ID
	err = tx.QueryRow(ctx, `INSERT INTO campaign_transitions (tenant_id, campaign_id, from_state, to_state, trigger, actor, effective_time)
		VALUES ($1, $2::uuid, $3, $4, $5, $6, $7) RETURNING seq, id::text, record_time`,
		tr.TenantID, tr.CampaignID, string(tr.From), string(tr.To), tr.Trigger, tr.Actor, tr.EffectiveTime).
		Scan(&tr.Seq, &tr.ID, &tr.RecordTime)
	if err != nil {
		return campaigns.Campaign{}, nil, fmt.Errorf("record transition of campaign %s: %w", c.ID, err)
	}
	// The audit record of a transition carries the transition's id.
	return updated, tr, insertRecord(ctx, tx, rec, tr.ID, "")
}

// DeleteCampaign implements campaigns.Store.
func (s *Store) DeleteCampaign(ctx context.Context, tenantID, id string, check func(campaigns.Campaign) error, rec *audit.Record) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+campaignCols+` FROM campaigns WHERE tenant_id = $1 AND id = $2::uuid FOR UPDATE`, tenantID, id)
		c, err := oneCampaign(rows, err, id)
		if err != nil {
			return err
		}
		if err := check(c); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM campaigns WHERE tenant_id = $1 AND id = $2::uuid`, tenantID, id); err != nil {
			return fmt.Errorf("delete campaign %s: %w", id, err)
		}
		return insertRecord(ctx, tx, rec, "", "")
	})
}

// ListTransitions implements campaigns.Store.
func (s *Store) ListTransitions(ctx context.Context, tenantID, campaignID string, afterSeq int64, limit int) ([]campaigns.Transition, error) {
	rows, err := s.pool.Query(ctx, `SELECT seq, id::text, tenant_id, campaign_id::text, from_state, to_state, trigger, actor,
		effective_time, record_time FROM campaign_transitions
		WHERE tenant_id = $1 AND campaign_id = $2::uuid AND seq > $3 ORDER BY seq LIMIT $4`, tenantID, campaignID, afterSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("list transitions: %w", err)
	}
	ts, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (campaigns.Transition, error) {
		var t campaigns.Transition
		var from, to string
		err := row.Scan(&t.Seq, &t.ID, &t.TenantID, &t.CampaignID, &from, &to, &t.Trigger, &t.Actor, &t.EffectiveTime, &t.RecordTime)
		t.From, t.To = campaigns.State(from), campaigns.State(to)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("list transitions: %w", err)
	}
	return ts, nil
}

// dueConds select, for each kind, the campaigns due at $1; dueOrders put the oldest due first.
var (
	dueConds = map[campaigns.DueKind]string{
		campaigns.DueStart:  `state = 'scheduled' AND start_time <= $1`,
		campaigns.DueEnd:    `state IN ('active', 'paused', 'budget_exhausted') AND end_time <= $1`,
		campaigns.DueResume: `state = 'budget_exhausted' AND exhausted = 'daily' AND resume_time <= $1`,
	}
	dueOrders = map[campaigns.DueKind]string{
		campaigns.DueStart:  `start_time, id`,
		campaigns.DueEnd:    `end_time, id`,
		campaigns.DueResume: `resume_time, id`,
	}
)

// CountDue implements campaigns.Store. A plain read: it waits for no lock.
func (s *Store) CountDue(ctx context.Context, now time.Time) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM campaigns WHERE (`+dueConds[campaigns.DueStart]+`) OR (`+
		dueConds[campaigns.DueEnd]+`) OR (`+dueConds[campaigns.DueResume]+`)`, now).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count due campaigns: %w", err)
	}
	return n, nil
}

// ApplyDue implements campaigns.Store. Another scheduler's transaction either holds a due row
// (it is skipped here) or has committed its change (the row no longer matches: PostgreSQL
// re-checks the condition on the newest row version before locking it), so every transition
// is made once.
func (s *Store) ApplyDue(ctx context.Context, kind campaigns.DueKind, now time.Time, limit int, change campaigns.ChangeFunc) ([]campaigns.Applied, error) {
	cond, ok := dueConds[kind]
	if !ok {
		return nil, fmt.Errorf("unknown due kind %q", kind)
	}
	var applied []campaigns.Applied
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		applied = nil
		rows, err := tx.Query(ctx, `SELECT `+campaignCols+` FROM campaigns WHERE `+cond+` ORDER BY `+dueOrders[kind]+` LIMIT $2 FOR UPDATE SKIP LOCKED`, now, limit)
		if err != nil {
			return fmt.Errorf("claim due campaigns: %w", err)
		}
		cs, err := pgx.CollectRows(rows, scanCampaign)
		if err != nil {
			return fmt.Errorf("claim due campaigns: %w", err)
		}
		for _, c := range cs {
			updated, tr, err := apply(ctx, tx, c, change)
			switch {
			case errors.Is(err, campaigns.ErrUnchanged):
				continue
			case err != nil:
				return err
			case tr == nil:
				return fmt.Errorf("campaign %s: due change made no transition", c.ID)
			}
			applied = append(applied, campaigns.Applied{Campaign: updated, Transition: *tr})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return applied, nil
}

// BudgetCandidates implements campaigns.Store.
func (s *Store) BudgetCandidates(ctx context.Context, afterID string, limit int) ([]campaigns.Campaign, error) {
	if afterID == "" {
		afterID = "00000000-0000-0000-0000-000000000000"
	}
	rows, err := s.pool.Query(ctx, `SELECT `+campaignCols+` FROM campaigns
		WHERE state IN ('active', 'budget_exhausted') AND budget_total_micros > 0 AND id > $1::uuid
		ORDER BY id LIMIT $2`, afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("list budget candidates: %w", err)
	}
	cs, err := pgx.CollectRows(rows, scanCampaign)
	if err != nil {
		return nil, fmt.Errorf("list budget candidates: %w", err)
	}
	return cs, nil
}

// DeliveryCampaigns implements campaigns.Store over the partial index of active
// campaigns (campaigns_budgeted covers every active one, with or without a budget).
func (s *Store) DeliveryCampaigns(ctx context.Context, q campaigns.DeliveryQuery) ([]campaigns.Campaign, error) {
	channels := make([]string, len(campaigns.DeliveryChannels))
	for i, ch := range campaigns.DeliveryChannels {
		channels[i] = string(ch)
	}
	ids := q.IDs
	if ids == nil {
		ids = []string{}
	}
	after := q.AfterID
	if after == "" {
		after = "00000000-0000-0000-0000-000000000000"
	}
	rows, err := s.pool.Query(ctx, `SELECT `+campaignCols+` FROM campaigns
		WHERE state = 'active' AND channel = ANY($1::text[])
		  AND ($2 = '' OR tenant_id = $2)
		  AND (cardinality($3::uuid[]) = 0 OR id = ANY($3::uuid[]))
		  AND (tenant_id, id) > ($4, $5::uuid)
		ORDER BY tenant_id, id LIMIT $6`,
		channels, q.TenantID, ids, q.AfterTenant, after, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("list delivery campaigns: %w", err)
	}
	cs, err := pgx.CollectRows(rows, scanCampaign)
	if err != nil {
		return nil, fmt.Errorf("list delivery campaigns: %w", err)
	}
	return cs, nil
}
