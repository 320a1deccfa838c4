-- +goose Up
-- Contacts: the people a tenant sends to. Every column but the ids, revision and times is
-- personal data (export and erase cover them).
CREATE TABLE contacts (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- The tenant from the caller's credential (auth owns tenants; no foreign key across services).
    tenant_id            text NOT NULL,
    -- NULL when absent, so that the partial unique indexes below ignore missing identifiers.
    user_id              text,
    email                text,
    phone                text,
    attributes           jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    time_zone            text NOT NULL DEFAULT '',
    locale               text NOT NULL DEFAULT '',
    email_consent        text NOT NULL DEFAULT 'unknown' CHECK (email_consent IN ('unknown', 'granted', 'revoked')),
    email_consent_source text NOT NULL DEFAULT '',
    email_consent_time   timestamptz,
    sms_consent          text NOT NULL DEFAULT 'unknown' CHECK (sms_consent IN ('unknown', 'granted', 'revoked')),
    sms_consent_source   text NOT NULL DEFAULT '',
    sms_consent_time     timestamptz,
    suppressed           boolean NOT NULL DEFAULT false,
    suppression_reason   text NOT NULL DEFAULT '',
    revision             bigint NOT NULL DEFAULT 1,
    create_time          timestamptz NOT NULL DEFAULT clock_timestamp(),
    update_time          timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (user_id IS NOT NULL OR email IS NOT NULL OR phone IS NOT NULL),
    CHECK (user_id <> '' AND email <> '' AND phone <> '')
);
CREATE UNIQUE INDEX contacts_tenant_email ON contacts (tenant_id, email) WHERE email IS NOT NULL;
CREATE UNIQUE INDEX contacts_tenant_phone ON contacts (tenant_id, phone) WHERE phone IS NOT NULL;
CREATE UNIQUE INDEX contacts_tenant_user_id ON contacts (tenant_id, user_id) WHERE user_id IS NOT NULL;
-- Listing pages (oldest first) and segment evaluation pages (by id).
CREATE INDEX contacts_tenant_create ON contacts (tenant_id, create_time, id);
CREATE INDEX contacts_tenant_id ON contacts (tenant_id, id);
-- attributes @> '{"k": "v"}' (a segment's equals conditions).
CREATE INDEX contacts_attributes ON contacts USING gin (attributes jsonb_path_ops);

-- Segments: saved filters, evaluated at send time.
CREATE TABLE segments (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   text NOT NULL,
    name        text NOT NULL,
    filter      jsonb NOT NULL,
    create_time timestamptz NOT NULL DEFAULT clock_timestamp(),
    update_time timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (tenant_id, name)
);
CREATE INDEX segments_tenant_id ON segments (tenant_id, id);

-- +goose Down
DROP TABLE segments;
DROP TABLE contacts;
