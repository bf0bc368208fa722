-- Discovery (issue #11): capabilities as rows (indexed, exact matches
-- instead of LIKE over JSON text) and each device's latest heartbeat
-- values that filters use.
CREATE TABLE device_capabilities (
    device_id   TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    capability  TEXT NOT NULL,
    PRIMARY KEY (device_id, capability)
);
CREATE INDEX device_capabilities_by_name ON device_capabilities (capability, device_id);
INSERT OR IGNORE INTO device_capabilities (device_id, capability)
    SELECT d.id, j.value FROM devices d, json_each(d.capabilities) j WHERE j.type = 'text';

CREATE TABLE device_latest (
    device_id  TEXT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    at         INTEGER NOT NULL,
    load_1m    REAL
);
