-- Native commands with an SSH target and canceling running ones (issue
-- #13, ADR 27). `secret_sealed` is the target's password or private key
-- sealed to the device's own key (only its agent can open it); it is
-- cleared when the command ends. `host_key` is the pinned host-key
-- fingerprint. `cancel_requested_at` (Unix ms) marks a running command
-- its owner asked to stop: the agent kills it and reports it canceled.
ALTER TABLE commands ADD COLUMN secret_sealed TEXT;
ALTER TABLE commands ADD COLUMN host_key TEXT;
ALTER TABLE commands ADD COLUMN cancel_requested_at INTEGER;
