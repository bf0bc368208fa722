-- Browser sessions (issue #3): the cookie carries a random id; only its
-- SHA-256 is stored. Times are Unix milliseconds.
CREATE TABLE user_sessions (
    id_hash              TEXT PRIMARY KEY,
    user_id              TEXT NOT NULL REFERENCES users (id),
    created_at           INTEGER NOT NULL,
    last_seen_at         INTEGER NOT NULL,
    idle_expires_at      INTEGER NOT NULL,
    absolute_expires_at  INTEGER NOT NULL,
    user_agent           TEXT NOT NULL DEFAULT '',
    ip                   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX user_sessions_user ON user_sessions (user_id);
CREATE INDEX user_sessions_expiry ON user_sessions (idle_expires_at);
