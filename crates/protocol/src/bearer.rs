//! Bearer credentials in `Authorization` (RFC 6750 §2.1): the one rule
//! every edgelink endpoint uses to read them.

use http::{HeaderMap, header};

/// The bearer token of a request, if it has one. The scheme is matched
/// without regard to case (RFC 9110 §11.1); surrounding spaces are
/// dropped; an empty token is no token. Other schemes (Basic…) are not
/// bearer tokens.
pub fn token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_tokens_are_trimmed() {
        let mut h = HeaderMap::new();
        assert_eq!(token(&h), None);
        for (value, want) in [
            ("Bearer abc", Some("abc")),
            ("bearer  xyz ", Some("xyz")),
            ("BEARER t", Some("t")),
            ("Basic abc", None),
            ("Bearer ", None),
            ("Bearer", None),
            ("Bearerabc", None),
        ] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(token(&h), want, "{value}");
        }
    }
}
