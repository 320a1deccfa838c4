-- +goose Up
-- The privacy officer (dsr.manage, privacy.manage, audit.read) is a tenant role like the others:
-- users and invitations may hold it.
ALTER TABLE users DROP CONSTRAINT users_role_check,
    ADD CONSTRAINT users_role_check CHECK (role IN ('admin', 'manager', 'analyst', 'viewer', 'privacy_officer', 'platform_operator'));
ALTER TABLE invitations DROP CONSTRAINT invitations_role_check,
    ADD CONSTRAINT invitations_role_check CHECK (role IN ('admin', 'manager', 'analyst', 'viewer', 'privacy_officer'));

-- +goose Down
ALTER TABLE invitations DROP CONSTRAINT invitations_role_check,
    ADD CONSTRAINT invitations_role_check CHECK (role IN ('admin', 'manager', 'analyst', 'viewer'));
ALTER TABLE users DROP CONSTRAINT users_role_check,
    ADD CONSTRAINT users_role_check CHECK (role IN ('admin', 'manager', 'analyst', 'viewer', 'platform_operator'));
