//! PEM documents (RFC 7468) through `pem-rfc7468`: strict grammar, text
//! before the BEGIN line ignored, constant-time base64 for private keys.

use pem_rfc7468::LineEnding;

use crate::Error;

/// Decodes a PEM document; returns its label and DER bytes.
pub fn decode(text: &str) -> Result<(String, Vec<u8>), Error> {
    let (label, der) =
        pem_rfc7468::decode_vec(text.trim_end().as_bytes()).map_err(|e| Error::InvalidKey(format!("PEM: {e}")))?;
    Ok((label.to_owned(), der))
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (OID 1.3.101.112).
pub const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// The SubjectPublicKeyInfo DER of a raw Ed25519 public key.
pub fn ed25519_spki(raw: &[u8; 32]) -> Vec<u8> {
    let mut der = ED25519_SPKI_PREFIX.to_vec();
    der.extend_from_slice(raw);
    der
}

/// Encodes DER as PEM with 64-column lines and a final newline.
pub fn encode(label: &str, der: &[u8]) -> String {
    // Only an invalid label fails, and callers pass fixed, valid ones.
    pem_rfc7468::encode_string(label, LineEnding::LF, der).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let der: Vec<u8> = (0..100u8).collect();
        let text = encode("PUBLIC KEY", &der);
        assert!(text.starts_with("-----BEGIN PUBLIC KEY-----\n") && text.ends_with("-----END PUBLIC KEY-----\n"));
        assert!(text.lines().all(|l| l.len() <= 64));
        assert_eq!(decode(&text).unwrap(), ("PUBLIC KEY".to_owned(), der.clone()));
        // What people paste: a preamble, CRLF lines, trailing blank lines.
        let pasted = format!("key for cam-1:\r\n{}\r\n\r\n", text.replace('\n', "\r\n"));
        assert_eq!(decode(&pasted).unwrap(), ("PUBLIC KEY".to_owned(), der));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode("nothing here").is_err());
        assert!(decode("-----BEGIN X-----\n!!!\n-----END X-----").is_err());
        assert!(decode("-----BEGIN X-----\nAAAA\n").is_err());
        assert!(decode("-----BEGIN X-----\nAAAA\n-----END Y-----").is_err());
    }
}
