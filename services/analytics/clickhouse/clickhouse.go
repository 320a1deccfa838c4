// Package clickhouse is the analytics store: the events table in ClickHouse, the writer's sink
// (EventSink) and the query store. The SQL runs on Debian's ClickHouse 18.16 and on current
// ClickHouse: named columns in every INSERT, no DateTime64 (milliseconds kept as UInt64), no
// JSON functions (properties as key/value arrays), no TTL, no async inserts.
package clickhouse

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"google.golang.org/protobuf/types/known/structpb"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
)

// User is a ClickHouse user and its password. analytics uses two (see docs/security.md's
// model): a writer, which owns the schema, inserts and runs deletion mutations, and a read-only
// reader for the query API.
type User struct {
	Name, Password string
}

// Open connects as the writer user over the native protocol and brings the schema up to date
// (Migrate).
func Open(ctx context.Context, addr, database string, user User) (driver.Conn, error) {
	conn, err := dial(ctx, addr, database, user)
	if err != nil {
		return nil, err
	}
	if err := Migrate(ctx, addr, database, user); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// OpenShard connects as the writer user to the shard of layout at addr and, with migrate, brings
// its schema up to date (MigrateShard); without, it waits until another process has
// (WaitMigrated) — one process migrates every shard, in shard order.
func OpenShard(ctx context.Context, addr, database string, user User, layout Layout, migrate bool) (driver.Conn, error) {
	conn, err := dial(ctx, addr, database, user)
	if err != nil {
		return nil, err
	}
	if migrate {
		err = MigrateShard(ctx, addr, database, user, layout)
	} else {
		err = WaitMigrated(ctx, addr, database, user, layout)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// OpenReader connects as the read-only query user; the schema is the writer's (Open).
func OpenReader(ctx context.Context, addr, database string, user User) (driver.Conn, error) {
	return dial(ctx, addr, database, user)
}

func options(addr, database string, user User) *ch.Options {
	return &ch.Options{
		Addr: []string{addr}, Auth: ch.Auth{Database: database, Username: user.Name, Password: user.Password},
		DialTimeout: 5 * time.Second, MaxOpenConns: 8,
	}
}

func dial(ctx context.Context, addr, database string, user User) (driver.Conn, error) {
	conn, err := ch.Open(options(addr, database, user))
	if err != nil {
		return nil, fmt.Errorf("open clickhouse: %w", err)
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("connect to clickhouse %s as %s: %w", addr, user.Name, err)
	}
	return conn, nil
}

// EventSink is the writer's sink (writer.Sink) on one shard: atomic block inserts into
// events_local with their commit rows, the watermark per stream partition and month once no
// insert of a writer is running, and the stream epochs in writer_epochs (read on shard 0).
type EventSink struct {
	conn driver.Conn

	mu     sync.Mutex
	prefix string // the query id prefix of the writer's inserts; read once
}

// NewEventSink returns the sink writing through conn (the writer user's, from Open) into the
// shard conn is connected to.
func NewEventSink(conn driver.Conn) *EventSink {
	return &EventSink{conn: conn}
}

var _ writer.Sink = (*EventSink)(nil)

// queryPrefix marks the writer's inserts into one database (in their query id), so that a
// restarted writer can see whether an insert of a predecessor is still running. It is read
// once, not on every insert, and again after a failed read.
func (s *EventSink) queryPrefix(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.prefix != "" {
		return s.prefix, nil
	}
	var db string
	if err := s.conn.QueryRow(ctx, `SELECT currentDatabase()`).Scan(&db); err != nil {
		return "", fmt.Errorf("read current database: %w", err)
	}
	s.prefix = "cm-writer-" + db + "-"
	return s.prefix, nil
}

// commitCondition selects the commit rows of events_local: the writer's record of the
// sequences each insert stored, per stream partition and month. No event has an empty tenant
// (ingest refuses one), and the condition is a prefix of the sort key: cheap to read.
const commitCondition = `tenant_id = '' AND campaign_id = ''`

// Insert writes rows — all of one month (the partition of events_local) — and one commit row
// per element of commits in one native batch insert: one block, one part, all or nothing. The
// materialized views fill the rollup and event_ids from the same insert, leaving commit rows
// out. The writer passes no event twice (writer.Writer drops repeats and events stored already).
func (s *EventSink) Insert(ctx context.Context, month uint32, rows []writer.Row, commits []writer.Commit) error {
	prefix, err := s.queryPrefix(ctx)
	if err != nil {
		return err
	}
	first := time.Date(int(month/100), time.Month(month%100), 1, 0, 0, 0, 0, time.UTC)
	if writer.MonthOf(first) != month {
		return fmt.Errorf("insert events: %d is not a month (YYYYMM)", month)
	}
	ctx = ch.Context(ctx, ch.WithQueryID(prefix+strconv.FormatInt(time.Now().UnixNano(), 36)))
	b, err := s.conn.PrepareBatch(ctx, `INSERT INTO events_local (tenant_id, event_id, type, name, user_id, anonymous_id, campaign_id, variant,
		value_micros, currency, event_date, event_time, event_ms, client_ms, received_ms, prop_keys, prop_values,
		ip, user_agent, locale, app, device, source, stream_part, stream_seq, commit_seqs)`)
	if err != nil {
		return fmt.Errorf("prepare insert: %w", err)
	}
	// A block refused before it is sent is aborted: the INSERT is open on the server from
	// PrepareBatch on, and left there it would hold its table (a DROP waits for it) and be one
	// of this writer's running inserts, which Settle waits for until the server gives up on it.
	sent := false
	defer func() {
		if !sent {
			_ = b.Abort()
		}
	}()
	noSeqs := []uint64{}
	for _, r := range rows {
		a := r.Event
		e := a.GetEvent()
		t := a.GetCorrectedTime().AsTime().UTC()
		// A row of another month would make a second part, which could be stored without the
		// first: the commit rows would no longer tell what is stored.
		if writer.MonthOf(t) != month {
			return fmt.Errorf("insert events: an event of %s in the block of month %d", t.Format(time.DateOnly), month)
		}
		var client uint64
		if e.GetTimestamp() != nil {
			client = uint64(max(e.GetTimestamp().AsTime().UnixMilli(), 0))
		}
		keys, values := flatten(e.GetProperties())
		c := e.GetContext()
		if err := b.Append(a.GetTenantId(), e.GetEventId(), eventType(e.GetType()), e.GetName(), e.GetUserId(), e.GetAnonymousId(),
			e.GetCampaignId(), e.GetVariant(), e.GetValue().GetAmountMicros(), e.GetValue().GetCurrency(),
			t, t, uint64(max(t.UnixMilli(), 0)), client, uint64(a.GetReceivedAt().AsTime().UnixMilli()), keys, values,
			c.GetIp(), c.GetUserAgent(), c.GetLocale(), c.GetApp(), c.GetDevice(), a.GetSource(), uint16(r.Part), r.Seq, noSeqs); err != nil {
			return fmt.Errorf("append row: %w", err)
		}
	}
	for _, c := range commits {
		if len(c.Seqs) == 0 {
			continue
		}
		if err := b.Append("", "commit", "", "", "", "", "", "", int64(0), "", first, first, uint64(0), uint64(0), uint64(0),
			[]string{}, []string{}, "", "", "", "", "", "", uint16(c.Part), c.Seqs[len(c.Seqs)-1], c.Seqs); err != nil {
			return fmt.Errorf("append commit row: %w", err)
		}
	}
	sent = true
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert events: %w", err)
	}
	return nil
}

// InsertAll inserts rows as the writer would on a single shard: each row in its event's stream
// partition (writer.PartOf, whatever rows say), one Insert per month with its commits. Tools and
// tests that fill the store use it.
func (s *EventSink) InsertAll(ctx context.Context, rows []writer.Row) error {
	parted := make([]writer.Row, len(rows))
	for i, r := range rows {
		parted[i] = writer.Row{Event: r.Event, Part: writer.PartOf(r.Event), Seq: r.Seq}
	}
	for _, b := range writer.Blocks(parted, 1) {
		if err := s.Insert(ctx, b.Month, b.Rows, b.Commits); err != nil {
			return err
		}
	}
	return nil
}

// Settle waits until none of the writer inserts into this database running when it is called
// is running any more — an insert whose writer died, or whose answer was lost, may still
// complete on the server — and then returns the watermarks of parts (every partition when parts
// is nil). Reading them earlier could miss that insert, and inserting its rows again would count
// them twice. Inserts begun later are not waited for: they are other live writers', which own
// other partitions, and with several writers one is nearly always inserting.
func (s *EventSink) Settle(ctx context.Context, parts []int) (map[writer.PartMonth]uint64, error) {
	if err := s.waitInserts(ctx); err != nil {
		return nil, err
	}
	return s.watermarks(ctx, parts)
}

// waitInserts waits until none of the writer inserts into this database running when it is
// called is running any more (Settle; an erasure's rollup rebuild, after the write fence).
func (s *EventSink) waitInserts(ctx context.Context) error {
	prefix, err := s.queryPrefix(ctx)
	if err != nil {
		return err
	}
	var waiting []string
	for {
		var running []string
		rows, err := s.conn.Query(ctx, `SELECT query_id FROM system.processes WHERE startsWith(query_id, ?)`, prefix)
		if err == nil {
			for rows.Next() {
				var id string
				if err = rows.Scan(&id); err != nil {
					break
				}
				running = append(running, id)
			}
			rows.Close()
			if err == nil {
				err = rows.Err()
			}
		}
		if err != nil {
			return fmt.Errorf("look for running inserts: %w", err)
		}
		if waiting == nil {
			waiting = running
		} else {
			waiting = slices.DeleteFunc(waiting, func(id string) bool { return !slices.Contains(running, id) })
		}
		if len(waiting) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// watermarks reads the highest sequence stored per stream partition and month from the commit
// rows (one per partition of each insert).
func (s *EventSink) watermarks(ctx context.Context, parts []int) (map[writer.PartMonth]uint64, error) {
	q := `SELECT stream_part, toYYYYMM(event_date) AS month, max(stream_seq) FROM events_local WHERE ` + commitCondition
	if parts != nil {
		q += ` AND stream_part IN (` + joinInts(parts) + `)`
	}
	rows, err := s.conn.Query(ctx, q+` GROUP BY stream_part, month`)
	if err != nil {
		return nil, fmt.Errorf("read watermarks: %w", err)
	}
	defer rows.Close()
	out := map[writer.PartMonth]uint64{}
	for rows.Next() {
		var part uint16
		var month uint32
		var seq uint64
		if err := rows.Scan(&part, &month, &seq); err != nil {
			return nil, fmt.Errorf("read watermarks: %w", err)
		}
		out[writer.PartMonth{Part: int(part), Month: month}] = seq
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read watermarks: %w", err)
	}
	return out, nil
}

// Stored returns those of seqs that an insert stored rows of for the partition and month pm:
// those its commit rows list.
func (s *EventSink) Stored(ctx context.Context, pm writer.PartMonth, seqs []uint64) ([]uint64, error) {
	if len(seqs) == 0 {
		return nil, nil
	}
	strs := make([]string, len(seqs))
	for i, q := range seqs {
		strs[i] = strconv.FormatUint(q, 10)
	}
	in := strings.Join(strs, ",")
	rows, err := s.conn.Query(ctx, `SELECT DISTINCT seq FROM events_local ARRAY JOIN commit_seqs AS seq
		WHERE `+commitCondition+` AND stream_part = ? AND toYYYYMM(event_date) = ? AND hasAny(commit_seqs, [`+in+`]) AND seq IN (`+in+`)`,
		uint16(pm.Part), pm.Month)
	if err != nil {
		return nil, fmt.Errorf("look up stored batches: %w", err)
	}
	defer rows.Close()
	var out []uint64
	for rows.Next() {
		var q uint64
		if err := rows.Scan(&q); err != nil {
			return nil, fmt.Errorf("look up stored batches: %w", err)
		}
		out = append(out, q)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up stored batches: %w", err)
	}
	return out, nil
}

// SeqOffset returns the offset of the stream incarnation created at streamCreated (Unix
// nanoseconds): for a stream not seen before, watermark (the highest sequence stored on any
// shard), recorded in writer_epochs (call it with no insert running, after Settle).
func (s *EventSink) SeqOffset(ctx context.Context, streamCreated, watermark uint64) (uint64, error) {
	var offsets []uint64
	rows, err := s.conn.Query(ctx, `SELECT seq_offset FROM writer_epochs WHERE stream_created = ?`, streamCreated)
	if err != nil {
		return 0, fmt.Errorf("read stream epoch: %w", err)
	}
	for rows.Next() {
		var o uint64
		if err := rows.Scan(&o); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read stream epoch: %w", err)
		}
		offsets = append(offsets, o)
	}
	rows.Close()
	if len(offsets) > 0 {
		return offsets[0], nil
	}
	b, err := s.conn.PrepareBatch(ctx, `INSERT INTO writer_epochs (stream_created, seq_offset)`)
	if err == nil {
		if err = b.Append(streamCreated, watermark); err == nil {
			err = b.Send()
		}
	}
	if err != nil {
		return 0, fmt.Errorf("record stream epoch: %w", err)
	}
	return watermark, nil
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

func eventType(t ingestv1.EventType) string {
	name := ingestv1.EventType_name[int32(t)]
	if len(name) > len("EVENT_TYPE_") {
		return lower(name[len("EVENT_TYPE_"):])
	}
	return "unknown"
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// flatten turns properties into sorted key/value arrays; nested values become their JSON text.
func flatten(p *structpb.Struct) ([]string, []string) {
	if p == nil {
		return []string{}, []string{}
	}
	keys := make([]string, 0, len(p.GetFields()))
	for k := range p.GetFields() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	values := make([]string, len(keys))
	for i, k := range keys {
		v := p.GetFields()[k]
		switch x := v.GetKind().(type) {
		case *structpb.Value_StringValue:
			values[i] = x.StringValue
		case *structpb.Value_NumberValue:
			values[i] = strconv.FormatFloat(x.NumberValue, 'f', -1, 64)
		case *structpb.Value_BoolValue:
			values[i] = strconv.FormatBool(x.BoolValue)
		case *structpb.Value_NullValue:
			values[i] = ""
		default:
			data, _ := v.MarshalJSON()
			values[i] = string(data)
		}
	}
	return keys, values
}

// EnvUser is the user named by the variables scripts/devenv.sh writes into .state/env —
// PREFIX_USER and PREFIX_PASSWORD_FILE (e.g. CM_CLICKHOUSE for the admin) — for tools such as
// the bench commands; without them, the passwordless default user of an older dev server.
func EnvUser(prefix string) (User, error) {
	u := User{Name: os.Getenv(prefix + "_USER")}
	if u.Name == "" {
		return User{Name: "default"}, nil
	}
	if f := os.Getenv(prefix + "_PASSWORD_FILE"); f != "" {
		data, err := os.ReadFile(f)
		if err != nil {
			return u, fmt.Errorf("read %s_PASSWORD_FILE: %w", prefix, err)
		}
		u.Password = strings.TrimRight(string(data), "\r\n")
	}
	return u, nil
}
