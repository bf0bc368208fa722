//! Property tests of api-server's own parsers of outside input: pairing
//! codes, `return_to`, device redirects, proxy CIDRs.

use proptest::prelude::*;

proptest! {
    #[test]
    fn pairing_codes_normalise_to_eight_alphabet_characters(text in "\\PC{0,40}") {
        if let Some(c) = crate::pairing::normalise(&text) {
            prop_assert_eq!(c.len(), crate::pairing::CODE_LEN);
            prop_assert!(c.bytes().all(|b| crate::pairing::ALPHABET.contains(&b)));
        }
    }

    #[test]
    fn issued_codes_survive_how_people_type_them(lower in any::<bool>(), spaces in any::<bool>()) {
        let code = crate::pairing::new_code();
        let mut typed = if lower { code.to_lowercase() } else { code.clone() };
        if spaces {
            typed = format!("  {} ", typed.replace('-', " "));
        }
        prop_assert_eq!(crate::pairing::normalise(&typed), crate::pairing::normalise(&code));
        prop_assert!(crate::pairing::normalise(&code).is_some());
    }

    #[test]
    fn an_accepted_return_to_never_leaves_the_site(raw in "\\PC{0,100}") {
        if let Ok(path) = crate::browser::local_return_to(Some(&raw)) {
            let base = url::Url::parse("https://edge.example/").unwrap();
            let target = base.join(&path).unwrap();
            prop_assert_eq!(target.origin(), base.origin(), "{}", path);
        }
    }

    #[test]
    fn proxy_blocks_parse_or_refuse_and_round_trip(text in "[0-9a-f:./]{0,45}") {
        if let Ok(c) = crate::client_ip::Cidr::parse(&text) {
            let again = crate::client_ip::Cidr::parse(&String::from(c)).unwrap();
            prop_assert_eq!(again, c);
        }
    }
}
