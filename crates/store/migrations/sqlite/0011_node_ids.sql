-- Seed 000's client names its node itself ("node-001"): that name is kept
-- as the device's node_id, unique in the deployment because the seed's
-- login (`{"node_id"}` alone) must find exactly one device.
ALTER TABLE devices ADD COLUMN node_id TEXT;
CREATE UNIQUE INDEX devices_node_id ON devices (node_id);
