-- Device telemetry (issue #11): the last heartbeat of each minute (kept a
-- day) and of each hour (kept 30 days), per device, as the heartbeat's
-- JSON. Written in batches by the relays and api-server.
CREATE TABLE device_metrics (
    device_id     TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    owner_id      TEXT NOT NULL,
    resolution    TEXT NOT NULL,
    bucket_start  BIGINT NOT NULL,
    at            BIGINT NOT NULL,
    sample        TEXT NOT NULL,
    PRIMARY KEY (device_id, resolution, bucket_start)
);
CREATE INDEX device_metrics_age ON device_metrics (resolution, bucket_start);
