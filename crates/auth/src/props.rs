//! Property tests of what an attacker hands the server: cookies, sealed
//! sign-in state, device JWTs, PEM keys and signature text. Nothing
//! panics; nothing forged or altered is accepted.

use proptest::prelude::*;

use crate::cookie::{CookieKeys, SessionId};
use crate::device_key::DevicePublicKey;
use crate::signing::SigningKey;
use crate::token::{TokenIssuer, TokenVerifier};

fn keys() -> CookieKeys {
    CookieKeys::new(vec![vec![7; 32]]).unwrap()
}

proptest! {
    #[test]
    fn arbitrary_cookie_values_are_refused(value in "\\PC{0,200}") {
        let k = keys();
        prop_assert!(k.verify("edgelink_session", &value).is_none());
        prop_assert!(k.open("edgelink_login", &value).is_none());
    }

    #[test]
    fn signed_cookies_verify_only_unaltered_and_under_their_name(flip in 0usize..200, bit in 0u8..6) {
        let k = keys();
        let id = SessionId::generate();
        let value = k.sign("edgelink_session", &id);
        prop_assert!(k.verify("edgelink_session", &value).is_some());
        prop_assert!(k.verify("edgelink_login", &value).is_none());
        let mut bytes = value.clone().into_bytes();
        let i = flip % bytes.len();
        bytes[i] ^= 1 << bit;
        if let Ok(altered) = String::from_utf8(bytes)
            && altered != value
        {
            prop_assert!(k.verify("edgelink_session", &altered).is_none(), "{}", altered);
        }
    }

    #[test]
    fn sealed_payloads_open_only_unaltered(payload in proptest::collection::vec(any::<u8>(), 0..300), flip in 0usize..500) {
        let k = keys();
        let sealed = k.seal("edgelink_login", &payload).unwrap();
        prop_assert_eq!(k.open("edgelink_login", &sealed), Some(payload));
        let mut bytes = sealed.clone().into_bytes();
        let i = flip % bytes.len();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(bytes).unwrap();
        if altered != sealed {
            prop_assert!(k.open("edgelink_login", &altered).is_none());
        }
    }

    #[test]
    fn arbitrary_and_altered_device_tokens_are_refused(junk in "\\PC{0,300}", flip in 0usize..400) {
        let key = SigningKey::ephemeral().unwrap();
        let verifier = TokenVerifier::new("iss").with_signing_key(&key);
        prop_assert!(verifier.verify(&junk).is_err());
        let _ = TokenVerifier::kid_of(&junk);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let (token, _) = TokenIssuer::new(&key, "iss", 300).issue("d", "u", now).unwrap();
        let mut bytes = token.clone().into_bytes();
        let i = flip % bytes.len();
        bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
        let altered = String::from_utf8(bytes).unwrap();
        if altered != token {
            prop_assert!(verifier.verify(&altered).is_err(), "{}", altered);
        }
    }

    #[test]
    fn arbitrary_pem_and_signature_text_never_panic(text in "\\PC{0,400}", sig in "[0-9a-zA-Z+/=_-]{0,200}") {
        let _ = DevicePublicKey::from_pem(&text);
        let _ = DevicePublicKey::from_pem(&format!("-----BEGIN PUBLIC KEY-----\n{text}\n-----END PUBLIC KEY-----\n"));
        let key = crate::agent_key::AgentKey::generate().unwrap();
        let public = DevicePublicKey::from_pem(&key.public_key_pem()).unwrap();
        prop_assert!(public.verify_encoded(b"challenge", &sig).is_err());
    }
}
