-- +goose Up
-- Invitations to join a tenant. The token is stored only as its SHA-256 hash; "expired" is not a
-- stored state (a pending invitation past expire_time reads as expired).
CREATE TABLE invitations (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    email       text NOT NULL,
    role        text NOT NULL CHECK (role IN ('admin', 'manager', 'analyst', 'viewer')),
    state       text NOT NULL CHECK (state IN ('pending', 'accepted', 'revoked')),
    token_hash  bytea NOT NULL,
    creator     uuid NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    expire_time timestamptz NOT NULL,
    accept_time timestamptz,
    revoke_time timestamptz,
    user_id     uuid REFERENCES users (id),
    CHECK ((state = 'accepted') = (accept_time IS NOT NULL)),
    CHECK ((state = 'revoked') = (revoke_time IS NOT NULL))
);
CREATE INDEX invitations_page ON invitations (tenant_id, create_time, id);

-- +goose Down
DROP TABLE invitations;
