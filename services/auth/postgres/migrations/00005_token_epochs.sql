-- +goose Up
-- Token epochs make revocation immediate: an access token carries the epochs of its user and
-- tenant at issue; raising one (disable, role change, session revocation, password change,
-- suspension) refuses every token issued before. token_epoch_time lets ListRevocations return
-- only the changes younger than the longest token lifetime.
ALTER TABLE users ADD COLUMN token_epoch bigint NOT NULL DEFAULT 0, ADD COLUMN token_epoch_time timestamptz;
ALTER TABLE tenants ADD COLUMN token_epoch bigint NOT NULL DEFAULT 0, ADD COLUMN token_epoch_time timestamptz;
CREATE INDEX users_token_epoch_time ON users (token_epoch_time) WHERE token_epoch_time IS NOT NULL;
CREATE INDEX tenants_token_epoch_time ON tenants (token_epoch_time) WHERE token_epoch_time IS NOT NULL;
CREATE INDEX api_keys_revoke_time ON api_keys (revoke_time) WHERE revoke_time IS NOT NULL;

-- +goose Down
DROP INDEX api_keys_revoke_time;
ALTER TABLE tenants DROP COLUMN token_epoch, DROP COLUMN token_epoch_time;
ALTER TABLE users DROP COLUMN token_epoch, DROP COLUMN token_epoch_time;
