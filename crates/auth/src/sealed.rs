//! Secrets sealed to one device (ADR 27): api-server seals an SSH
//! password or private key to the device's Ed25519 key when the command is
//! submitted; only that device's agent can open it. The database, the
//! relays and their logs hold only the sealed form.
//!
//! The construction is an ECIES over X25519 with the device's Ed25519 key
//! taken to its Montgomery form (the birational map libsodium's
//! `crypto_sign_ed25519_pk_to_curve25519` uses; the private scalar is the
//! clamped first half of SHA-512 of the seed, as Ed25519 itself derives
//! it): an ephemeral X25519 key agrees with the device's, HKDF-SHA256 over
//! the shared secret, both public keys and a caller's context (the command
//! id) gives a ChaCha20-Poly1305 key and nonce, and the context is the
//! AEAD's associated data too, so a sealed secret moved to another command
//! does not open. A fresh ephemeral key per seal makes the derived nonce
//! single-use.
//!
//! Wire form: `els1.` + base64url (no padding) of
//! `ephemeral public key (32) ‖ ciphertext ‖ tag (16)`.

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, UnparsedPublicKey, X25519};
use aws_lc_rs::hkdf;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

use crate::Error;

/// Prefix of the wire form (version 1).
pub const PREFIX: &str = "els1.";
/// Largest secret sealed (a private key PEM with room to spare).
pub const MAX_PLAINTEXT: usize = 16 * 1024;
const SALT: &[u8] = b"edgelink sealed secret v1";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

struct Okm(usize);

impl hkdf::KeyType for Okm {
    fn len(&self) -> usize {
        self.0
    }
}

/// The AEAD key and nonce for one seal.
fn derive(
    shared: &[u8],
    ephemeral: &[u8],
    recipient: &[u8],
    context: &[u8],
) -> Result<(LessSafeKey, Nonce), aws_lc_rs::error::Unspecified> {
    let mut okm = Zeroizing::new([0u8; KEY_LEN + NONCE_LEN]);
    let info = [ephemeral, recipient, context];
    hkdf::Salt::new(hkdf::HKDF_SHA256, SALT)
        .extract(shared)
        .expand(&info, Okm(KEY_LEN + NONCE_LEN))?
        .fill(okm.as_mut())?;
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &okm[..KEY_LEN])?);
    let nonce = Nonce::try_assume_unique_for_key(&okm[KEY_LEN..])?;
    Ok((key, nonce))
}

/// Seals `secret` to the device whose Ed25519 public key is `device_key`,
/// bound to `context`.
#[cfg(feature = "server")]
pub fn seal(device_key: &[u8; 32], context: &[u8], secret: &[u8]) -> Result<String, Error> {
    use curve25519_dalek::edwards::CompressedEdwardsY;
    if secret.len() > MAX_PLAINTEXT {
        return Err(Error::Seal("the secret is too large to seal"));
    }
    let point = CompressedEdwardsY(*device_key).decompress().ok_or(Error::Seal("not an Ed25519 public key"))?;
    if point.is_small_order() {
        return Err(Error::Seal("the device key is of small order"));
    }
    let recipient = point.to_montgomery().to_bytes();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let eph = agreement::EphemeralPrivateKey::generate(&X25519, &rng).map_err(|_| Error::Seal("no randomness"))?;
    let eph_pub = eph.compute_public_key().map_err(|_| Error::Seal("key agreement failed"))?;
    let eph_pub = eph_pub.as_ref().to_vec();
    let mut out = eph_pub.clone();
    let sealed = agreement::agree_ephemeral(
        eph,
        UnparsedPublicKey::new(&X25519, recipient),
        aws_lc_rs::error::Unspecified,
        |shared| {
            let (key, nonce) = derive(shared, &eph_pub, &recipient, context)?;
            let mut buf = secret.to_vec();
            key.seal_in_place_append_tag(nonce, Aad::from(context), &mut buf)?;
            Ok(buf)
        },
    )
    .map_err(|_| Error::Seal("key agreement failed"))?;
    out.extend_from_slice(&sealed);
    Ok(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(out)))
}

/// Opens a secret sealed to the key whose seed is `seed`.
pub(crate) fn open(seed: &[u8], sealed: &str, context: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    let body = sealed.strip_prefix(PREFIX).ok_or(Error::Seal("not a sealed secret of a known version"))?;
    if body.len() > (MAX_PLAINTEXT + 32 + TAG_LEN) * 4 / 3 + 4 {
        return Err(Error::Seal("the sealed secret is too large"));
    }
    let raw = URL_SAFE_NO_PAD.decode(body).map_err(|_| Error::Seal("the sealed secret is not base64url"))?;
    if raw.len() < 32 + TAG_LEN {
        return Err(Error::Seal("the sealed secret is too short"));
    }
    let (eph_pub, ciphertext) = raw.split_at(32);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, seed);
    let scalar = Zeroizing::new(digest.as_ref()[..32].to_vec());
    let private = agreement::PrivateKey::from_private_key(&X25519, &scalar)
        .map_err(|_| Error::Seal("the device key cannot open sealed secrets"))?;
    let recipient = private.compute_public_key().map_err(|_| Error::Seal("key agreement failed"))?;
    agreement::agree(&private, UnparsedPublicKey::new(&X25519, eph_pub), aws_lc_rs::error::Unspecified, |shared| {
        let (key, nonce) = derive(shared, eph_pub, recipient.as_ref(), context)?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let len = key.open_in_place(nonce, Aad::from(context), &mut buf)?.len();
        buf.truncate(len);
        Ok(buf)
    })
    .map_err(|_| {
        Error::Seal("the sealed secret does not open with this device's key (or was made for another command)")
    })
}

#[cfg(all(test, feature = "server"))]
mod tests {
    use super::*;
    use crate::agent_key::AgentKey;

    #[test]
    fn a_sealed_secret_opens_only_with_its_device_key_and_context() {
        let device = AgentKey::generate().unwrap();
        let other = AgentKey::generate().unwrap();
        let sealed = seal(&device.public_key_raw(), b"cmd_1", b"hunter2").unwrap();
        assert!(sealed.starts_with(PREFIX));
        assert!(!sealed.contains("hunter2"));
        assert_eq!(device.open_sealed(&sealed, b"cmd_1").unwrap().as_slice(), b"hunter2");
        // Another device, another command, a flipped bit: nothing opens.
        assert!(other.open_sealed(&sealed, b"cmd_1").is_err());
        assert!(device.open_sealed(&sealed, b"cmd_2").is_err());
        let mut raw = URL_SAFE_NO_PAD.decode(&sealed[PREFIX.len()..]).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let tampered = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&raw));
        assert!(device.open_sealed(&tampered, b"cmd_1").is_err());
        // Two seals of the same secret differ (fresh ephemeral key each).
        assert_ne!(sealed, seal(&device.public_key_raw(), b"cmd_1", b"hunter2").unwrap());
    }

    #[test]
    fn malformed_input_is_refused_not_panicked_on() {
        let device = AgentKey::generate().unwrap();
        for bad in ["", "els1.", "els1.!!!", "els2.AAAA", "els1.AAAA"] {
            assert!(device.open_sealed(bad, b"c").is_err(), "{bad:?}");
        }
        // A point not on the curve and the identity (small order) cannot be sealed to.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        let identity = {
            let mut b = [0u8; 32];
            b[0] = 1;
            b
        };
        assert!(seal(&identity, b"c", b"x").is_err());
        let _ = seal(&off_curve, b"c", b"x"); // either refused or sealed to an unusable key; never a panic
        assert!(seal(&device.public_key_raw(), b"c", &vec![0u8; MAX_PLAINTEXT + 1]).is_err());
    }
}
