-- Seed 000's client names its node itself ("node-001"): that name is kept
-- as the device's node_id, unique in the deployment because the seed's
-- login (`{"node_id"}` alone) must find exactly one device.
ALTER TABLE devices ADD COLUMN node_id TEXT;
CREATE UNIQUE INDEX devices_node_id ON devices (node_id);

-- The latest heartbeat in full (seed 000's node listing shows a node's
-- reported status, load and resources without a history query).
ALTER TABLE device_latest ADD COLUMN sample TEXT;
