-- +goose Up
-- Usage per tenant, UTC day and meter. A row holds the value last recomputed from the sources
-- of truth (the metering job UPSERTs it, so a recomputation after a crash or a retry writes the
-- same number, never adds). A closed day is final: the job no longer recomputes it.
CREATE TABLE usage (
    tenant_id    text        NOT NULL,
    day          date        NOT NULL,
    meter        text        NOT NULL,
    value        bigint      NOT NULL CHECK (value >= 0),
    computed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    closed       boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, day, meter)
);
CREATE INDEX usage_day ON usage (day, tenant_id);

-- Plans: a tenant's limits per meter. limits is a JSON array of
-- {"meter": "...", "limit": N, "hard": bool, "period": "day"|"month"}.
CREATE TABLE plans (
    tenant_id    text        PRIMARY KEY,
    name         text        NOT NULL DEFAULT '',
    limits       jsonb       NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(limits) = 'array'),
    revision     bigint      NOT NULL DEFAULT 1,
    update_time  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_by   text        NOT NULL DEFAULT ''
);

-- +goose Down
DROP TABLE plans;
DROP TABLE usage;
