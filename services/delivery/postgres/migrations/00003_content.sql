-- +goose Up
-- Sender identities: who a tenant's messages come from (an email from-address, or a Twilio
-- messaging service or number). verified is set by an administrator.
CREATE TABLE sender_identities (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id             text NOT NULL,
    channel               text NOT NULL CHECK (channel IN ('email', 'sms')),
    from_email            text NOT NULL DEFAULT '',
    from_name             text NOT NULL DEFAULT '',
    reply_to              text NOT NULL DEFAULT '',
    messaging_service_sid text NOT NULL DEFAULT '',
    from_number           text NOT NULL DEFAULT '',
    verified              boolean NOT NULL DEFAULT false,
    create_time           timestamptz NOT NULL DEFAULT clock_timestamp(),
    update_time           timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The target of campaign_contents' foreign key, which keeps it within the tenant.
    UNIQUE (tenant_id, id)
);

-- A campaign's content: one row per (tenant, campaign). The variants' templates are one JSON
-- array (read and written as a whole, at most 20 variants).
CREATE TABLE campaign_contents (
    tenant_id             text NOT NULL,
    -- campaigns owns campaigns: no foreign key across services.
    campaign_id           uuid NOT NULL,
    channel               text NOT NULL CHECK (channel IN ('email', 'sms')),
    -- NULL: every contact of the tenant.
    segment_id            uuid,
    sender_identity_id    uuid NOT NULL,
    -- Quiet hours and send-at-local-time as seconds from local midnight.
    quiet_start_seconds   integer NOT NULL DEFAULT 0,
    quiet_end_seconds     integer NOT NULL DEFAULT 0,
    send_at_local_seconds integer,
    message_cost_micros   bigint NOT NULL DEFAULT 0 CHECK (message_cost_micros >= 0),
    message_cost_currency text NOT NULL DEFAULT '',
    click_cost_micros     bigint NOT NULL DEFAULT 0 CHECK (click_cost_micros >= 0),
    click_cost_currency   text NOT NULL DEFAULT '',
    no_sms_stop_footer    boolean NOT NULL DEFAULT false,
    variants              jsonb NOT NULL,
    revision              bigint NOT NULL CHECK (revision >= 1),
    create_time           timestamptz NOT NULL DEFAULT clock_timestamp(),
    update_time           timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, campaign_id),
    -- An identity in use cannot be deleted.
    CONSTRAINT campaign_contents_sender_identity FOREIGN KEY (tenant_id, sender_identity_id)
        REFERENCES sender_identities (tenant_id, id) ON DELETE RESTRICT
);
CREATE INDEX campaign_contents_sender_identity_idx ON campaign_contents (tenant_id, sender_identity_id);

-- +goose Down
DROP TABLE campaign_contents;
DROP TABLE sender_identities;
