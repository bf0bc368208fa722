//! Times on the wire: every answer and error body of every edgelink
//! service writes instants as RFC 3339 in UTC with milliseconds
//! (`2026-12-01T11:17:45.123Z`). The caller reads the clock.

/// Unix milliseconds as RFC 3339 UTC with milliseconds. Out-of-range
/// values (beyond year ±262,000) become the epoch.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An RFC 3339 instant (any offset) as Unix milliseconds, or None.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text.trim()).ok().map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_format_with_milliseconds_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_123_456_789), "2026-12-01T11:10:56.789Z");
        assert_eq!(rfc3339(i64::MAX), "1970-01-01T00:00:00.000Z");
        assert_eq!(parse_rfc3339("2026-12-01T11:10:56.789Z"), Some(1_796_123_456_789));
        assert_eq!(parse_rfc3339("2026-12-01T12:10:56.789+01:00"), Some(1_796_123_456_789));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
