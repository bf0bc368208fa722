-- edgelink schema, SQLite flavour. Times are Unix milliseconds (INTEGER);
-- ids are UUID text; JSON is text. Keep in step with ../postgres.
CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    email       TEXT NOT NULL,
    name        TEXT NOT NULL DEFAULT '',
    issuer      TEXT,
    subject     TEXT,
    created_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX users_email ON users (email);
CREATE UNIQUE INDEX users_issuer_subject ON users (issuer, subject);

CREATE TABLE devices (
    id             TEXT PRIMARY KEY,
    owner_id       TEXT NOT NULL REFERENCES users (id),
    name           TEXT NOT NULL,
    device_type    TEXT NOT NULL DEFAULT 'generic',
    capabilities   TEXT NOT NULL DEFAULT '[]',
    region         TEXT,
    metadata       TEXT NOT NULL DEFAULT '{}',
    public_key     TEXT NOT NULL,
    key_algorithm  TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    last_seen_at   INTEGER,
    revoked_at     INTEGER
);
CREATE INDEX devices_owner ON devices (owner_id);

CREATE TABLE device_challenges (
    challenge   TEXT PRIMARY KEY,
    device_id   TEXT NOT NULL REFERENCES devices (id),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
CREATE INDEX device_challenges_expires ON device_challenges (expires_at);

CREATE TABLE refresh_tokens (
    id          TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL,
    device_id   TEXT NOT NULL REFERENCES devices (id),
    family_id   TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    revoked_at  INTEGER
);
CREATE UNIQUE INDEX refresh_tokens_hash ON refresh_tokens (token_hash);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_device ON refresh_tokens (device_id);

CREATE TABLE tunnel_sessions (
    id               TEXT PRIMARY KEY,
    device_id        TEXT NOT NULL REFERENCES devices (id),
    owner_id         TEXT NOT NULL REFERENCES users (id),
    relay_id         TEXT NOT NULL,
    relay_url        TEXT NOT NULL,
    remote_addr      TEXT NOT NULL,
    connected_at     INTEGER NOT NULL,
    last_heartbeat   INTEGER NOT NULL,
    disconnected_at  INTEGER,
    close_reason     TEXT
);
CREATE INDEX tunnel_sessions_device ON tunnel_sessions (device_id, disconnected_at);
CREATE INDEX tunnel_sessions_relay ON tunnel_sessions (relay_id, disconnected_at);
