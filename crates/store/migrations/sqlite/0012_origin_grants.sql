-- Device origins (issue #12): api-server hands a signed-in user's browser
-- a short-lived, single-use grant for one device's origin; the relay
-- redeems it for a cookie on that origin. Only SHA-256 of the grant is
-- stored; the browser session it came from is kept by its storage hash so
-- that signing out ends the device origin's access too.
CREATE TABLE origin_grants (
    grant_hash    TEXT PRIMARY KEY,
    device_id     TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    user_id       TEXT NOT NULL REFERENCES users (id),
    session_hash  TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    used_at       INTEGER
);
CREATE INDEX origin_grants_expiry ON origin_grants (expires_at);
