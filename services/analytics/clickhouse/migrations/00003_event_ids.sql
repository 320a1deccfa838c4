-- event_ids keeps the key (tenant_id, event_id) of every stored event by the day it was received,
-- for the writer's exactly-once per event id (services/analytics/writer): a starting writer
-- rebuilds its in-memory filter from the days of its dedup window, confirms the filter's
-- positives here (sorted by the key: a few granules per look-up), and drops the days older than
-- the window (ALTER TABLE … DROP PARTITION). The materialized view fills it in the same insert
-- as events. Every statement is IF NOT EXISTS, so a run interrupted midway completes on the next
-- start; the backfill may then copy some keys twice, which a membership table does not mind.
-- +goose NO TRANSACTION
-- +goose Up

CREATE TABLE IF NOT EXISTS event_ids (
	tenant_id String,
	event_id String,
	day Date
) ENGINE = MergeTree()
PARTITION BY day
ORDER BY (tenant_id, event_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS event_ids_mv TO event_ids AS
SELECT tenant_id, event_id, toDate(toDateTime(intDiv(received_ms, 1000))) AS day
FROM events;

-- The events stored before this version, of the last 7 days (more than the default 48 h window;
-- a longer window fills up as it passes). One partition a day.
INSERT INTO event_ids (tenant_id, event_id, day)
SELECT tenant_id, event_id, toDate(toDateTime(intDiv(received_ms, 1000))) AS day
FROM events
WHERE received_ms >= (toUInt64(now()) - 7 * 86400) * 1000;
