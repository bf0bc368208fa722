//! Session cookies and the sealed pending sign-in, as a browser (or an
//! attacker) presents them: nothing but what the server made opens.
#![no_main]

use std::sync::OnceLock;

use edgelink_auth::cookie::CookieKeys;
use libfuzzer_sys::fuzz_target;

fn keys() -> &'static CookieKeys {
    static KEYS: OnceLock<CookieKeys> = OnceLock::new();
    KEYS.get_or_init(|| CookieKeys::new(vec![vec![7; 32], vec![9; 32]]).unwrap())
}

fuzz_target!(|data: &[u8]| {
    // Any bytes as a `Cookie` header: a value found is visible ASCII.
    if let Some(v) = edgelink_auth::cookie::find(data, "__Host-edgelink_session") {
        assert!(v.bytes().all(|b| b.is_ascii_graphic()));
    }
    for pair in edgelink_auth::cookie::pairs(data) {
        assert!(!pair.is_empty() && !pair.contains(&b';'));
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    assert!(keys().verify("__Host-edgelink_session", text).is_none());
    assert!(keys().open("__Host-edgelink_login", text).is_none());
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(text) {
        headers.insert(http::header::COOKIE, v);
    }
    let _ = edgelink_api::cookies::get(&headers, "__Host-edgelink_session");
});
