-- +goose Up
-- The provider's latest reported status of a sent message (delivered, bounce, undelivered…),
-- set once per provider event (see provider_events).
ALTER TABLE ledger ADD COLUMN delivery_status text NOT NULL DEFAULT '';
ALTER TABLE ledger ADD COLUMN delivery_status_time timestamptz;

-- Provider webhook events already received, keyed on what stays the same when the provider
-- redelivers (SendGrid's sg_event_id may change; Twilio callbacks carry no time: epoch).
-- finished: the event's effects are done and its pipeline event published; an unfinished row
-- is redone (idempotently) when the provider redelivers after an error.
CREATE TABLE provider_events (
    provider    text NOT NULL,
    message_id  text NOT NULL,
    event_type  text NOT NULL,
    event_time  timestamptz NOT NULL,
    tenant_id   text NOT NULL,
    ledger_id   bigint NOT NULL,
    finished    boolean NOT NULL DEFAULT false,
    create_time timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (provider, message_id, event_type, event_time)
);
-- Pruning (keys older than the providers' redelivery window).
CREATE INDEX provider_events_create ON provider_events (create_time);

-- +goose Down
DROP TABLE provider_events;
ALTER TABLE ledger DROP COLUMN delivery_status_time;
ALTER TABLE ledger DROP COLUMN delivery_status;
