-- The analytics schema as it was created before migrations existed: every statement is
-- IF NOT EXISTS, so a database created by that code (an existing dev .state) adopts this
-- version without change, and one interrupted midway completes on the next start (ClickHouse
-- has no transactions). Never edit an applied migration: change the schema in a new file.
-- The comments below describe version 1: 00004_events_v2.go re-sorts and partitions events
-- (queries no longer read it with FINAL), adds users_approx to events_hourly and event_ids.
-- +goose NO TRANSACTION
-- +goose Up

-- events is a ReplacingMergeTree on (tenant_id, event_id): a client retry that reached the
-- stream twice leaves one row after merges, and queries that must not count twice read with
-- FINAL (or by distinct event_id). stream_seq, the JetStream sequence of the batch, is the
-- version kept and the writer's restart watermark. events is not partitioned, so that one
-- insert is one part — all or nothing, which the watermark relies on (a block spanning two
-- partitions could be half stored).
CREATE TABLE IF NOT EXISTS events (
	tenant_id String,
	event_id String,
	type String,
	name String,
	user_id String,
	anonymous_id String,
	campaign_id String,
	variant String,
	value_micros Int64,
	currency String,
	event_date Date,
	event_time DateTime,
	event_ms UInt64,
	client_ms UInt64,
	received_ms UInt64,
	prop_keys Array(String),
	prop_values Array(String),
	ip String,
	user_agent String,
	locale String,
	app String,
	device String,
	source String,
	stream_seq UInt64
) ENGINE = ReplacingMergeTree(stream_seq)
ORDER BY (tenant_id, event_id);

-- events_hourly is the rollup: per tenant, campaign, hour (UTC), variant, type and currency,
-- the count, value and distinct users of the events, kept by the materialized view below on
-- every insert into events. The writer inserts each stream batch once (see EventSink.Settle)
-- and drops duplicate event ids within a block, so the rollup counts what the raw table holds.
CREATE TABLE IF NOT EXISTS events_hourly (
	tenant_id String,
	campaign_id String,
	hour DateTime,
	variant String,
	type String,
	currency String,
	events AggregateFunction(count),
	value_micros AggregateFunction(sum, Int64),
	users AggregateFunction(uniqExact, String)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant_id, campaign_id, hour, variant, type, currency);

-- writer_epochs gives each incarnation of the event stream (told apart by its creation time)
-- an offset added to its sequences, so stored sequences keep growing when the stream is
-- recreated and restarts at 1 — otherwise the watermark would skip its new batches.
CREATE TABLE IF NOT EXISTS writer_epochs (
	stream_created UInt64,
	seq_offset UInt64
) ENGINE = MergeTree() ORDER BY stream_created;

CREATE MATERIALIZED VIEW IF NOT EXISTS events_hourly_mv TO events_hourly AS
SELECT tenant_id, campaign_id, toStartOfHour(event_time) AS hour, variant, type, currency,
	countState() AS events, sumState(value_micros) AS value_micros,
	uniqExactState(if(user_id != '', user_id, anonymous_id)) AS users
FROM events
GROUP BY tenant_id, campaign_id, hour, variant, type, currency;
