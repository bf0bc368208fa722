//! Device origins (SPEC §3.4, ADR 22): each device's web service at its own
//! origin, `{scheme}://{device-id}.{devices domain}[:port]/`, served by
//! remote-proxy with paths untouched, so device apps that use absolute
//! paths, cookies, storage and WebSockets work.
//!
//! Entry: api-server issues the signed-in owner a single-use [grant]
//! (60 s) and redirects the browser to the origin's [`AUTH_PATH`]; the
//! relay redeems it and sets a sealed, host-only [`Pass`] cookie naming the
//! user's browser session. Every later request is checked by a
//! [`Gatekeeper`]: the browser session must still be alive (sign-out and
//! revocation end it) and the device must still be the user's (deletion
//! ends it), as of at most `cache_ttl` ago.
//!
//! Isolation helpers: [`rewrite_set_cookie`] makes device cookies
//! host-only and never lets a device set or overwrite the pass;
//! [`strip_pass`] keeps the pass from reaching the device.

pub mod grant;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use edgelink_auth::cookie::CookieKeys;
use edgelink_store::Store;
use http::{HeaderMap, HeaderValue, header};
use serde::{Deserialize, Serialize};

/// Where the relay redeems grants on a device origin.
pub const AUTH_PATH: &str = "/.edgelink/auth";

/// How long a grant may wait to be redeemed.
pub const GRANT_TTL: Duration = Duration::from_secs(60);

/// How long a pass cookie lives in the browser (the browser session it
/// names usually ends first).
pub const PASS_MAX_AGE: Duration = Duration::from_secs(12 * 3600);

/// The pass cookie's name: `__Host-` (host-only, Secure, `Path=/`) on
/// https origins.
pub fn pass_cookie_name(secure: bool) -> &'static str {
    if secure { "__Host-edgelink-pass" } else { "edgelink-pass" }
}

/// True for cookie names a device may never set: the pass under either
/// name, and anything else of ours.
fn reserved(name: &[u8]) -> bool {
    let n = name.trim_ascii();
    ["__host-edgelink", "__secure-edgelink", "edgelink-"]
        .iter()
        .any(|p| n.get(..p.len()).is_some_and(|head| head.eq_ignore_ascii_case(p.as_bytes())))
}

/// The devices domain: scheme, host suffix and port of every device origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicesDomain {
    scheme: String,
    suffix: String,
    port: Option<u16>,
}

impl DevicesDomain {
    /// From a base URL such as `https://devices.example.net` or
    /// `http://devices.localhost:3802` (no path, query or credentials).
    pub fn parse(base: &str) -> Result<Self, String> {
        let u = url::Url::parse(base).map_err(|e| format!("devices_url {base:?}: {e}"))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err("devices_url must be http:// or https://".into());
        }
        if u.path() != "/" || u.query().is_some() || !u.username().is_empty() || u.password().is_some() {
            return Err("devices_url must be scheme://host[:port] only".into());
        }
        let host = u.host_str().ok_or("devices_url needs a host")?.to_ascii_lowercase();
        if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') || !host.contains('.') {
            return Err("devices_url needs a DNS name with a dot (devices get subdomains of it)".into());
        }
        Ok(DevicesDomain { scheme: u.scheme().to_owned(), suffix: host, port: u.port() })
    }

    /// True for https origins.
    pub fn is_secure(&self) -> bool {
        self.scheme == "https"
    }

    /// `device_id`'s origin, `scheme://{id}.{suffix}[:port]`.
    pub fn origin(&self, device_id: &str) -> String {
        match self.port {
            Some(p) => format!("{}://{}.{}:{p}", self.scheme, device_id.to_ascii_lowercase(), self.suffix),
            None => format!("{}://{}.{}", self.scheme, device_id.to_ascii_lowercase(), self.suffix),
        }
    }

    /// The device a `Host` header names: a UUID label directly under the
    /// suffix (the port, if any, is not checked: a proxy may change it).
    pub fn device_of_host(&self, host: &str) -> Option<String> {
        let host = host.trim().to_ascii_lowercase();
        let name = match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h.to_owned(),
            _ => host,
        };
        let label = name.strip_suffix(&self.suffix)?.strip_suffix('.')?;
        (!label.contains('.') && uuid_like(label)).then(|| label.to_owned())
    }
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36
        && s.bytes()
            .enumerate()
            .all(|(i, b)| if matches!(i, 8 | 13 | 18 | 23) { b == b'-' } else { b.is_ascii_hexdigit() })
}

/// What the pass cookie carries (sealed: the browser can neither read nor
/// change it, and the relay never forwards it to the device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pass {
    /// Storage hash of the browser session it came from.
    pub session_hash: String,
    /// The user.
    pub user_id: String,
    /// The one device whose origin it opens.
    pub device_id: String,
    /// When it was issued, Unix ms.
    pub issued_at: i64,
}

impl Pass {
    /// The cookie value.
    pub fn seal(&self, keys: &CookieKeys, cookie_name: &str) -> Option<String> {
        keys.seal(cookie_name, &serde_json::to_vec(self).ok()?)
    }

    /// The pass in a cookie value, if it is one of ours and not too old.
    pub fn open(keys: &CookieKeys, cookie_name: &str, value: &str, now: i64) -> Option<Pass> {
        let p: Pass = serde_json::from_slice(&keys.open(cookie_name, value)?).ok()?;
        (now - p.issued_at < PASS_MAX_AGE.as_millis() as i64 && p.issued_at <= now + 60_000).then_some(p)
    }

    /// The `Set-Cookie` header value for this pass.
    pub fn set_cookie(value: &str, cookie_name: &str, secure: bool) -> String {
        let secure = if secure { "; Secure" } else { "" };
        format!("{cookie_name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}", PASS_MAX_AGE.as_secs())
    }
}

/// A path on the device to land on after entering its origin: it starts
/// with one `/`, is at most 2 KiB and has no control characters; anything
/// else (another host, `//evil`, `/\\evil`) becomes `/`.
pub fn landing(to: Option<&str>) -> String {
    match to {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.starts_with("/\\")
                && p.len() <= 2048
                && !p.chars().any(char::is_control) =>
        {
            p.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// The value of cookie `name` in a request's `Cookie` headers (read as
/// bytes: a device's own cookie that is not ASCII does not hide the pass).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get_all(header::COOKIE).iter().find_map(|v| edgelink_auth::cookie::find(v.as_bytes(), name))
}

/// Removes every reserved cookie (the pass) from the request's `Cookie`
/// headers; the device's own cookies stay, byte for byte.
pub fn strip_pass(headers: &mut HeaderMap) {
    let mut kept: Vec<u8> = Vec::new();
    for v in headers.get_all(header::COOKIE) {
        for pair in edgelink_auth::cookie::pairs(v.as_bytes()) {
            if reserved(edgelink_auth::cookie::pair_name(pair)) {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
    }
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_bytes(&kept)
    {
        headers.insert(header::COOKIE, v);
    }
}

/// A device's `Set-Cookie` made host-only (every `Domain` attribute
/// removed, so no cookie is tossed to sibling devices); None when it would
/// set one of our cookies (the device may not touch the pass).
pub fn rewrite_set_cookie(value: &HeaderValue) -> Option<HeaderValue> {
    let mut parts = value.as_bytes().split(|b| *b == b';');
    let pair = parts.next()?.trim_ascii();
    let name = edgelink_auth::cookie::pair_name(pair);
    if name.is_empty() || reserved(name) {
        return None;
    }
    let mut out = pair.to_vec();
    for attr in parts {
        let a = attr.trim_ascii();
        if a.is_empty() || edgelink_auth::cookie::pair_name(a).eq_ignore_ascii_case(b"domain") {
            continue;
        }
        out.extend_from_slice(b"; ");
        out.extend_from_slice(a);
    }
    HeaderValue::from_bytes(&out).ok()
}

/// Rewrites every `Set-Cookie` of a device's answer (see
/// [`rewrite_set_cookie`]); returns how many were dropped.
pub fn rewrite_device_cookies(headers: &mut HeaderMap) -> usize {
    let values: Vec<HeaderValue> = headers.get_all(header::SET_COOKIE).iter().cloned().collect();
    headers.remove(header::SET_COOKIE);
    let mut dropped = 0;
    for v in values {
        match rewrite_set_cookie(&v) {
            Some(v) => {
                headers.append(header::SET_COOKIE, v);
            }
            None => dropped += 1,
        }
    }
    dropped
}

/// Whether a request may be admitted, decided against the database at
/// most every `ttl` per (browser session, device).
#[derive(Debug)]
pub struct Gatekeeper {
    store: Store,
    ttl: Duration,
    admitted: Mutex<HashMap<(String, String), Instant>>,
}

/// Most decisions remembered (then the memory starts over).
const MAX_REMEMBERED: usize = 100_000;

impl Gatekeeper {
    /// Checks against `store`, remembered for `ttl` (0 = always ask).
    pub fn new(store: Store, ttl: Duration) -> Self {
        Gatekeeper { store, ttl, admitted: Mutex::new(HashMap::new()) }
    }

    /// True when `pass` opens `device_id`'s origin now: it names this
    /// device, its browser session is alive and the device is active and
    /// the user's.
    pub async fn admits(&self, pass: &Pass, device_id: &str, now_ms: i64) -> Result<bool, edgelink_store::Error> {
        if pass.device_id != device_id {
            return Ok(false);
        }
        let key = (pass.session_hash.clone(), pass.device_id.clone());
        if let Some(at) = self.admitted.lock().unwrap_or_else(|e| e.into_inner()).get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(true);
        }
        let session = self.store.get_user_session(&pass.session_hash, now_ms).await?;
        let ok = session.is_some_and(|s| s.user_id == pass.user_id)
            && self.store.active_device(&pass.user_id, device_id).await?.is_some();
        let mut m = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        if ok {
            if m.len() >= MAX_REMEMBERED {
                m.clear();
            }
            m.insert(key, Instant::now());
        } else {
            m.remove(&key);
        }
        Ok(ok)
    }
}

/// Whether a cookie-authenticated request may act on `origin`: safe
/// methods always; unsafe ones and upgrades only when the browser says
/// they come from the same origin (`Origin` equal, or `Sec-Fetch-Site:
/// same-origin`/`none` when no `Origin` is sent). A request with neither
/// header is not a browser's and carries no ambient authority worth
/// forging, so it passes.
pub fn same_origin_ok(headers: &HeaderMap, method: &http::Method, upgrade: bool, origin: &str) -> bool {
    let safe = matches!(*method, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS);
    if safe && !upgrade {
        return true;
    }
    if let Some(o) = headers.get(header::ORIGIN) {
        return o.to_str().is_ok_and(|o| o.eq_ignore_ascii_case(origin));
    }
    if upgrade {
        // Browsers always send Origin on WebSocket handshakes.
        return false;
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some(site) => matches!(site, "same-origin" | "none"),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b6a6b5e-2f7c-4a59-9d0e-6f1d2d6c9b1a";

    #[test]
    fn origins_and_hosts_round_trip() {
        let d = DevicesDomain::parse("http://devices.localhost:3802").unwrap();
        assert_eq!(d.origin(ID), format!("http://{ID}.devices.localhost:3802"));
        assert_eq!(d.device_of_host(&format!("{ID}.devices.localhost:3802")).as_deref(), Some(ID));
        assert_eq!(d.device_of_host(&format!("{}.DEVICES.localhost", ID.to_uppercase())).as_deref(), Some(ID));
        for bad in ["devices.localhost", "x.devices.localhost", &format!("a.{ID}.devices.localhost"), "evil.example"] {
            assert_eq!(d.device_of_host(bad), None, "{bad}");
        }
        assert!(DevicesDomain::parse("http://127.0.0.1:3802").is_err());
        assert!(DevicesDomain::parse("https://devices.example.net/x").is_err());
        assert!(DevicesDomain::parse("https://devices.example.net").unwrap().is_secure());
    }

    #[test]
    fn device_cookies_become_host_only_and_cannot_touch_the_pass() {
        let v =
            |s: &'static str| rewrite_set_cookie(&HeaderValue::from_static(s)).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(v("sid=1; Domain=.devices.localhost; Path=/; HttpOnly").as_deref(), Some("sid=1; Path=/; HttpOnly"));
        assert_eq!(v("sid=1;domain=x;DOMAIN=y").as_deref(), Some("sid=1"));
        assert_eq!(v("edgelink-pass=forged; Path=/"), None);
        assert_eq!(v("__Host-edgelink-pass=forged; Path=/; Secure"), None);
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; edgelink-pass=secret; b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("__Host-edgelink-pass=x"));
        assert_eq!(cookie(&h, "edgelink-pass"), Some("secret"));
        strip_pass(&mut h);
        assert_eq!(h.get(header::COOKIE).unwrap(), "a=1; b=2");
        assert_eq!(v("=x; Path=/"), None, "no name");
        assert_eq!(v("EDGELINK-PASS=forged"), None, "any case");
    }

    #[test]
    fn device_cookies_that_are_not_ascii_pass_as_they_are() {
        // A device app's own cookie in UTF-8 (what `document.cookie` or a
        // server may set) beside the pass.
        let utf8 = |s: &str| HeaderValue::from_bytes(s.as_bytes()).unwrap();
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, utf8("name=Jos\u{e9}; edgelink-pass=secret; b=2"));
        assert_eq!(cookie(&h, "edgelink-pass"), Some("secret"), "the device's cookie does not hide the pass");
        strip_pass(&mut h);
        assert_eq!(h.get(header::COOKIE).unwrap().as_bytes(), "name=Jos\u{e9}; b=2".as_bytes());
        let set = rewrite_set_cookie(&utf8("name=Jos\u{e9}; Domain=.devices.localhost; Path=/")).unwrap();
        assert_eq!(set.as_bytes(), "name=Jos\u{e9}; Path=/".as_bytes());
        assert_eq!(rewrite_set_cookie(&utf8("edgelink-pass=Jos\u{e9}")), None);
    }

    #[test]
    fn landing_paths_stay_on_the_device() {
        assert_eq!(landing(None), "/");
        assert_eq!(landing(Some("/app/?x=1")), "/app/?x=1");
        for bad in ["//evil.example/", "/\\evil.example", "https://evil.example/", "x", "/a\nb"] {
            assert_eq!(landing(Some(bad)), "/", "{bad:?}");
        }
    }

    #[test]
    fn passes_are_sealed_and_expire() {
        let keys = CookieKeys::new(vec![vec![7u8; 32]]).unwrap();
        let p = Pass { session_hash: "h".into(), user_id: "u".into(), device_id: ID.into(), issued_at: 1_000 };
        let v = p.seal(&keys, "edgelink-pass").unwrap();
        assert_eq!(Pass::open(&keys, "edgelink-pass", &v, 2_000), Some(p));
        assert_eq!(Pass::open(&keys, "other-name", &v, 2_000), None);
        assert_eq!(Pass::open(&keys, "edgelink-pass", &v, 1_000 + PASS_MAX_AGE.as_millis() as i64), None);
        let other = CookieKeys::new(vec![vec![8u8; 32]]).unwrap();
        assert_eq!(Pass::open(&other, "edgelink-pass", &v, 2_000), None);
    }

    #[test]
    fn unsafe_requests_and_upgrades_need_the_same_origin() {
        let o = format!("http://{ID}.devices.localhost:3802");
        let with = |k: &'static str, v: &str| {
            let mut h = HeaderMap::new();
            h.insert(k, HeaderValue::from_str(v).unwrap());
            h
        };
        let post = http::Method::POST;
        assert!(same_origin_ok(&HeaderMap::new(), &http::Method::GET, false, &o));
        assert!(same_origin_ok(&with("origin", &o), &post, false, &o));
        assert!(!same_origin_ok(&with("origin", "http://other.devices.localhost:3802"), &post, false, &o));
        assert!(!same_origin_ok(&with("sec-fetch-site", "same-site"), &post, false, &o));
        assert!(same_origin_ok(&with("sec-fetch-site", "same-origin"), &post, false, &o));
        assert!(!same_origin_ok(&HeaderMap::new(), &http::Method::GET, true, &o));
        assert!(same_origin_ok(&with("origin", &o), &http::Method::GET, true, &o));
    }
}
