-- Native commands (issue #13): a command for a device's agent rather than
-- an intermediary. The message that tells the agent carries only the
-- command's id; the agent claims the command from its relay (pending, and
-- this device's) before running it. `args` is JSON {"args": [...],
-- "env": {...}}; `expires_at` (Unix ms) ends a command no agent claimed.
ALTER TABLE commands ADD COLUMN device_id TEXT;
ALTER TABLE commands ADD COLUMN args TEXT;
ALTER TABLE commands ADD COLUMN expires_at BIGINT;
CREATE INDEX commands_device ON commands (device_id, status);
