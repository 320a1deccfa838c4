package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/campaignmesh/campaignmesh/internal/benchdata"
	"github.com/campaignmesh/campaignmesh/services/analytics/clickhouse"
)

// copiedTables are the tables a load fills (the events and what its materialized views keep),
// copied from the kept data set into the working database every run.
var copiedTables = []string{"events_local", "events_hourly_local", "event_ids_local"}

// exportUser is the user id of the ACCESS export's subject, added to the working database.
const exportUser = "u-bench-export"

// subject is a data subject of the big tenant (a user id) and its events before the run.
type subject struct {
	id     string
	events int64
}

// dataState is the working database as the phases find it.
type dataState struct {
	set      benchdata.Dataset
	tenant   string
	conn     driver.Conn // the working database, as the ClickHouse admin user
	export   subject
	subjects []subject // of the erasures: -single-runs first, then -erasures
	others   uint64    // rows no erasure subject owns, before the erasures
}

func (s *dataState) close() {
	if s.conn != nil {
		s.conn.Close()
	}
}

// idList is ids as a ClickHouse literal list; they are ours ("u-<n>"): no quotes inside.
func idList(ids []string) string {
	q := make([]string, len(ids))
	for i, id := range ids {
		q[i] = "'" + id + "'"
	}
	return "(" + strings.Join(q, ",") + ")"
}

func subjectIDs(ss []subject) []string {
	ids := make([]string, len(ss))
	for i, s := range ss {
		ids[i] = s.id
	}
	return ids
}

// prepareData makes sure <database>_base holds the data set for tenant (loaded unless -keep
// finds it, and always when auth is new: a new tenant), copies it into the working database,
// adds the export subject and picks the erasure subjects with their exact event counts.
func (b *bench) prepareData(ctx context.Context, tenant string, newTenant bool) (*dataState, error) {
	cfg := b.cfg.data
	cfg.BigTenant = tenant
	base, work := b.cfg.database+"_base", b.cfg.database
	addr := clickhouseAddr()
	user, err := clickhouse.EnvUser("CM_CLICKHOUSE")
	if err != nil {
		return nil, err
	}
	keep := b.cfg.keep && !newTenant
	if b.cfg.keep && newTenant {
		progress("-keep: auth is new (a new tenant): loading the data set for it")
	}
	d, err := benchdata.Prepare(ctx, addr, cfg, base, keep, b.add)
	if err != nil {
		return nil, err
	}
	baseConn, err := clickhouse.Open(ctx, addr, base, user)
	if err != nil {
		return nil, err
	}
	defer baseConn.Close()
	var own uint64
	if err := baseConn.QueryRow(ctx, "SELECT count() FROM events WHERE tenant_id = ?", tenant).Scan(&own); err != nil {
		return nil, err
	}
	if own != uint64(d.Tenants[0].Events) {
		return nil, fmt.Errorf("%s holds %d events of tenant %s, want %d: run once without -keep", base, own, tenant, d.Tenants[0].Events)
	}

	// A fresh working database with the kept one's parts: hard links, no copy of the data.
	start := time.Now()
	progress("copying %s into %s (ATTACH PARTITION … FROM)", base, work)
	admin, err := ch.Open(&ch.Options{Addr: []string{addr}, Auth: ch.Auth{Username: user.Name, Password: user.Password}, DialTimeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	for _, q := range []string{"DROP DATABASE IF EXISTS " + work, "CREATE DATABASE " + work} {
		if err := admin.Exec(ctx, q); err != nil {
			return nil, fmt.Errorf("%s: %w", q, err)
		}
	}
	s := &dataState{set: d, tenant: tenant}
	if s.conn, err = clickhouse.Open(ctx, addr, work, user); err != nil {
		return nil, err
	}
	for _, table := range copiedTables {
		rows, err := s.conn.Query(ctx, "SELECT DISTINCT partition_id FROM system.parts WHERE database = ? AND table = ? AND active ORDER BY partition_id", base, table)
		if err != nil {
			s.close()
			return nil, err
		}
		var parts []string
		for rows.Next() {
			var p string
			if err := rows.Scan(&p); err != nil {
				rows.Close()
				s.close()
				return nil, err
			}
			parts = append(parts, p)
		}
		rows.Close()
		for _, p := range parts {
			if err := s.conn.Exec(ctx, fmt.Sprintf("ALTER TABLE %s ATTACH PARTITION ID '%s' FROM %s.%s", table, p, base, table)); err != nil {
				s.close()
				return nil, fmt.Errorf("copy %s partition %s: %w", table, p, err)
			}
		}
	}
	var baseRows, workRows uint64
	if err := baseConn.QueryRow(ctx, "SELECT count() FROM events").Scan(&baseRows); err != nil {
		s.close()
		return nil, err
	}
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM events").Scan(&workRows); err != nil {
		s.close()
		return nil, err
	}
	if workRows != baseRows {
		s.close()
		return nil, fmt.Errorf("the copy %s holds %d rows, %s %d", work, workRows, base, baseRows)
	}
	b.add("data: copy of the data set into "+work, time.Since(start).Seconds(), "s", fmt.Sprintf("(%d rows incl. commit rows)", workRows))

	if err := b.addExportSubject(ctx, s); err != nil {
		s.close()
		return nil, err
	}
	if err := b.pickSubjects(ctx, s); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// addExportSubject gives the export subject -export-events events: copies of the big
// tenant's first events under its user id and new event ids, inserted like the load's (the
// materialized views count them).
func (b *bench) addExportSubject(ctx context.Context, s *dataState) error {
	n := b.cfg.exportEvents
	progress("adding %d events of user %s (the export's subject)", n, exportUser)
	q := `INSERT INTO events_local (tenant_id, event_id, type, name, user_id, anonymous_id, campaign_id, variant,
	value_micros, currency, event_date, event_time, event_ms, client_ms, received_ms, prop_keys, prop_values,
	ip, user_agent, locale, app, device, source, stream_seq, stream_part)
SELECT tenant_id, concat('export-', event_id), type, name, '{USER}', '', campaign_id, variant,
	value_micros, currency, event_date, event_time, event_ms, client_ms, received_ms, prop_keys, prop_values,
	ip, user_agent, locale, app, device, 'bench-export', toUInt64(0), toUInt16(cityHash64(concat(tenant_id, '\0', '{USER}')) % 8)
FROM events_local WHERE tenant_id = '{TENANT}' AND source = 'bench-loader' LIMIT {N}`
	q = strings.NewReplacer("{USER}", exportUser, "{TENANT}", s.tenant, "{N}", fmt.Sprint(n)).Replace(q)
	if err := s.conn.Exec(ctx, q); err != nil {
		return fmt.Errorf("add the export subject: %w", err)
	}
	var got uint64
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM events WHERE tenant_id = ? AND user_id = ?", s.tenant, exportUser).Scan(&got); err != nil {
		return err
	}
	if got != uint64(n) {
		return fmt.Errorf("the export subject has %d events, want %d", got, n)
	}
	s.export = subject{exportUser, n}
	return nil
}

// pickSubjects takes -single-runs + -erasures user ids of the big tenant, spread by a hash,
// with their exact event counts, and counts the rows none of them owns.
func (b *bench) pickSubjects(ctx context.Context, s *dataState) error {
	want := b.cfg.singleRuns + b.cfg.erasures
	rows, err := s.conn.Query(ctx, `SELECT user_id, count() FROM events WHERE tenant_id = ? AND user_id != '' AND source = 'bench-loader'
		GROUP BY user_id ORDER BY cityHash64(user_id), user_id LIMIT ?`, s.tenant, want)
	if err != nil {
		return fmt.Errorf("pick subjects: %w", err)
	}
	defer rows.Close()
	var total int64
	for rows.Next() {
		var sub subject
		var n uint64
		if err := rows.Scan(&sub.id, &n); err != nil {
			return fmt.Errorf("pick subjects: %w", err)
		}
		sub.events = int64(n)
		total += sub.events
		s.subjects = append(s.subjects, sub)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("pick subjects: %w", err)
	}
	if len(s.subjects) < want {
		return fmt.Errorf("the big tenant has %d users with events, the run needs %d (-single-runs + -erasures)", len(s.subjects), want)
	}
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM events WHERE NOT (tenant_id = ? AND user_id IN "+idList(subjectIDs(s.subjects))+")", s.tenant).Scan(&s.others); err != nil {
		return err
	}
	b.add("data: erasure subjects (user ids of the big tenant)", float64(len(s.subjects)), "subjects",
		fmt.Sprintf("(%d events in all, %.1f each; %d rows of others)", total, float64(total)/float64(len(s.subjects)), s.others))
	return nil
}

// remaining counts the rows the subjects still own in the working database.
func (s *dataState) remaining(ctx context.Context, ss []subject) (uint64, error) {
	var n uint64
	err := s.conn.QueryRow(ctx, "SELECT count() FROM events WHERE tenant_id = ? AND user_id IN "+idList(subjectIDs(ss)), s.tenant).Scan(&n)
	return n, err
}

// othersNow counts the rows no erasure subject owns.
func (s *dataState) othersNow(ctx context.Context) (uint64, error) {
	var n uint64
	err := s.conn.QueryRow(ctx, "SELECT count() FROM events WHERE NOT (tenant_id = ? AND user_id IN "+idList(subjectIDs(s.subjects))+")", s.tenant).Scan(&n)
	return n, err
}

// mutations counts the working database's mutations by table, as system.mutations has them.
func (s *dataState) mutations(ctx context.Context) (map[string]uint64, error) {
	rows, err := s.conn.Query(ctx, "SELECT table, count() FROM system.mutations WHERE database = currentDatabase() GROUP BY table")
	if err != nil {
		return nil, fmt.Errorf("system.mutations: %w", err)
	}
	defer rows.Close()
	m := map[string]uint64{}
	for rows.Next() {
		var t string
		var n uint64
		if err := rows.Scan(&t, &n); err != nil {
			return nil, err
		}
		m[t] = n
	}
	return m, rows.Err()
}
