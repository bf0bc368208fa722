-- Remote commands through seed 001's intermediaries (issue #13). An
-- intermediary connects to api-server's Socket.IO namespace /proxy with
-- its id and key; only a keyed digest of the key is stored. A command is
-- stored before it is dispatched; its SSH credentials never are (they
-- live in memory until an intermediary takes the command). Times are
-- Unix ms.
CREATE TABLE intermediaries (
    id            TEXT PRIMARY KEY,
    owner_id      TEXT NOT NULL REFERENCES users (id),
    name          TEXT NOT NULL,
    group_name    TEXT NOT NULL DEFAULT '',
    key_hash      TEXT NOT NULL UNIQUE,
    allowed_ips   TEXT NOT NULL DEFAULT '',
    created_at    BIGINT NOT NULL,
    rotated_at    BIGINT,
    last_seen_at  BIGINT,
    last_seen_ip  TEXT,
    revoked_at    BIGINT
);
CREATE INDEX intermediaries_owner ON intermediaries (owner_id, created_at);

CREATE TABLE commands (
    id               TEXT PRIMARY KEY,
    owner_id         TEXT NOT NULL REFERENCES users (id),
    intermediary_id  TEXT,
    group_name       TEXT,
    ran_on           TEXT,
    host             TEXT NOT NULL,
    port             INTEGER NOT NULL,
    username         TEXT NOT NULL,
    command          TEXT NOT NULL,
    timeout_ms       BIGINT NOT NULL,
    status           TEXT NOT NULL,
    stdout           TEXT,
    stderr           TEXT,
    exit_code        INTEGER,
    error            TEXT,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT
);
CREATE INDEX commands_owner ON commands (owner_id, created_at);
