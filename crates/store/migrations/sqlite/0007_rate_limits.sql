-- Request counters shared by every api-server instance (issue #10): one
-- row per limited key (a token, a user, a device, a client address) and
-- fixed window; instances add what they counted since their last flush.
CREATE TABLE rate_limits (
    key           TEXT PRIMARY KEY,
    window_start  INTEGER NOT NULL,
    count         INTEGER NOT NULL
);
CREATE INDEX rate_limits_window ON rate_limits (window_start);
