-- +goose Up
-- Units recorded by other services on the USAGE stream (events_accepted: a batch's events of
-- one day, by the analytics writer; analytics_queries: one per query run), keyed by the unit's
-- id so a redelivery or a publisher's retry counts once. A day's value of those meters is the
-- sum of its rows, recomputed, never incremented.
CREATE TABLE usage_units (
    id           text        PRIMARY KEY,
    tenant_id    text        NOT NULL,
    day          date        NOT NULL,
    meter        text        NOT NULL,
    units        bigint      NOT NULL CHECK (units >= 0)
);
CREATE INDEX usage_units_day ON usage_units (day, tenant_id, meter);

-- The quota crossings the metering job saw: one row per tenant, meter and period of a limit,
-- the first time the period's usage went past it. The row is written with its audit record in
-- one transaction, so each crossing is audited once however often the job recomputes.
CREATE TABLE quota_crossings (
    tenant_id     text        NOT NULL,
    meter         text        NOT NULL,
    period        text        NOT NULL CHECK (period IN ('day', 'month')),
    period_start  date        NOT NULL,
    hard          boolean     NOT NULL,
    quota_limit   bigint      NOT NULL,
    used          bigint      NOT NULL,
    crossed_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, meter, period, period_start)
);

-- +goose Down
DROP TABLE quota_crossings;
DROP TABLE usage_units;
