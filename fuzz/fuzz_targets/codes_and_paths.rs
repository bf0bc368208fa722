//! Pairing codes, `return_to`, origins and the paths and redirects
//! edgelink checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(c) = edgelink_api::pairing::normalise(text) {
        assert_eq!(c.len(), edgelink_api::pairing::CODE_LEN);
    }
    if let Ok(path) = edgelink_api::browser::local_return_to(Some(text)) {
        assert!(path.starts_with('/') && !path.starts_with("//"));
    }
    let _ = edgelink_protocol::paths::is_control_path(text);
    let _ = edgelink_protocol::origin::WebOrigin::parse(text);
    let origin = edgelink_protocol::origin::WebOrigin::parse("https://edge.example").unwrap();
    let _ = origin.matches(text);
    let _ = edgelink_api::client_ip::Cidr::parse(text);
});
