//! HTTP paths on the tunnel port and inside tunnel streams, and the one
//! percent-encoding rule for the path pieces edgelink builds.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Kept as they are in a path segment: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
/// Kept in a path carried as a query value: unreserved and `/`.
const PATH_VALUE: &AsciiSet = &SEGMENT.remove(b'/');

/// `s` as one path segment: everything but unreserved characters encoded,
/// so a caller's string can never add a segment or a query.
pub fn encode_segment(s: &str) -> String {
    // This runs on every forwarded request, mostly on ids that need no
    // encoding at all.
    if s.bytes().all(is_unreserved) {
        return s.to_owned();
    }
    utf8_percent_encode(s, SEGMENT).collect()
}

/// RFC 3986's unreserved characters: what [`SEGMENT`] keeps.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// A path (and its query) as the value of a query parameter such as
/// `return_to`: `/` stays readable, everything else but unreserved
/// characters is encoded.
pub fn encode_path_value(s: &str) -> String {
    utf8_percent_encode(s, PATH_VALUE).collect()
}

/// The WebSocket endpoint a device dials on the tunnel port.
pub const TUNNEL: &str = "/tunnel";

/// Prefix of the control API inside the tunnel. Streams the relay opens with
/// this prefix are addressed to the agent itself; streams the device opens
/// always use it. User traffic may never reach it.
pub const CONTROL_PREFIX: &str = "/.edgelink/";

/// Device → relay: a heartbeat with metrics (JSON [`crate::heartbeat::Heartbeat`]).
pub const HEARTBEAT: &str = "/.edgelink/v1/heartbeat";

/// Device → relay: `GET` takes the device's unread messages (`?limit=`);
/// `POST {MESSAGES}/{id}/ack` acknowledges one after it was handled.
pub const MESSAGES: &str = "/.edgelink/v1/messages";

/// Device → relay: `POST {COMMANDS}/{id}/claim` takes a pending native
/// command of this device (answers its command line, args, env and
/// timeout); `POST {COMMANDS}/{id}/result` reports how it ended.
pub const COMMANDS: &str = "/.edgelink/v1/commands";

/// The message type of a native command's notice (content:
/// `{"command_id"}`), reserved to edgelink.
pub const COMMAND_NOTICE_TYPE: &str = "edgelink.command";

/// Relay → device: something waits for it (`{"topic": "messages"}`); the
/// device fetches it over a stream of its own.
pub const NOTIFY: &str = "/.edgelink/v1/notify";

/// Relay → device: the agent's own liveness and identity.
pub const AGENT_INFO: &str = "/.edgelink/v1/info";

/// Header the relay sets on the upgrade response: the session's opaque handle.
pub const SESSION_HEADER: &str = "x-edgelink-session";

/// WebSocket subprotocol both ends name in the upgrade, so a future framing
/// can be negotiated without guessing.
pub const SUBPROTOCOL: &str = "edgelink.yamux.v1";

/// Relay to relay only: the `Authorization` a device-origin request came
/// with (the device app's own, e.g. Basic auth) while the internal API's
/// `Authorization` carries the internal secret. The relay holding the
/// tunnel gives it back to the device as `Authorization`; api-server and
/// the device-origin listener drop it from callers.
pub const DEVICE_AUTHORIZATION_HEADER: &str = "x-edgelink-device-authorization";

/// Set by remote-proxy on the error answers it makes itself (value: the
/// error name), so an api-server forwarding a user's request can tell them
/// from the device's own answers (a moved tunnel, a wrong internal secret).
pub const RELAY_ERROR_HEADER: &str = "x-edgelink-relay-error";

/// True when `path` addresses the control API (and so must never carry user
/// traffic). Percent-encoded and dot-segment variants are caught as well,
/// because a proxy in front of the agent might normalise them.
pub fn is_control_path(path: &str) -> bool {
    // Borrowed unless the path has percent-escapes: this runs on every
    // forwarded request.
    let decoded = percent_decode_str(path).decode_utf8_lossy();
    // Skip empty and "." segments so "/./.edgelink/" and "//.edgelink/"
    // are recognised too.
    let mut segments = decoded.split('/').filter(|s| !s.is_empty() && *s != ".");
    segments.next().is_some_and(|first| first.eq_ignore_ascii_case(".edgelink"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_paths_are_recognised_in_every_spelling() {
        for p in [
            "/.edgelink/v1/heartbeat",
            "/.edgelink",
            "//.edgelink/x",
            "/./.edgelink/x",
            "/%2eedgelink/x",
            "/%2Eedgelink%2fx",
            "/.EDGELINK/x",
            "/%2e%65dgelink/x",
        ] {
            assert!(is_control_path(p), "{p}");
        }
        for p in ["/", "/index.html", "/a/.edgelink/x", "/.edgelinkx/y", "/edgelink"] {
            assert!(!is_control_path(p), "{p}");
        }
    }

    #[test]
    fn encoders_keep_only_unreserved_characters() {
        assert_eq!(encode_segment("abc-123_.~"), "abc-123_.~");
        assert_eq!(encode_segment("../x"), "..%2Fx");
        assert_eq!(encode_segment("a b?c#d"), "a%20b%3Fc%23d");
        assert_eq!(encode_segment("é"), "%C3%A9");
        assert_eq!(encode_path_value("/api/v1/devices/d/http/a b?x=1&y"), "/api/v1/devices/d/http/a%20b%3Fx%3D1%26y");
    }

    #[test]
    fn the_shortcut_for_unreserved_strings_keeps_exactly_what_the_encoder_keeps() {
        for b in 0u8..=127 {
            let s = char::from(b).to_string();
            let kept = utf8_percent_encode(&s, SEGMENT).to_string() == s;
            assert_eq!(is_unreserved(b), kept, "byte {b}");
            assert_eq!(encode_segment(&s), utf8_percent_encode(&s, SEGMENT).to_string(), "byte {b}");
        }
        let id = "90fa0d2a-4818-4404-9210-b1e3eae594f4";
        assert_eq!(encode_segment(id), id);
    }
}
