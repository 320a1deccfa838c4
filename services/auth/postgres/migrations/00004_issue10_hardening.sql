-- +goose Up
-- A refresh family lives at most a fixed time from the login that started it, however often it
-- rotates: every token carries its family's start.
ALTER TABLE refresh_tokens ADD COLUMN family_start_time timestamptz;
UPDATE refresh_tokens r SET family_start_time = f.start
    FROM (SELECT family_id, min(create_time) AS start FROM refresh_tokens GROUP BY family_id) f
    WHERE f.family_id = r.family_id;
ALTER TABLE refresh_tokens ALTER COLUMN family_start_time SET NOT NULL;

-- Client addresses each account logged in from (hashed with the account key; the newest 10
-- within 90 days): from these the account's failed-login lock does not apply.
CREATE TABLE login_known_addresses (
    account      text NOT NULL,
    address_hash bytea NOT NULL,
    last_seen    timestamptz NOT NULL,
    PRIMARY KEY (account, address_hash)
);

-- Signing-key seeds are encrypted under a key-encryption key from configuration: private_key
-- holds nonce || AES-256-GCM ciphertext and kek_id names the KEK. NULL marks a row from before
-- encryption, still in clear, which auth encrypts on its next start.
ALTER TABLE signing_keys ADD COLUMN kek_id text;

-- +goose Down
ALTER TABLE signing_keys DROP COLUMN kek_id;
DROP TABLE login_known_addresses;
ALTER TABLE refresh_tokens DROP COLUMN family_start_time;
