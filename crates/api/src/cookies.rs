//! Reading the `Cookie` header and writing `Set-Cookie` for the two cookies
//! api-server sets: the browser session and the pending sign-in.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};

/// Session cookie name when cookies are Secure: `__Host-` makes the
/// browser refuse it unless Secure, Path=/ and no Domain, so a sibling
/// subdomain cannot plant or shadow it.
pub const SESSION_SECURE: &str = "__Host-edgelink_session";
/// Session cookie name for plain-http development.
pub const SESSION_PLAIN: &str = "edgelink_session";
/// Pending sign-in cookie name when Secure. `__Host-` (so `Path=/`, no
/// `Domain`): a sibling subdomain cannot plant its own pending sign-in in
/// a victim's browser and have the victim finish the attacker's sign-in
/// (login CSRF), which a path-scoped `__Secure-` cookie allowed.
pub const LOGIN_SECURE: &str = "__Host-edgelink_login";
/// Pending sign-in cookie name for plain-http development.
pub const LOGIN_PLAIN: &str = "edgelink_login";
/// Cookie headers longer than this are ignored (no identity from them).
const MAX_COOKIE_HEADER: usize = 8 * 1024;

/// Cookie names and attributes for one deployment.
#[derive(Debug, Clone, Copy)]
pub struct CookiePolicy {
    /// Whether cookies carry `Secure` (and the prefixed names).
    pub secure: bool,
}

impl CookiePolicy {
    /// Name of the session cookie.
    pub fn session_name(self) -> &'static str {
        if self.secure { SESSION_SECURE } else { SESSION_PLAIN }
    }

    /// Name of the pending sign-in cookie.
    pub fn login_name(self) -> &'static str {
        if self.secure { LOGIN_SECURE } else { LOGIN_PLAIN }
    }

    fn attrs(self, path: &str, max_age: Option<Duration>) -> String {
        let mut s = format!("; Path={path}; HttpOnly; SameSite=Lax");
        if self.secure {
            s.push_str("; Secure");
        }
        match max_age {
            Some(d) => s.push_str(&format!("; Max-Age={}", d.as_secs())),
            None => s.push_str("; Max-Age=0"),
        }
        s
    }

    /// `Set-Cookie` for the session cookie, living `max_age`.
    pub fn set_session(self, value: &str, max_age: Duration) -> HeaderValue {
        header_value(format!("{}={value}{}", self.session_name(), self.attrs("/", Some(max_age))))
    }

    /// `Set-Cookie` that deletes the session cookie.
    pub fn clear_session(self) -> HeaderValue {
        header_value(format!("{}={}", self.session_name(), self.attrs("/", None)))
    }

    /// `Set-Cookie` for the pending sign-in (host-only, `Path=/`).
    pub fn set_login(self, value: &str, max_age: Duration) -> HeaderValue {
        header_value(format!("{}={value}{}", self.login_name(), self.attrs("/", Some(max_age))))
    }

    /// `Set-Cookie` that deletes the pending sign-in cookie.
    pub fn clear_login(self) -> HeaderValue {
        header_value(format!("{}={}", self.login_name(), self.attrs("/", None)))
    }
}

fn header_value(s: String) -> HeaderValue {
    // Names are constants and values are base64url; nothing else reaches here.
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The value of cookie `name` from the request's `Cookie` headers (see
/// [`edgelink_auth::cookie::find`]: read as bytes, so another
/// application's cookie that is not ASCII does not hide ours). When the
/// name appears more than once the first wins (browsers send the most
/// specific path first).
pub fn get<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter(|v| v.len() <= MAX_COOKIE_HEADER)
        .find_map(|v| edgelink_auth::cookie::find(v.as_bytes(), name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cookies_among_several_headers() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; edgelink_session=xyz.tag"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(get(&h, "edgelink_session"), Some("xyz.tag"));
        assert_eq!(get(&h, "b"), Some("2"));
        assert_eq!(get(&h, "edgelink"), None);
    }

    #[test]
    fn a_cookie_that_is_not_ascii_does_not_hide_the_session() {
        let mut h = HeaderMap::new();
        // A sibling application's cookie on the parent domain, UTF-8.
        h.append(
            header::COOKIE,
            HeaderValue::from_bytes("lang=espa\u{f1}ol; edgelink_session=xyz.tag".as_bytes()).unwrap(),
        );
        assert_eq!(get(&h, "edgelink_session"), Some("xyz.tag"));
        let mut long = HeaderMap::new();
        long.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("edgelink_session=a; pad={}", "x".repeat(9000))).unwrap(),
        );
        assert_eq!(get(&long, "edgelink_session"), None, "headers over the limit give no identity");
    }

    #[test]
    fn secure_cookies_are_host_prefixed_httponly_lax_and_secure() {
        let p = CookiePolicy { secure: true };
        let v = p.set_session("v", Duration::from_secs(60));
        let v = v.to_str().unwrap();
        assert!(v.starts_with("__Host-edgelink_session=v; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=60"), "{v}");
        let l = p.set_login("x", Duration::from_secs(600));
        let l = l.to_str().unwrap();
        assert!(l.starts_with("__Host-edgelink_login=x; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=600"), "{l}");
        assert!(!l.contains("Domain"), "{l}");
        assert!(p.clear_login().to_str().unwrap().starts_with("__Host-edgelink_login=; Path=/;"));
        let plain = CookiePolicy { secure: false }.set_session("v", Duration::from_secs(60));
        assert!(!plain.to_str().unwrap().contains("Secure"));
        assert!(p.clear_session().to_str().unwrap().contains("Max-Age=0"));
    }
}
