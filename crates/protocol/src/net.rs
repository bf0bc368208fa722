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
