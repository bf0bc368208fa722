//! Web origins (RFC 6454) as browsers compare them, on the `url` crate:
//! scheme and host are case-insensitive, the default port is the same as no
//! port (`https://h:443` is `https://h`), and international host names are
//! compared in their ASCII (punycode) form, which is what browsers send in
//! `Origin`.

use std::fmt;

/// An `http`/`https` origin: scheme, host and port, nothing else.
#[derive(Clone, PartialEq, Eq)]
pub struct WebOrigin {
    origin: url::Origin,
    serialized: String,
}

/// Why a configured URL is not an origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// Not a URL at all.
    #[error("{0:?} is not a URL: {1}")]
    Invalid(String, String),
    /// Not http or https.
    #[error("{0:?} must start with https:// or http://")]
    Scheme(String),
    /// Carries a path, query, fragment or user info.
    #[error("{0:?} must be an origin: scheme://host[:port], no path, query or user")]
    NotBare(String),
}

impl WebOrigin {
    /// A configured origin (`public_url`, a devices domain): `http` or
    /// `https`, a host, an optional port, at most a `/` for a path.
    pub fn parse(text: &str) -> Result<Self, OriginError> {
        let u = url::Url::parse(text.trim()).map_err(|e| OriginError::Invalid(text.to_owned(), e.to_string()))?;
        if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
            return Err(OriginError::Scheme(text.to_owned()));
        }
        if u.path() != "/" || u.query().is_some() || u.fragment().is_some() || !u.username().is_empty() {
            return Err(OriginError::NotBare(text.to_owned()));
        }
        Ok(Self::of(&u))
    }

    fn of(u: &url::Url) -> Self {
        let origin = u.origin();
        WebOrigin { serialized: origin.ascii_serialization(), origin }
    }

    /// True when an `Origin` request header names this origin. `null`,
    /// garbage and other schemes never match.
    pub fn matches(&self, header: &str) -> bool {
        url::Url::parse(header.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .is_some_and(|u| u.origin() == self.origin)
    }

    /// `scheme://host[:port]` without a default port or trailing slash.
    pub fn as_str(&self) -> &str {
        &self.serialized
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &str {
        match &self.origin {
            url::Origin::Tuple(scheme, ..) => scheme,
            url::Origin::Opaque(_) => "",
        }
    }

    /// True for `https`.
    pub fn is_https(&self) -> bool {
        self.scheme() == "https"
    }

    /// `host[:port]`, as a `Host` header carries it (no default port).
    pub fn authority(&self) -> &str {
        self.serialized.split_once("://").map_or("", |(_, a)| a)
    }
}

impl fmt::Display for WebOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.serialized)
    }
}

impl fmt::Debug for WebOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebOrigin({})", self.serialized)
    }
}

/// `text` as an absolute URL with one of `schemes` and a host, or None.
/// The one check of every configured URL (relay, API, JWKS, tunnel).
pub fn parse_url(text: &str, schemes: &[&str]) -> Option<url::Url> {
    url::Url::parse(text.trim()).ok().filter(|u| schemes.contains(&u.scheme()) && u.host().is_some())
}

/// True when `u` names this machine (a loopback address, `localhost` or a
/// `*.localhost` name): plain `http`/`ws` there never crosses a network.
pub fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        None => false,
    }
}

/// Checks a configured service URL: one of `schemes`, and a secure one
/// (`https`, `wss`) unless it stays on this machine or `allow_insecure` is
/// set. `field` names the setting in the message.
pub fn check_service_url(field: &str, text: &str, schemes: &[&str], allow_insecure: bool) -> Result<url::Url, String> {
    let u = parse_url(text, schemes).ok_or_else(|| format!("{field} must be a {} URL", schemes.join("/")))?;
    if matches!(u.scheme(), "http" | "ws") && !is_loopback(&u) && !allow_insecure {
        return Err(format!(
            "{field} {text} is plain {} to another machine: anyone on the path could read or change it; \
             use {}, or set allow_insecure_{field} = true if the network is trusted",
            u.scheme(),
            if u.scheme() == "ws" { "wss" } else { "https" }
        ));
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_origins_are_normalised() {
        let o = WebOrigin::parse("https://Edge.Example/").unwrap();
        assert_eq!(o.as_str(), "https://edge.example");
        assert_eq!(WebOrigin::parse("https://edge.example:443").unwrap(), o);
        assert_eq!(WebOrigin::parse("http://127.0.0.1:3721").unwrap().authority(), "127.0.0.1:3721");
        assert_eq!(WebOrigin::parse("https://bücher.example").unwrap().as_str(), "https://xn--bcher-kva.example");
        assert!(o.is_https());
        for bad in [
            "edge.example",
            "ftp://edge.example",
            "https://edge.example/app",
            "https://u@edge.example",
            "https://edge.example/?x=1",
            "https://edge.example/#f",
            "https://",
        ] {
            assert!(WebOrigin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn origin_headers_match_as_browsers_compare() {
        let o = WebOrigin::parse("https://edge.example").unwrap();
        for same in
            ["https://edge.example", "https://EDGE.example", "https://edge.example:443", "https://edge.example/"]
        {
            assert!(o.matches(same), "{same}");
        }
        for other in [
            "http://edge.example",
            "https://edge.example:8443",
            "https://evil.example",
            "null",
            "",
            "https://edge.example.evil.example",
            "https://edge.exampl",
            "ws://edge.example",
        ] {
            assert!(!o.matches(other), "{other}");
        }
        let idn = WebOrigin::parse("https://bücher.example:8443").unwrap();
        assert!(idn.matches("https://xn--bcher-kva.example:8443"));
        assert!(idn.matches("https://bücher.example:8443"));
        assert!(!idn.matches("https://xn--bcher-kva.example"));
        let local = WebOrigin::parse("http://localhost:80/").unwrap();
        assert_eq!(local.as_str(), "http://localhost");
        assert!(local.matches("http://localhost"));
    }

    #[test]
    fn configured_urls_need_their_scheme_and_a_host() {
        assert!(parse_url("wss://relay.example/tunnel", &["ws", "wss"]).is_some());
        assert!(parse_url("https://relay.example/tunnel", &["ws", "wss"]).is_none());
        assert!(parse_url("http://", &["http"]).is_none());
        assert!(parse_url("relay.example:3800", &["http"]).is_none());
    }

    #[test]
    fn plain_transport_is_refused_off_this_machine_unless_allowed() {
        let web = &["http", "https"];
        assert!(check_service_url("jwks_url", "http://127.0.0.1:3721/.well-known/jwks.json", web, false).is_ok());
        assert!(check_service_url("jwks_url", "http://localhost:3721/x", web, false).is_ok());
        assert!(check_service_url("jwks_url", "http://[::1]:3721/x", web, false).is_ok());
        assert!(check_service_url("jwks_url", "https://api.example/x", web, false).is_ok());
        let e = check_service_url("jwks_url", "http://api.example/x", web, false).unwrap_err();
        assert!(e.contains("allow_insecure_jwks_url") && e.contains("https"), "{e}");
        assert!(check_service_url("jwks_url", "http://10.0.0.5/x", web, true).is_ok());
        let e = check_service_url("agent_tunnel_url", "ws://relay.example/tunnel", &["ws", "wss"], false).unwrap_err();
        assert!(e.contains("wss"), "{e}");
    }
}
