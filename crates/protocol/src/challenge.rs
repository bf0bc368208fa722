//! The challenge text a device signs.
//!
//! The challenge is an opaque string to the device: it signs its UTF-8 bytes
//! as they are (RSA-PSS-SHA256 or Ed25519). Binding the device id and a
//! purpose into the text gives domain separation without asking old clients
//! to sign anything but the string they were handed.

/// Prefix of every challenge.
pub const PREFIX: &str = "edgelink-device-auth:v1";

/// Builds the challenge for `device_id` from a random nonce already encoded
/// as text.
pub fn build(device_id: &str, nonce: &str) -> String {
    format!("{PREFIX}:{device_id}:{nonce}")
}

/// True when `challenge` was built for `device_id`.
pub fn is_for_device(challenge: &str, device_id: &str) -> bool {
    challenge
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_prefix(':'))
        .and_then(|rest| rest.strip_prefix(device_id))
        .is_some_and(|rest| rest.starts_with(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_binds_device() {
        let c = build("dev-1", "abc");
        assert!(is_for_device(&c, "dev-1"));
        assert!(!is_for_device(&c, "dev-2"));
        assert!(!is_for_device(&c, "dev"));
    }
}
