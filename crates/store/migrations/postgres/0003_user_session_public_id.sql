-- Browser sessions get a public handle, so a user can list and end their
-- sessions without the API ever exposing the hash of a cookie id.
ALTER TABLE user_sessions ADD COLUMN public_id TEXT NOT NULL DEFAULT '';
CREATE INDEX user_sessions_public ON user_sessions (user_id, public_id);
