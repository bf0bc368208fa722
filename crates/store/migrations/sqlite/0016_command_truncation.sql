-- Whether a native command's stdout / stderr went past the device's
-- output cap (issue #13: the agent caps captured output and says so).
-- NULL: not known (intermediaries report no such flag; edge-agent proxy
-- notes it in stderr instead).
ALTER TABLE commands ADD COLUMN stdout_truncated INTEGER;
ALTER TABLE commands ADD COLUMN stderr_truncated INTEGER;
