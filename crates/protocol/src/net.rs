//! Address blocks as configuration and tokens write them: `10.0.0.0/8`,
//! `fd00::/8`, or one address.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// An address block: `10.0.0.0/8`, `fd00::/8`, or one address
/// (`192.0.2.7`, a /32 or /128). Read with the config or a token request,
/// so a bad entry is refused with its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr(IpNet);

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Cidr(IpNet::from(ip)));
        }
        s.parse::<IpNet>().map(Cidr).map_err(|_| format!("{s:?} is not an IP address or CIDR block"))
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.0.to_string()
    }
}

/// An address allowlist as a request gives it: at most `max` entries, each
/// `ADDR` or `ADDR/PREFIX`; returns them normalized.
pub fn parse_allowlist(entries: &[String], max: usize) -> Result<Vec<String>, String> {
    if entries.len() > max {
        return Err(format!("at most {max} entries"));
    }
    entries.iter().map(|s| s.parse::<Cidr>().map(String::from)).collect()
}

impl Cidr {
    /// Parses `ADDR` or `ADDR/PREFIX`.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        s.parse()
    }

    /// Whether `ip` is inside the block (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

/// Most `X-Forwarded-For` entries a client address is looked for in.
const MAX_FORWARDED_HOPS: usize = 16;

/// The client of a request that arrived from `peer`: `peer` itself, unless
/// it is in `trusted` (a load balancer); then, right to left through the
/// `X-Forwarded-For` values (`forwarded_for`, as they came), the nearest
/// address that is not itself trusted (each trusted proxy appended the
/// address it saw). An entry that is not an address ends the walk; so do
/// [`MAX_FORWARDED_HOPS`] entries. `forwarded_for` is only called for a
/// trusted peer (most requests need no header lookup).
pub fn client_ip<'a, I>(trusted: &[Cidr], peer: IpAddr, forwarded_for: impl FnOnce() -> I) -> IpAddr
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&[u8]> =
        forwarded_for().into_iter().flat_map(|v| v.split(|b| *b == b',')).map(<[u8]>::trim_ascii).collect();
    let mut client = peer;
    for hop in hops.iter().rev().take(MAX_FORWARDED_HOPS) {
        match std::str::from_utf8(hop).ok().and_then(|h| h.parse::<IpAddr>().ok()) {
            Some(ip) => {
                client = ip;
                if !is_trusted(ip) {
                    break;
                }
            }
            None => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_nearest_untrusted_forwarded_address() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let walk = |peer: &str, xff: &[&str]| client_ip(&trusted, ip(peer), || xff.iter().map(|v| v.as_bytes()));
        assert_eq!(walk("192.0.2.1", &["6.6.6.6"]), ip("192.0.2.1"), "an untrusted peer is not believed");
        assert_eq!(walk("10.0.0.1", &["6.6.6.6, 198.51.100.7"]), ip("198.51.100.7"));
        assert_eq!(walk("10.0.0.1", &["6.6.6.6", "198.51.100.7, 10.0.0.2"]), ip("198.51.100.7"), "across headers");
        assert_eq!(walk("10.0.0.1", &[]), ip("10.0.0.1"), "nothing forwarded");
        assert_eq!(walk("10.0.0.1", &["6.6.6.6, junk, 10.0.0.3"]), ip("10.0.0.3"), "junk ends the walk");
        assert_eq!(walk("10.0.0.1", &[" 2001:db8::1 "]), ip("2001:db8::1"));
        let mut xff = vec!["6.6.6.6".to_owned()];
        xff.extend((0..20).map(|i| format!("10.0.1.{i}")));
        let refs: Vec<&str> = xff.iter().map(String::as_str).collect();
        assert_eq!(walk("10.0.0.1", &refs), ip("10.0.1.4"), "at most 16 hops");
        assert_eq!(client_ip(&trusted, ip("10.0.0.1"), || [&b"\xff"[..]]), ip("10.0.0.1"));
    }
}
