-- +goose Up
-- One row per data-subject request: the job's whole state (see package dsr).
CREATE TABLE requests (
    id                text PRIMARY KEY,
    -- The tenant from the caller's credential (auth owns tenants; no foreign key across services).
    tenant_id         text NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('access', 'erasure', 'suppress', 'unsuppress')),
    regulation        text NOT NULL CHECK (regulation IN ('gdpr', 'ccpa')),
    state             text NOT NULL CHECK (state IN ('received', 'suppressing', 'running', 'verifying', 'completed', 'failed', 'cancelled')),
    -- The client's idempotency key; NULL when none.
    request_id        text,
    -- [{"kind","value"}]: values cleared (purged) 7 days after the request ends.
    subject           jsonb NOT NULL,
    -- [{"kind","value","hash","linked","linked_by"}]: values cleared with subject.
    covered           jsonb NOT NULL,
    participants      jsonb NOT NULL DEFAULT '[]',
    failure_reason    text NOT NULL DEFAULT '',
    created_by        text NOT NULL,
    create_time       timestamptz NOT NULL,
    update_time       timestamptz NOT NULL,
    deadline_time     timestamptz NOT NULL,
    end_time          timestamptz,
    extension         jsonb,
    export            jsonb,
    receipt_payload   text,
    receipt_signature bytea,
    receipt_key_id    text,
    next_attempt_at   timestamptz NOT NULL,
    identifiers_purged boolean NOT NULL DEFAULT false,
    UNIQUE (tenant_id, request_id)
);
CREATE INDEX requests_due ON requests (next_attempt_at) WHERE state IN ('received', 'suppressing', 'running', 'verifying');
CREATE INDEX requests_tenant_newest ON requests (tenant_id, create_time DESC, id DESC);
CREATE INDEX requests_ended ON requests (end_time) WHERE end_time IS NOT NULL;

-- The suppression list: hashes only. A hash is suppressed while any row holds it; each request
-- that suppresses it has its own row, so cancelling one request keeps another's.
CREATE TABLE suppressions (
    tenant_id    text NOT NULL,
    subject_hash text NOT NULL CHECK (subject_hash ~ '^[0-9a-f]{64}$'),
    request      text NOT NULL REFERENCES requests (id),
    create_time  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, subject_hash, request)
);
CREATE INDEX suppressions_request ON suppressions (request);

-- ACCESS exports: newline-delimited JSON records, at most 1 MiB a chunk, read one at a time.
CREATE TABLE export_chunks (
    request     text NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
    participant text NOT NULL,
    seq         integer NOT NULL,
    records     integer NOT NULL,
    data        bytea NOT NULL,
    PRIMARY KEY (request, participant, seq)
);

-- Receipt signing keys: the private key only sealed under a key-encryption key.
CREATE TABLE receipt_keys (
    kid         text PRIMARY KEY,
    public_key  bytea NOT NULL,
    private_key bytea NOT NULL,
    kek_id      text NOT NULL,
    create_time timestamptz NOT NULL
);

-- Each tenant's privacy policy (privacy.Policy as JSON); no row: the default.
CREATE TABLE policies (
    tenant_id   text PRIMARY KEY,
    version     bigint NOT NULL,
    policy      jsonb NOT NULL,
    update_time timestamptz NOT NULL
);

-- +goose Down
DROP TABLE policies;
DROP TABLE receipt_keys;
DROP TABLE export_chunks;
DROP TABLE suppressions;
DROP TABLE requests;
