-- Personal API tokens (issue #10): programs act as their user with the
-- token's scopes. Only a keyed digest of the secret is stored. Scopes and
-- the address allowlist are space-separated text. Times are Unix ms.
CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    owner_id      TEXT NOT NULL REFERENCES users (id),
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    scopes        TEXT NOT NULL,
    allowed_ips   TEXT NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    last_used_at  INTEGER,
    last_used_ip  TEXT,
    revoked_at    INTEGER
);
CREATE INDEX api_tokens_owner ON api_tokens (owner_id, created_at);
