-- +goose Up
-- IF NOT EXISTS: databases made before these migrations already have the table (created at start
-- with this very DDL); this first version adopts it with its rows.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    scope        text NOT NULL,
    method       text NOT NULL,
    request_id   text NOT NULL,
    request_hash bytea NOT NULL,
    response     bytea,
    create_time  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, method, request_id)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_age ON idempotency_keys (create_time);
