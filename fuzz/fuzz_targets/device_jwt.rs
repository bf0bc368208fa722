//! Device access tokens as presented to api-server and the relay.
#![no_main]

use std::sync::OnceLock;

use edgelink_auth::signing::SigningKey;
use edgelink_auth::token::TokenVerifier;
use libfuzzer_sys::fuzz_target;

fn verifier() -> &'static TokenVerifier {
    static V: OnceLock<TokenVerifier> = OnceLock::new();
    V.get_or_init(|| TokenVerifier::new("edgelink-api").with_signing_key(&SigningKey::ephemeral().unwrap()))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    assert!(verifier().verify(text).is_err());
    let _ = TokenVerifier::kid_of(text);
});
