-- +goose Up
-- One row per (tenant, campaign, contact): the per-recipient delivery ledger. Its id is the
-- opaque reference given to the providers (no personal data); address is the only personal
-- field (blanked by a dsr erasure).
CREATE TABLE ledger (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The tenant and campaign as their owners (auth, campaigns) name them: no foreign keys
    -- across services.
    tenant_id     text NOT NULL,
    campaign_id   text NOT NULL,
    contact_id    text NOT NULL,
    address       text NOT NULL,
    variant       text NOT NULL,
    state         text NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'skipped', 'unknown')),
    -- Claims so far (a write of an outcome names the attempt it finishes).
    attempt       integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    -- pending: earliest send; unknown: next lookup.
    not_before    timestamptz NOT NULL,
    lease_owner   text NOT NULL DEFAULT '',
    lease_expiry  timestamptz,
    attempt_time  timestamptz,
    provider_id   text NOT NULL DEFAULT '',
    reason        text NOT NULL DEFAULT '',
    create_time   timestamptz NOT NULL,
    update_time   timestamptz NOT NULL,
    UNIQUE (tenant_id, campaign_id, contact_id),
    CHECK (state <> 'sending' OR (lease_owner <> '' AND lease_expiry IS NOT NULL))
);

-- The claim's scan: a campaign's due pending rows in id order.
CREATE INDEX ledger_pending ON ledger (tenant_id, campaign_id, not_before, id) WHERE state = 'pending';
-- Expired leases and due lookups.
CREATE INDEX ledger_sending ON ledger (tenant_id, campaign_id, lease_expiry) WHERE state = 'sending';
CREATE INDEX ledger_unknown ON ledger (tenant_id, campaign_id, not_before) WHERE state = 'unknown';

-- +goose Down
DROP TABLE ledger;
