-- +goose Up
-- One row per data-subject erasure dsr asked for (ParticipantService.StartErasure): a repeated
-- call and GetErasure answer from it, after any restart. It keeps no identifier in clear: the
-- erased users by id, and the requested emails as SHA-256 hashes under the row's random salt,
-- which the verification compares with every user and invitation of the tenant.
CREATE TABLE erasures (
    tenant_id    uuid NOT NULL,
    dsr_request  text NOT NULL,
    user_ids     uuid[] NOT NULL,
    users        bigint NOT NULL,
    sessions     bigint NOT NULL,
    api_keys     bigint NOT NULL,
    invitations  bigint NOT NULL,
    email_salt   bytea NOT NULL,
    email_hashes bytea[] NOT NULL,
    create_time  timestamptz NOT NULL DEFAULT now(),
    update_time  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, dsr_request)
);
-- The export and erasure find a creator's API keys and every refresh token of a user.
CREATE INDEX api_keys_creator ON api_keys (tenant_id, creator);
CREATE INDEX refresh_tokens_user_family ON refresh_tokens (user_id, family_id);

-- +goose Down
DROP INDEX refresh_tokens_user_family;
DROP INDEX api_keys_creator;
DROP TABLE erasures;
