-- +goose Up
-- IF NOT EXISTS: before this migration, services created this very table at start; an outbox
-- made that way is adopted as version 1 with the records still waiting in it.
CREATE TABLE IF NOT EXISTS audit_outbox (
    id          uuid PRIMARY KEY,
    -- authv1.AuditRecord, serialized: exactly what AppendAuditRecords will carry.
    record      bytea NOT NULL,
    create_time timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS audit_outbox_age ON audit_outbox (create_time);

-- +goose Down
DROP TABLE audit_outbox;
