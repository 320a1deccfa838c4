-- +goose Up
CREATE TABLE campaigns (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- The tenant from the caller's credential (auth owns tenants; no foreign key across services).
    tenant_id           text NOT NULL,
    name                text NOT NULL,
    description         text NOT NULL DEFAULT '',
    channel             text NOT NULL CHECK (channel IN ('email', 'sms', 'push', 'web', 'display', 'social')),
    state               text NOT NULL CHECK (state IN ('draft', 'scheduled', 'active', 'paused', 'budget_exhausted',
                                                       'completed', 'cancelled', 'archived')),
    -- The schedule as the user wrote it (wall-clock times in time_zone) ...
    schedule_start      text NOT NULL DEFAULT '',
    schedule_end        text NOT NULL DEFAULT '',
    time_zone           text NOT NULL DEFAULT '',
    -- ... and as the instants they resolve to, for the scheduler's queries.
    start_time          timestamptz,
    end_time            timestamptz,
    budget_total_micros bigint NOT NULL DEFAULT 0 CHECK (budget_total_micros >= 0),
    budget_daily_micros bigint NOT NULL DEFAULT 0 CHECK (budget_daily_micros >= 0),
    budget_currency     text NOT NULL DEFAULT '',
    budget_pacing       text NOT NULL DEFAULT 'asap' CHECK (budget_pacing IN ('asap', 'even')),
    goal_event          text NOT NULL DEFAULT '',
    -- [{"name": "a", "weight": 50}, ...]
    variants            jsonb NOT NULL DEFAULT '[]',
    tags                text[] NOT NULL DEFAULT '{}',
    labels              jsonb NOT NULL DEFAULT '{}',
    creator             text NOT NULL,
    revision            bigint NOT NULL DEFAULT 1,
    exhausted           text NOT NULL DEFAULT '' CHECK (exhausted IN ('', 'total', 'daily')),
    resume_time         timestamptz,
    state_time          timestamptz NOT NULL,
    -- When the campaign was scheduled: spend counts against its total budget from then on.
    launch_time         timestamptz,
    -- clock_timestamp(), not now(): keyset pages order by (create_time, id), and rows created
    -- later in a long transaction must not sort before rows already listed.
    create_time         timestamptz NOT NULL DEFAULT clock_timestamp(),
    update_time         timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((state = 'budget_exhausted') = (exhausted <> '')),
    CHECK (resume_time IS NULL OR exhausted = 'daily')
);
CREATE INDEX campaigns_page_create ON campaigns (tenant_id, create_time, id);
CREATE INDEX campaigns_page_name ON campaigns (tenant_id, (name COLLATE "C"), id);
CREATE INDEX campaigns_tags ON campaigns USING gin (tags);
-- The scheduler's queries: what is due, across tenants.
CREATE INDEX campaigns_due_start ON campaigns (start_time) WHERE state = 'scheduled';
CREATE INDEX campaigns_due_end ON campaigns (end_time) WHERE state IN ('active', 'paused', 'budget_exhausted');
CREATE INDEX campaigns_due_resume ON campaigns (resume_time) WHERE state = 'budget_exhausted';
CREATE INDEX campaigns_budgeted ON campaigns (id) WHERE state IN ('active', 'budget_exhausted');

-- Every state change, by users and by the scheduler, written in the transaction that made it.
CREATE TABLE campaign_transitions (
    seq            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id             uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    tenant_id      text NOT NULL,
    campaign_id    uuid NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    from_state     text NOT NULL,
    to_state       text NOT NULL,
    trigger        text NOT NULL,
    actor          text NOT NULL,
    effective_time timestamptz NOT NULL,
    record_time    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX campaign_transitions_campaign ON campaign_transitions (tenant_id, campaign_id, seq);

-- +goose Down
DROP TABLE campaign_transitions;
DROP TABLE campaigns;
