//! Property tests of the parsers that take bytes from outside: whatever
//! arrives, they answer without panicking, and what they accept keeps its
//! promise. `make fuzz` drives the same parsers coverage-guided.

use proptest::prelude::*;

use crate::origin::{WebOrigin, parse_url};
use crate::paths::{encode_path_value, encode_segment, is_control_path};

proptest! {
    #[test]
    fn bearer_tokens_are_trimmed_non_empty_slices(value in "\\PC{0,80}") {
        let mut h = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            h.insert(http::header::AUTHORIZATION, v);
        }
        if let Some(t) = crate::bearer::token(&h) {
            prop_assert!(!t.is_empty() && t.trim() == t);
            prop_assert!(value.contains(t));
        }
    }

    #[test]
    fn control_paths_are_caught_in_any_spelling(prefix in "(/|//|/\\./)", rest in "[a-zA-Z0-9/._%-]{0,40}") {
        let plain = format!("{prefix}.edgelink/{rest}");
        prop_assert!(is_control_path(&plain), "{}", plain);
        let encoded = format!("{prefix}%2E%65dgelink/{rest}");
        prop_assert!(is_control_path(&encoded), "{}", encoded);
    }

    #[test]
    fn any_path_is_classified_without_panicking(path in "\\PC{0,120}") {
        let _ = is_control_path(&path);
    }

    #[test]
    fn encoded_segments_stay_one_segment_and_decode_back(s in "\\PC{0,60}") {
        let e = encode_segment(&s);
        prop_assert!(e.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)), "{}", e);
        let back = percent_encoding::percent_decode_str(&e).decode_utf8().unwrap();
        prop_assert_eq!(back, s.as_str());
        let v = encode_path_value(&s);
        prop_assert!(!v.contains(['?', '#', '&', '=', ' ']));
    }

    #[test]
    fn origins_parse_or_refuse_and_match_themselves(text in "(https?|ftp|ws)://[a-zA-Z0-9.:\\[\\]@/?#-]{0,40}") {
        if let Ok(o) = WebOrigin::parse(&text) {
            prop_assert!(o.matches(o.as_str()));
            prop_assert_eq!(WebOrigin::parse(o.as_str()).unwrap(), o.clone());
            prop_assert!(!o.matches("null"));
        }
        let _ = parse_url(&text, &["http", "https"]);
    }

    #[test]
    fn origin_headers_of_any_shape_never_panic(header in "\\PC{0,80}") {
        let o = WebOrigin::parse("https://edge.example").unwrap();
        let _ = o.matches(&header);
    }

    #[test]
    fn heartbeat_and_error_bodies_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = serde_json::from_slice::<crate::heartbeat::Heartbeat>(&bytes);
        let _ = serde_json::from_slice::<crate::error::ErrorBody>(&bytes);
        let _ = serde_json::from_slice::<crate::claims::DeviceClaims>(&bytes);
    }
}
