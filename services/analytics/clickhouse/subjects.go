package clickhouse

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/campaignmesh/campaignmesh/services/analytics"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse/migrations"
)

// The data-subject store (analytics.SubjectStore): a subject's linked ids, its events, their
// deletion and the rebuild of the rollup hours they were counted in. Everything runs on every
// shard's own tables, as the writer user (the reader's profile caps result rows, which an
// export of a large subject exceeds; and deletions are the writer's), never through the
// Distributed tables, which take no mutation.

var _ analytics.SubjectStore = (*Queries)(nil)

// subjectQueryBytes is the query size the subject queries may reach: up to 1,000 identifiers of
// 256 characters each (1 KiB in UTF-8) twice over, more than max_query_size's 256 KiB default.
const subjectQueryBytes = 8 << 20

// mutationListBytes bounds the literal list of one mutation: a batch whose identifiers exceed it
// is deleted with several (a mutation's text is kept on disk and parsed again by every merge).
const mutationListBytes = 1 << 20

// mutationTimeout bounds the wait for one erasure mutation; past it the erasure is tried again.
const mutationTimeout = 30 * time.Minute

// writers are the writer user's connections to every shard, in shard order.
func (q *Queries) writers() []driver.Conn {
	if len(q.shards) > 0 {
		return q.shards
	}
	return []driver.Conn{q.writer}
}

// subjectSettings allows the subject queries' long IN lists.
func subjectSettings(ctx context.Context) context.Context {
	return ch.Context(ctx, ch.WithSettings(ch.Settings{"max_query_size": subjectQueryBytes}))
}

// literal is s as a ClickHouse string literal. Identifiers are printable UTF-8
// (analytics.checkSubject), so only the quote and the backslash need escaping.
func literal(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// tupleList is a literal list of tuples, each given as its SQL; a single tuple is written twice,
// so the list never reads as one tuple of values.
func tupleList(tuples []string) string {
	if len(tuples) == 1 {
		return tuples[0] + ", " + tuples[0]
	}
	return strings.Join(tuples, ", ")
}

// chunks splits tuples into lists of at most max bytes (a tuple longer than max alone).
func chunks(tuples []string, max int) [][]string {
	var out [][]string
	size := 0
	for _, t := range tuples {
		if len(out) == 0 || size+len(t) > max {
			out = append(out, nil)
			size = 0
		}
		out[len(out)-1] = append(out[len(out)-1], t)
		size += len(t) + 2
	}
	return out
}

// subjectTuples are subjects as (tenant, value) literals.
func subjectTuples(subjects []analytics.Subject) []string {
	out := make([]string, len(subjects))
	for i, s := range subjects {
		out[i] = "(" + literal(s.Tenant) + ", " + literal(s.Value) + ")"
	}
	return out
}

// subjectCondition selects the events of the subjects of list (subjectTuples): a tenant's
// events whose user_id or anonymous_id is one of its values. The tenant is never empty, so
// the writer's commit rows never match.
func subjectCondition(list string) string {
	return "((tenant_id, user_id) IN (" + list + ") OR (tenant_id, anonymous_id) IN (" + list + "))"
}

// valueList is values as a literal list for tenant's subjects.
func valueList(values []string) string {
	quoted := make([]string, len(values))
	for i, v := range values {
		quoted[i] = literal(v)
	}
	return strings.Join(quoted, ", ")
}

// Links implements analytics.SubjectStore on every shard: one scan of the tenant's events per
// shard for every identifier asked (the events are not sorted by subject, so a look-up costs a
// scan whatever the number of identifiers: the participant batches its callers' look-ups).
func (q *Queries) Links(ctx context.Context, tenant string, userIDs, anonymousIDs []string, limit int) ([]analytics.Link, error) {
	if err := requireTenant(tenant); err != nil {
		return nil, err
	}
	if len(userIDs) == 0 && len(anonymousIDs) == 0 {
		return nil, nil
	}
	ctx = subjectSettings(ctx)
	var cond []string
	if len(userIDs) > 0 {
		cond = append(cond, `user_id IN (`+valueList(userIDs)+`)`)
	}
	if len(anonymousIDs) > 0 {
		cond = append(cond, `anonymous_id IN (`+valueList(anonymousIDs)+`)`)
	}
	seen := map[analytics.Link]bool{}
	var out []analytics.Link
	for _, conn := range q.writers() {
		if len(out) >= limit {
			break
		}
		rows, err := conn.Query(ctx, `SELECT DISTINCT user_id, anonymous_id FROM events_local
			WHERE tenant_id = ? AND user_id != '' AND anonymous_id != '' AND (`+strings.Join(cond, " OR ")+`)
			LIMIT `+strconv.Itoa(limit), tenant)
		if err != nil {
			return nil, q.storeError(ctx, "read linked identifiers", err)
		}
		for rows.Next() {
			var l analytics.Link
			if err := rows.Scan(&l.UserID, &l.AnonymousID); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read linked identifiers: %w", err)
			}
			if !seen[l] && len(out) < limit {
				seen[l] = true
				out = append(out, l)
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, q.storeError(ctx, "read linked identifiers", err)
		}
	}
	return out, nil
}

// SubjectEvents implements analytics.SubjectStore: shard by shard, row by row as the driver
// reads its blocks, so memory does not grow with the subject's events.
func (q *Queries) SubjectEvents(ctx context.Context, tenant string, values []string, fn func(analytics.SubjectEvent) error) error {
	if err := requireTenant(tenant); err != nil {
		return err
	}
	if len(values) == 0 {
		return nil
	}
	ctx = subjectSettings(ctx)
	list := valueList(values)
	for _, conn := range q.writers() {
		if err := q.subjectEvents(ctx, conn, tenant, list, fn); err != nil {
			return err
		}
	}
	return nil
}

func (q *Queries) subjectEvents(ctx context.Context, conn driver.Conn, tenant, list string, fn func(analytics.SubjectEvent) error) error {
	rows, err := conn.Query(ctx, `SELECT event_id, type, name, user_id, anonymous_id, campaign_id, variant, value_micros, currency,
		event_ms, client_ms, received_ms, prop_keys, prop_values, ip, user_agent, locale, app, device, source
		FROM events_local WHERE tenant_id = ? AND (user_id IN (`+list+`) OR anonymous_id IN (`+list+`))`, tenant)
	if err != nil {
		return q.storeError(ctx, "export events", err)
	}
	defer rows.Close()
	for rows.Next() {
		var e analytics.SubjectEvent
		var eventMS, clientMS, receivedMS uint64
		if err := rows.Scan(&e.EventID, &e.Type, &e.Name, &e.UserID, &e.AnonymousID, &e.CampaignID, &e.Variant, &e.ValueMicros,
			&e.Currency, &eventMS, &clientMS, &receivedMS, &e.PropKeys, &e.PropValues, &e.IP, &e.UserAgent, &e.Locale, &e.App,
			&e.Device, &e.Source); err != nil {
			return fmt.Errorf("export events: scan: %w", err)
		}
		e.Time, e.ReceivedTime = time.UnixMilli(int64(eventMS)).UTC(), time.UnixMilli(int64(receivedMS)).UTC()
		if clientMS > 0 {
			e.ClientTime = time.UnixMilli(int64(clientMS)).UTC()
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return q.storeError(ctx, "export events", err)
	}
	return nil
}

// CountSubjectRows implements analytics.SubjectStore: the rows of every shard.
func (q *Queries) CountSubjectRows(ctx context.Context, subjects []analytics.Subject) ([]analytics.SubjectRows, error) {
	var out []analytics.SubjectRows
	if len(subjects) == 0 {
		return nil, nil
	}
	ctx = subjectSettings(ctx)
	for _, conn := range q.writers() {
		var shard []analytics.SubjectRows
		for _, list := range chunks(subjectTuples(subjects), mutationListBytes) {
			rows, err := conn.Query(ctx, `SELECT tenant_id, user_id, anonymous_id, count() FROM events_local
				WHERE `+subjectCondition(tupleList(list))+` GROUP BY tenant_id, user_id, anonymous_id`)
			if err != nil {
				return nil, q.storeError(ctx, "count the subjects' events", err)
			}
			for rows.Next() {
				var r analytics.SubjectRows
				var n uint64
				if err := rows.Scan(&r.Tenant, &r.UserID, &r.AnonymousID, &n); err != nil {
					rows.Close()
					return nil, fmt.Errorf("count the subjects' events: scan: %w", err)
				}
				r.Rows = int64(n)
				shard = append(shard, r)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return nil, q.storeError(ctx, "count the subjects' events", err)
			}
		}
		// Two chunks count the same group when its user id is in one and its anonymous id in
		// the other: keep each (tenant, user id, anonymous id) of a shard once.
		out = append(out, dedupeRows(shard)...)
	}
	return out, nil
}

// dedupeRows keeps one count of each (tenant, user id, anonymous id) of one shard: every chunk
// that counts a group counts all of its rows. With one chunk it changes nothing.
func dedupeRows(rows []analytics.SubjectRows) []analytics.SubjectRows {
	type key struct{ t, u, a string }
	seen := map[key]int{}
	var out []analytics.SubjectRows
	for _, r := range rows {
		k := key{r.Tenant, r.UserID, r.AnonymousID}
		if _, ok := seen[k]; ok {
			continue
		}
		seen[k] = len(out)
		out = append(out, r)
	}
	return out
}

// SubjectHours implements analytics.SubjectStore: the rollup keys of the subjects' events, by
// shard (a shard's rollup counts only its own events).
func (q *Queries) SubjectHours(ctx context.Context, subjects []analytics.Subject) ([]analytics.RollupHour, error) {
	if len(subjects) == 0 {
		return nil, nil
	}
	ctx = subjectSettings(ctx)
	var out []analytics.RollupHour
	for shard, conn := range q.writers() {
		seen := map[analytics.RollupHour]bool{}
		for _, list := range chunks(subjectTuples(subjects), mutationListBytes) {
			rows, err := conn.Query(ctx, `SELECT DISTINCT tenant_id, campaign_id, toUInt32(toStartOfHour(event_time)) FROM events_local
				WHERE `+subjectCondition(tupleList(list)))
			if err != nil {
				return nil, q.storeError(ctx, "find the subjects' rollup hours", err)
			}
			for rows.Next() {
				h := analytics.RollupHour{Shard: shard}
				var hour uint32
				if err := rows.Scan(&h.Tenant, &h.CampaignID, &hour); err != nil {
					rows.Close()
					return nil, fmt.Errorf("find the subjects' rollup hours: scan: %w", err)
				}
				h.Hour = time.Unix(int64(hour), 0).UTC()
				if !seen[h] {
					seen[h] = true
					out = append(out, h)
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return nil, q.storeError(ctx, "find the subjects' rollup hours", err)
			}
		}
	}
	return out, nil
}

// RebuildHours implements analytics.SubjectStore. On each shard with hours to rebuild it waits
// until no writer insert running then still runs (an insert of a writer that died before it
// could acknowledge the fence), deletes the hours' rollup rows with one mutation and waits for
// it, then inserts them again from events_local with the materialized view's own SELECT, less
// the events of without. Run again after a failure at any point, it ends in the same rows.
func (q *Queries) RebuildHours(ctx context.Context, hours []analytics.RollupHour, without []analytics.Subject) (int, error) {
	ctx = subjectSettings(ctx)
	byShard := map[int][]analytics.RollupHour{}
	for _, h := range hours {
		byShard[h.Shard] = append(byShard[h.Shard], h)
	}
	mutations := 0
	conns := q.writers()
	for shard, hs := range byShard {
		if shard < 0 || shard >= len(conns) {
			return mutations, fmt.Errorf("rebuild rollup hours: shard %d of %d", shard, len(conns))
		}
		conn := conns[shard]
		if err := NewEventSink(conn).waitInserts(ctx); err != nil {
			return mutations, q.storeError(ctx, "wait for running inserts", err)
		}
		tuples := make([]string, len(hs))
		first, last := hs[0].Hour, hs[0].Hour
		for i, h := range hs {
			tuples[i] = "(" + literal(h.Tenant) + ", " + literal(h.CampaignID) + ", " + strconv.FormatInt(h.Hour.Unix(), 10) + ")"
			first, last = minTime(first, h.Hour), maxTime(last, h.Hour)
		}
		for _, list := range chunks(tuples, mutationListBytes) {
			keys := tupleList(list)
			tag := mutationTag()
			if err := conn.Exec(ctx, `ALTER TABLE events_hourly_local DELETE WHERE (tenant_id, campaign_id, toUInt32(hour)) IN (`+keys+`) AND `+literal(tag)+` != ''`); err != nil {
				return mutations, q.storeError(ctx, "delete rollup hours", err)
			}
			mutations++
			if err := q.waitMutation(ctx, conn, "events_hourly_local", tag); err != nil {
				return mutations, err
			}
		}
		if q.rebuildPause != nil {
			q.rebuildPause(ctx, shard)
		}
		// The dates of the hours, a day to spare each side whatever the server's zone: the
		// partitions (months) the SELECT reads.
		from, to := first.Add(-24*time.Hour).Format(time.DateOnly), last.Add(48*time.Hour).Format(time.DateOnly)
		exclude := "1"
		if len(without) > 0 {
			exclude = "NOT " + subjectCondition(tupleList(subjectTuples(without)))
		}
		for _, list := range chunks(tuples, mutationListBytes) {
			if err := conn.Exec(ctx, `INSERT INTO events_hourly_local (`+migrations.RollupColumns+`) `+migrations.RollupSelect+`
				AND event_date >= '`+from+`' AND event_date <= '`+to+`'
				AND (tenant_id, campaign_id, toUInt32(toStartOfHour(event_time))) IN (`+tupleList(list)+`)
				AND `+exclude+migrations.RollupGroupBy); err != nil {
				return mutations, q.storeError(ctx, "rebuild rollup hours", err)
			}
		}
	}
	return mutations, nil
}

// WithRebuildPause makes RebuildHours call pause (with the shard's index) between each shard's
// rollup delete and its insert: fault injection for tests, which hold the rebuild where a writer's insert would be
// counted twice (services/analytics/writer, "Write fences"). Never set in production.
func (q *Queries) WithRebuildPause(pause func(ctx context.Context, shard int)) *Queries {
	q.rebuildPause = pause
	return q
}

// DeleteSubjects implements analytics.SubjectStore: one mutation per shard and chunk of
// identifiers, all started before any is waited for, so the shards rewrite their parts at once.
func (q *Queries) DeleteSubjects(ctx context.Context, subjects []analytics.Subject) (int, error) {
	if len(subjects) == 0 {
		return 0, nil
	}
	ctx = subjectSettings(ctx)
	type started struct {
		conn driver.Conn
		tag  string
	}
	var running []started
	for _, conn := range q.writers() {
		for _, list := range chunks(subjectTuples(subjects), mutationListBytes) {
			tag := mutationTag()
			if err := conn.Exec(ctx, `ALTER TABLE events_local DELETE WHERE `+subjectCondition(tupleList(list))+` AND `+literal(tag)+` != ''`); err != nil {
				return len(running), q.storeError(ctx, "delete the subjects' events", err)
			}
			running = append(running, started{conn, tag})
		}
	}
	for _, m := range running {
		if err := q.waitMutation(ctx, m.conn, "events_local", m.tag); err != nil {
			return len(running), err
		}
	}
	return len(running), nil
}

// mutationTag is a unique mark put in a mutation's condition (a literal compared with the empty
// string), by which system.mutations tells when it is done.
func mutationTag() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "cmerase-" + hex.EncodeToString(b)
}

// waitMutation waits until the mutation of table tagged tag is done, checking with a growing
// pause, for at most mutationTimeout.
func (q *Queries) waitMutation(ctx context.Context, conn driver.Conn, table, tag string) error {
	ctx, cancel := context.WithTimeout(ctx, mutationTimeout)
	defer cancel()
	pause := 50 * time.Millisecond
	for {
		var found, running uint64
		if err := conn.QueryRow(ctx, `SELECT count(), countIf(is_done = 0) FROM system.mutations
			WHERE database = currentDatabase() AND table = ? AND position(command, ?) > 0`, table, tag).Scan(&found, &running); err != nil {
			return q.storeError(ctx, "read mutations", err)
		}
		if found == 0 {
			return fmt.Errorf("mutation %s of %s: not in system.mutations", tag, table)
		}
		if running == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for mutation %s of %s: %w", tag, table, ctx.Err())
		case <-time.After(pause):
		}
		pause = min(2*pause, time.Second)
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
