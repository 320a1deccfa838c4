-- +goose Up
CREATE TABLE api_keys (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    name           text NOT NULL,
    scopes         text[] NOT NULL,
    secret_hash    bytea NOT NULL,
    creator        uuid NOT NULL,
    expire_time    timestamptz,
    create_time    timestamptz NOT NULL DEFAULT now(),
    revoke_time    timestamptz,
    last_used_time timestamptz
);
CREATE INDEX api_keys_page ON api_keys (tenant_id, create_time, id);

-- Refresh tokens are stored as SHA-256 hashes. A family is one login's chain of rotations.
CREATE TABLE refresh_tokens (
    token_hash  bytea PRIMARY KEY,
    family_id   uuid NOT NULL,
    user_id     uuid NOT NULL REFERENCES users (id),
    create_time timestamptz NOT NULL DEFAULT now(),
    expire_time timestamptz NOT NULL,
    used_time   timestamptz,
    revoke_time timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id) WHERE revoke_time IS NULL;

-- Failed logins per account ("account:<tenant>/<email>") and per client address ("address:<ip>").
CREATE TABLE login_failures (
    key          text PRIMARY KEY,
    failures     integer NOT NULL,
    last_failure timestamptz NOT NULL,
    locked_until timestamptz
);

-- The audit log: one hash chain per tenant ('' is the platform's chain). Append-only.
CREATE TABLE audit_records (
    chain          text NOT NULL,
    sequence       bigint NOT NULL,
    id             uuid NOT NULL UNIQUE,
    time           timestamptz NOT NULL,
    tenant_id      text NOT NULL,
    actor          text NOT NULL,
    actor_kind     text NOT NULL,
    method         text NOT NULL,
    resource       text NOT NULL,
    outcome        text NOT NULL,
    request_id     text NOT NULL,
    trace_id       text NOT NULL,
    client_address text NOT NULL,
    service        text NOT NULL,
    previous_hash  text NOT NULL,
    hash           text NOT NULL,
    PRIMARY KEY (chain, sequence)
);
CREATE INDEX audit_records_time ON audit_records (chain, time);

-- +goose StatementBegin
CREATE FUNCTION audit_records_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_records is append-only';
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER audit_records_no_update BEFORE UPDATE OR DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION audit_records_append_only();
CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records
    FOR EACH STATEMENT EXECUTE FUNCTION audit_records_append_only();
-- The service's own role keeps only INSERT and SELECT.
REVOKE UPDATE, DELETE, TRUNCATE ON audit_records FROM CURRENT_USER;

-- +goose Down
DROP TABLE audit_records;
DROP FUNCTION audit_records_append_only();
DROP TABLE login_failures;
DROP TABLE refresh_tokens;
DROP TABLE api_keys;
