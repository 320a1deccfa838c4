-- +goose Up
-- The campaigns the dispatcher drives: their channel (to settle a stopped campaign's open rows
-- with the right provider), the activation whose recipients were resolved, and which replica
-- drives the campaign now (a lease, renewed while it runs).
CREATE TABLE dispatch_campaigns (
    tenant_id           text NOT NULL,
    campaign_id         text NOT NULL,
    channel             text NOT NULL CHECK (channel IN ('email', 'sms')),
    -- The campaign's state_time when it became active, once its recipients are in the ledger.
    resolved_activation timestamptz,
    resolved_time       timestamptz,
    driver              text NOT NULL DEFAULT '',
    driver_expiry       timestamptz,
    PRIMARY KEY (tenant_id, campaign_id)
);

-- Recipient listings (by ledger id within a campaign).
CREATE INDEX ledger_campaign_id ON ledger (tenant_id, campaign_id, id);

-- Frequency caps read a contact's rows across campaigns through ledger_contact (00005).

-- +goose Down
DROP INDEX ledger_campaign_id;
DROP TABLE dispatch_campaigns;
