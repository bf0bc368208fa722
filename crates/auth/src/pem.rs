//! PEM: base64 DER between `-----BEGIN X-----` and `-----END X-----`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::Error;

/// Decodes the first PEM block; returns its label and DER bytes.
pub fn decode(text: &str) -> Result<(String, Vec<u8>), Error> {
    let begin = text.find("-----BEGIN ").ok_or_else(|| Error::InvalidKey("no PEM BEGIN line".into()))?;
    let rest = &text[begin + "-----BEGIN ".len()..];
    let label_end = rest.find("-----").ok_or_else(|| Error::InvalidKey("bad PEM BEGIN line".into()))?;
    let label = rest[..label_end].to_owned();
    let body_start = label_end + 5;
    let end_marker = format!("-----END {label}-----");
    let body_end = rest.find(&end_marker).ok_or_else(|| Error::InvalidKey("no PEM END line".into()))?;
    let body: String = rest[body_start..body_end].chars().filter(|c| !c.is_whitespace()).collect();
    let der = STANDARD.decode(body).map_err(|e| Error::InvalidKey(format!("PEM base64: {e}")))?;
    Ok((label, der))
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (OID 1.3.101.112).
pub const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// The SubjectPublicKeyInfo DER of a raw Ed25519 public key.
pub fn ed25519_spki(raw: &[u8; 32]) -> Vec<u8> {
    let mut der = ED25519_SPKI_PREFIX.to_vec();
    der.extend_from_slice(raw);
    der
}

/// Encodes DER as PEM with 64-column lines.
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let der: Vec<u8> = (0..100u8).collect();
        let text = encode("PUBLIC KEY", &der);
        assert_eq!(decode(&text).unwrap(), ("PUBLIC KEY".to_owned(), der));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode("nothing here").is_err());
        assert!(decode("-----BEGIN X-----\n!!!\n-----END X-----").is_err());
        assert!(decode("-----BEGIN X-----\nAAAA\n").is_err());
    }
}
