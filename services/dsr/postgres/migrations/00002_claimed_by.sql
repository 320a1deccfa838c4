-- +goose Up
-- The runner that claimed a request last (dsr.Runner's identity: host and listen address). A
-- runner starting again under the same identity (the same process restarted, after a kill -9
-- say) makes its old claims due at once instead of waiting out their lease.
ALTER TABLE requests ADD COLUMN IF NOT EXISTS claimed_by text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE requests DROP COLUMN IF EXISTS claimed_by;
