//! The caller's address: the TCP peer, unless that peer is a configured
//! trusted proxy (a load balancer), in which case the nearest address in
//! `X-Forwarded-For` that is not itself a trusted proxy. Rate limits, the
//! session list, the `X-Forwarded-For` sent to devices and intermediaries'
//! allowlists use it; the gate resolves it once per request ([`ClientAddr`]).

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, HeaderName};

pub use edgelink_protocol::net::Cidr;

/// The client's address as the gate resolved it once per request (a
/// request extension), for the handlers that need it: the session list,
/// `X-Forwarded-For` to devices, intermediaries' allowlists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// `ip` as `Display` writes it; an IPv4 address without `fmt` (the user
/// path writes the caller's address on every forwarded request).
pub fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else { return ip.to_string() };
    let mut s = String::with_capacity(15);
    for (i, o) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        if o >= 100 {
            s.push(char::from(b'0' + o / 100));
        }
        if o >= 10 {
            s.push(char::from(b'0' + o / 10 % 10));
        }
        s.push(char::from(b'0' + o % 10));
    }
    s
}

/// The header trusted proxies append the address they saw to (a name
/// made once: looked up on every request).
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client address for a request from `peer` with `headers` (see
/// [`edgelink_protocol::net::client_ip`]).
pub fn client_ip(trusted: &[Cidr], peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
    let forwarded = || headers.get_all(&X_FORWARDED_FOR).iter().map(|v| v.as_bytes());
    Some(edgelink_protocol::net::client_ip(trusted, peer?.ip(), forwarded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for a in 0..=255u8 {
            for ip in [[a, 0, 9, 10], [1, a, 99, 100], [255, 254, a, 0], [10, 0, 0, a]] {
                let ip = IpAddr::from(ip);
                assert_eq!(ip_text(ip), ip.to_string());
            }
        }
        for ip in ["::1", "2001:db8::8:800:200c:417a", "::ffff:192.0.2.1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }
    use axum::http::HeaderValue;

    #[test]
    fn blocks_parse_and_match() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("192.0.2.7").unwrap().contains("192.0.2.7".parse().unwrap()));
        assert!(Cidr::parse("fd00::/8").unwrap().contains("fd12::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "fd00::/129"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        let from_config: Vec<Cidr> = serde_json::from_str(r#"["10.0.0.0/8", "192.0.2.7"]"#).unwrap();
        assert_eq!(serde_json::to_string(&from_config).unwrap(), r#"["10.0.0.0/8","192.0.2.7/32"]"#);
        let bad = serde_json::from_str::<Vec<Cidr>>(r#"["10.0.0.0/40"]"#).unwrap_err();
        assert!(bad.to_string().contains("10.0.0.0/40"), "{bad}");
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6, 203.0.113.9, 10.0.0.2"));
        let from = |ip: &str| Some(SocketAddr::new(ip.parse().unwrap(), 1000));
        // From the load balancer: the nearest untrusted hop (a client cannot
        // choose its address by sending its own header first).
        assert_eq!(client_ip(&trusted, from("10.0.0.1"), &h), Some("203.0.113.9".parse().unwrap()));
        // From anyone else: the header is ignored.
        assert_eq!(client_ip(&trusted, from("198.51.100.1"), &h), Some("198.51.100.1".parse().unwrap()));
        assert_eq!(client_ip(&[], from("10.0.0.1"), &h), Some("10.0.0.1".parse().unwrap()));
        h.insert("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(client_ip(&trusted, from("10.0.0.1"), &h), Some("10.0.0.1".parse().unwrap()));
    }
}
