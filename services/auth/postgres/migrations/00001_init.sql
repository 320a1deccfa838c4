-- +goose Up
CREATE TABLE tenants (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug         text NOT NULL UNIQUE,
    display_name text NOT NULL,
    state        text NOT NULL CHECK (state IN ('active', 'suspended')),
    create_time  timestamptz NOT NULL DEFAULT now(),
    update_time  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenants_page ON tenants (create_time, id);

CREATE TABLE users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- NULL only for platform operators, who act above tenants.
    tenant_id     uuid REFERENCES tenants (id),
    email         text NOT NULL,
    display_name  text NOT NULL DEFAULT '',
    role          text NOT NULL CHECK (role IN ('admin', 'manager', 'analyst', 'viewer', 'platform_operator')),
    state         text NOT NULL CHECK (state IN ('active', 'disabled')),
    password_hash text NOT NULL,
    create_time   timestamptz NOT NULL DEFAULT now(),
    update_time   timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'platform_operator') = (tenant_id IS NULL))
);
CREATE UNIQUE INDEX users_email ON users (tenant_id, lower(email)) NULLS NOT DISTINCT;
CREATE INDEX users_page ON users (tenant_id, create_time, id);

CREATE TABLE signing_keys (
    kid         text PRIMARY KEY,
    private_key bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT clock_timestamp(),
    retire_time timestamptz
);
-- At most one key signs at a time.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys ((true)) WHERE retire_time IS NULL;

-- +goose Down
DROP TABLE signing_keys;
DROP TABLE users;
DROP TABLE tenants;
