-- +goose Up
-- A refresh family lives at most a fixed time from the login that started it, however often it
-- rotates: every token carries its family's start.
ALTER TABLE refresh_tokens ADD COLUMN family_start_time timestamptz;
UPDATE refresh_tokens r SET family_start_time = f.start
    FROM (SELECT family_id, min(create_time) AS start FROM refresh_tokens GROUP BY family_id) f
    WHERE f.family_id = r.family_id;
ALTER TABLE refresh_tokens ALTER COLUMN family_start_time SET NOT NULL;

-- +goose Down
ALTER TABLE refresh_tokens DROP COLUMN family_start_time;
