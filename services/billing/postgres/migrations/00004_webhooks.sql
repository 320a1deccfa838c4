-- +goose Up
-- Stripe events acted on, by event id: a webhook's id is inserted (ON CONFLICT DO NOTHING) in
-- the transaction of its effect, so a redelivery finds it and does nothing. Kept, not pruned:
-- a few rows a tenant a month, and the history answers "what did Stripe tell us".
CREATE TABLE stripe_events (
    event_id     text        PRIMARY KEY,
    type         text        NOT NULL,
    created      timestamptz NOT NULL,
    customer_id  text        NOT NULL DEFAULT '',
    -- the tenant the customer mapped to when the event arrived (NULL: none)
    tenant_id    text,
    received     timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- acted: the event changed the account; outcome says what happened
    -- (applied | no_change | stale | unknown_customer)
    acted        boolean     NOT NULL DEFAULT false,
    outcome      text        NOT NULL DEFAULT ''
);
CREATE INDEX stripe_events_tenant ON stripe_events (tenant_id, created);

-- The creation time of the last Stripe event applied to the account: older events delivered
-- late do not undo newer state.
ALTER TABLE billing_accounts ADD COLUMN last_event_at timestamptz;
CREATE INDEX billing_accounts_flagged ON billing_accounts (flagged_at) WHERE status = 'flagged';

-- +goose Down
DROP INDEX billing_accounts_flagged;
ALTER TABLE billing_accounts DROP COLUMN last_event_at;
DROP TABLE stripe_events;
