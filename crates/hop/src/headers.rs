//! Hop-by-hop headers (RFC 9110 §7.6.1): each hop of a forwarded request
//! (api-server, relay, agent) removes them, except the pair that carries an
//! upgrade through.

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// True when the request asks for a protocol upgrade (`Connection:
/// upgrade` plus an `Upgrade` header).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Headers that describe one connection, never the message (RFC 9110
/// §7.6.1), in the lower case both strippers compare against.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers and those the Connection header names. With
/// `keep_upgrade`, `Upgrade` stays and `Connection` becomes `upgrade`.
pub fn strip(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        if !(keep_upgrade && *n == "upgrade") {
            headers.remove(*n);
        }
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Response headers a device's answer may hand a browser on a cloud
/// origin: what describes the content and its caching validators, and what
/// completes a WebSocket handshake. Everything else (cookies, CORS, NEL and
/// Report-To, Clear-Site-Data, HSTS, Alt-Svc, Accept-CH, caching policy,
/// authentication challenges, links) would act on that origin's browser
/// state or on other users, and is dropped.
pub const DEVICE_RESPONSE_ALLOWED: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "content-language",
    "content-disposition",
    "content-range",
    "accept-ranges",
    "etag",
    "last-modified",
    "vary",
    "location",
    "date",
    "retry-after",
    "x-frame-options",
    // A 101 answer.
    "upgrade",
    "connection",
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
];

/// True when a device's answer may carry this header (any case) to a
/// browser (see `DEVICE_RESPONSE_ALLOWED`). Asked for every header of
/// every answer on the device paths: the names are picked by length first
/// (a test checks this against the list).
pub fn device_response_allowed(name: &str) -> bool {
    let candidates: &[&str] = match name.len() {
        4 => &["etag", "vary", "date"],
        7 => &["upgrade"],
        8 => &["location"],
        10 => &["connection"],
        11 => &["retry-after"],
        12 => &["content-type"],
        13 => &["content-range", "accept-ranges", "last-modified"],
        14 => &["content-length"],
        15 => &["x-frame-options"],
        16 => &["content-encoding", "content-language"],
        19 => &["content-disposition"],
        20 => &["sec-websocket-accept"],
        22 => &["sec-websocket-protocol"],
        24 => &["sec-websocket-extensions"],
        _ => return false,
    };
    candidates.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// Keeps only the device response headers on the allowlist (see
/// `DEVICE_RESPONSE_ALLOWED`); returns how many were dropped.
pub fn allow_device_response(headers: &mut HeaderMap) -> usize {
    let before = headers.len();
    let dropped: Vec<HeaderName> = headers.keys().filter(|k| !device_response_allowed(k.as_str())).cloned().collect();
    for name in dropped {
        headers.remove(name);
    }
    before - headers.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowlist_by_length_is_the_list() {
        for name in DEVICE_RESPONSE_ALLOWED {
            assert!(device_response_allowed(name), "{name}");
            assert!(device_response_allowed(&name.to_ascii_uppercase()), "{name}");
        }
        let others = ["set-cookie", "etag2", "dat", "content-typo", "access-control-allow-origin", "", "link"];
        for name in
            others.iter().chain(crate::headers::HOP_BY_HOP.iter().filter(|h| **h != "connection" && **h != "upgrade"))
        {
            assert_eq!(
                device_response_allowed(name),
                DEVICE_RESPONSE_ALLOWED.iter().any(|a| a.eq_ignore_ascii_case(name)),
                "{name}"
            );
            assert!(!device_response_allowed(name), "{name}");
        }
    }

    #[test]
    fn hop_by_hop_headers_go_but_upgrade_can_stay() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret, Upgrade"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        assert!(is_upgrade(&h));
        let mut a = h.clone();
        strip(&mut a, false);
        assert!(a.get("x-secret").is_none() && a.get("keep-alive").is_none());
        assert!(a.get(header::UPGRADE).is_none() && a.get(header::CONNECTION).is_none());
        assert!(a.get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(a.get("x-kept").unwrap(), "1");
        assert!(!is_upgrade(&a));
        strip(&mut h, true);
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
    }

    #[test]
    fn device_answers_keep_only_content_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("content-type", "text/html"),
            ("etag", "\"1\""),
            ("location", "/x"),
            ("sec-websocket-accept", "abc"),
            ("set-cookie", "a=1"),
            ("nel", "{}"),
            ("report-to", "{}"),
            ("clear-site-data", "\"*\""),
            ("strict-transport-security", "max-age=1"),
            ("alt-svc", "h3=\":443\""),
            ("accept-ch", "Sec-CH-UA"),
            ("cache-control", "public, max-age=3600"),
            ("access-control-allow-origin", "https://evil.example"),
            ("access-control-allow-credentials", "true"),
            ("www-authenticate", "Basic"),
            ("link", "<https://evil.example>; rel=preload"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        assert_eq!(allow_device_response(&mut h), 12);
        let kept: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(kept, ["content-type", "etag", "location", "sec-websocket-accept"]);
    }

    proptest::proptest! {
        #[test]
        fn no_hop_by_hop_or_named_header_survives_a_strip(
            names in proptest::collection::vec("[a-z-]{1,12}", 0..8),
            connection in "[a-zA-Z, -]{0,40}",
            keep_upgrade in proptest::bool::ANY,
        ) {
            let mut h = HeaderMap::new();
            for n in &names {
                if let Ok(name) = HeaderName::from_bytes(n.as_bytes()) {
                    h.append(name, HeaderValue::from_static("v"));
                }
            }
            if let Ok(v) = HeaderValue::from_str(&connection) {
                h.insert(header::CONNECTION, v);
            }
            h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
            let named: Vec<String> = connection.split(',').map(|t| t.trim().to_ascii_lowercase()).filter(|t| !t.is_empty()).collect();
            strip(&mut h, keep_upgrade);
            proptest::prop_assert!(h.get(header::TRANSFER_ENCODING).is_none() && h.get("proxy-connection").is_none());
            for n in named {
                if !keep_upgrade || !matches!(n.as_str(), "upgrade" | "connection") {
                    proptest::prop_assert!(h.get(n.as_str()).is_none(), "{}", n);
                }
            }
            let _ = allow_device_response(&mut h);
            proptest::prop_assert!(h.keys().all(|k| DEVICE_RESPONSE_ALLOWED.contains(&k.as_str())));
        }
    }
}
