//! Public keys devices send at pairing (PEM), and signature text at verify.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(key) = edgelink_auth::device_key::DevicePublicKey::from_pem(text) {
        let _ = key.verify_encoded(b"challenge", "00");
    }
    let _ = edgelink_auth::pem::decode(text);
});
