-- +goose Up
-- A dsr erasure's progress per (tenant, dsr request): the contacts it deleted, by id only (no
-- personal data), so that GetErasure can finish and verify it without the identifiers.
CREATE TABLE subject_erasures (
    tenant_id    text NOT NULL,
    dsr_request  text NOT NULL,
    contact_ids  text[] NOT NULL DEFAULT '{}',
    contacts     bigint NOT NULL DEFAULT 0,
    deliveries   bigint NOT NULL DEFAULT 0,
    create_time  timestamptz NOT NULL DEFAULT clock_timestamp(),
    update_time  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, dsr_request)
);
-- A contact's ledger rows (export and erasure of a data subject).
CREATE INDEX ledger_contact ON ledger (tenant_id, contact_id);

-- +goose Down
DROP INDEX ledger_contact;
DROP TABLE subject_erasures;
