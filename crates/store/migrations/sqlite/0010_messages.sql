-- Store-and-forward messages (issue #11): a message is written once and
-- has one delivery row per recipient device, which carries its state
-- (pending → delivered → read, or expired). The queue index serves "this
-- device's unread messages, highest priority first, then oldest".
CREATE TABLE messages (
    id            TEXT PRIMARY KEY,
    owner_id      TEXT NOT NULL REFERENCES users (id),
    sender_kind   TEXT NOT NULL,
    sender_id     TEXT NOT NULL,
    message_type  TEXT NOT NULL,
    content       TEXT NOT NULL,
    metadata      TEXT NOT NULL DEFAULT '{}',
    priority      INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
);
CREATE INDEX messages_owner ON messages (owner_id, created_at);

CREATE TABLE message_deliveries (
    message_id    TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    device_id     TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    owner_id      TEXT NOT NULL,
    priority      INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    status        TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    delivered_at  INTEGER,
    finished_at   INTEGER,
    PRIMARY KEY (device_id, message_id)
);
CREATE INDEX message_deliveries_queue ON message_deliveries (device_id, status, priority, created_at);
CREATE INDEX message_deliveries_expiry ON message_deliveries (status, expires_at);
CREATE INDEX message_deliveries_message ON message_deliveries (message_id);
