//! The local service a device forwards to, as the device announces it when
//! it dials (`x-edgelink-local-origin`, docs/protocol.md §3 and §5): with
//! it, the relay writes each request as that service should see it and the
//! device may splice streams to the service byte for byte.

/// Header a device sends on its tunnel upgrade (`host:port` and an optional
/// base path, `127.0.0.1:8080` or `127.0.0.1:8080/app`); the relay echoes
/// it on its `101` when it will write requests for that service.
pub const HEADER: &str = "x-edgelink-local-origin";

/// At most this long (bytes).
pub const MAX_LEN: usize = 255;

/// Where a device's requests go on the device: `Host` is `authority`,
/// `prefix` (`""` or `/base`, no trailing `/`) goes before every path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalOrigin {
    /// `host:port` (an IPv6 host in brackets).
    pub authority: Box<str>,
    /// The service's base path.
    pub prefix: Box<str>,
}

impl LocalOrigin {
    /// Reads a header value; `None` unless it is a plain `host:port` with
    /// an optional base path of URL path characters (no query, no
    /// fragment, nothing a request line or header could not carry as is).
    pub fn parse(value: &[u8]) -> Option<LocalOrigin> {
        if value.is_empty() || value.len() > MAX_LEN {
            return None;
        }
        let text = std::str::from_utf8(value).ok()?;
        let (authority, path) = match text.find('/') {
            Some(i) => text.split_at(i),
            None => (text, ""),
        };
        let (host, port) = authority.rsplit_once(':')?;
        let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        } else {
            !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        };
        let port_ok = !port.is_empty() && port.len() <= 5 && port.parse::<u16>().is_ok_and(|p| p != 0);
        let path = path.trim_end_matches('/');
        let path_ok = path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@%".contains(&b));
        (host_ok && port_ok && path_ok).then(|| LocalOrigin { authority: authority.into(), prefix: path.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(v: &str) -> Option<(String, String)> {
        LocalOrigin::parse(v.as_bytes()).map(|o| (o.authority.into(), o.prefix.into()))
    }

    #[test]
    fn an_authority_and_a_base_path_are_read() {
        assert_eq!(parsed("127.0.0.1:8080"), Some(("127.0.0.1:8080".into(), "".into())));
        assert_eq!(parsed("localhost:80/app/"), Some(("localhost:80".into(), "/app".into())));
        assert_eq!(parsed("[::1]:81/a/b%20c"), Some(("[::1]:81".into(), "/a/b%20c".into())));
        assert_eq!(parsed("my-host.lan:3000/"), Some(("my-host.lan:3000".into(), "".into())));
    }

    #[test]
    fn anything_a_request_could_not_carry_as_is_is_refused() {
        for bad in [
            "",
            "host",
            "host:",
            "host:0",
            "host:65536",
            ":80",
            "[]:80",
            "[zz]:80",
            "a b:80",
            "h:80/a b",
            "h:80/a?b",
            "h:80/a#b",
            "h:80\r\nx: y",
            "u@h:80",
            "h:80/é",
        ] {
            assert_eq!(parsed(bad), None, "{bad:?}");
        }
        assert_eq!(parsed(&format!("h:1/{}", "a".repeat(MAX_LEN))), None);
    }
}
