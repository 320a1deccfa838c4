-- +goose Up
-- The meter-event outbox: one row per report of units (from_value, to_value] of a tenant's
-- meter on a day, written BEFORE the event is sent to Stripe. Its identifier is what Stripe
-- deduplicates on, so a resend after a crash or a lost answer is counted once. A (tenant,
-- meter, day) has at most one row that is not acked: a new report is planned only once every
-- earlier one is acked, from the last acked total (UNIQUE on from_value makes two planners
-- agree). customer_id, event_name and event_time are fixed when the row is written, so every
-- attempt sends the very same event.
CREATE TABLE meter_reports (
    identifier      text        PRIMARY KEY,
    tenant_id       text        NOT NULL,
    meter           text        NOT NULL,
    day             date        NOT NULL,
    from_value      bigint      NOT NULL CHECK (from_value >= 0),
    to_value        bigint      NOT NULL CHECK (to_value > from_value),
    customer_id     text        NOT NULL,
    event_name      text        NOT NULL,
    event_time      timestamptz NOT NULL,
    -- pending (to send or being sent) | acked (Stripe holds it) | rejected (Stripe refused
    -- it for good: last_error says why) | too_old (its time left Stripe's 35-day window
    -- before it could be sent)
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'acked', 'rejected', 'too_old')),
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text        NOT NULL DEFAULT '',
    -- when the next attempt is due; a claimed row is leased until then, so a sender that
    -- died mid-send is taken over (with the same identifier) once the lease ends
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    create_time     timestamptz NOT NULL DEFAULT clock_timestamp(),
    done_time       timestamptz,
    UNIQUE (tenant_id, meter, day, from_value)
);
CREATE INDEX meter_reports_due ON meter_reports (next_attempt_at) WHERE status = 'pending';

-- The stored daily reconciliations: per day, tenant and meter, our usage, what Stripe
-- acknowledged to us, what Stripe's event summaries say, and the explanation of any
-- difference.
CREATE TABLE reconciliations (
    day          date        NOT NULL,
    tenant_id    text        NOT NULL,
    meter        text        NOT NULL,
    ours         bigint      NOT NULL,
    reported     bigint      NOT NULL,
    -- NULL when Stripe could not be asked (no customer, no meter)
    stripe       bigint,
    difference   bigint      NOT NULL,
    explanation  text        NOT NULL,
    create_time  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (day, tenant_id, meter)
);

-- +goose Down
DROP TABLE reconciliations;
DROP TABLE meter_reports;
