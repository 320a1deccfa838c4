-- +goose Up
-- A tenant's billing account: the Stripe customer it maps to and its standing. Written by the
-- account RPCs and the Stripe webhooks; read by the meter-event reporter (no customer, no
-- report) and the grace-period job (flagged longer than the grace period → suspended).
CREATE TABLE billing_accounts (
    tenant_id           text        PRIMARY KEY,
    stripe_customer_id  text        UNIQUE CHECK (stripe_customer_id <> ''),
    -- ok | flagged (a payment failed or the subscription lapsed) | suspended (by the grace job)
    status              text        NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'flagged', 'suspended')),
    status_reason       text        NOT NULL DEFAULT '',
    flagged_at          timestamptz,
    suspended_at        timestamptz,
    subscription_status text        NOT NULL DEFAULT '',
    revision            bigint      NOT NULL DEFAULT 1,
    create_time         timestamptz NOT NULL DEFAULT clock_timestamp(),
    update_time         timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- +goose Down
DROP TABLE billing_accounts;
