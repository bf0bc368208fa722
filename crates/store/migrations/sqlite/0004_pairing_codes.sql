-- One-time pairing codes (issue #4): a signed-in user creates one, a device
-- exchanges it once for a device record owned by that user. Only SHA-256
-- of the code is stored. Times are Unix milliseconds.
CREATE TABLE pairing_codes (
    code_hash   TEXT PRIMARY KEY,
    owner_id    TEXT NOT NULL REFERENCES users (id),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    device_id   TEXT REFERENCES devices (id)
);
CREATE INDEX pairing_codes_owner ON pairing_codes (owner_id, expires_at);
