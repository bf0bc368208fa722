//! SSH host-key fingerprints as they travel in requests and configuration,
//! and what a native command's sealed SSH credential is bound to.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// A fingerprint as OpenSSH prints it (`ssh-keygen -l -E sha256`):
/// `SHA256:` and 43 characters of unpadded base64, with surrounding blanks
/// removed; `None` when `s` is not one.
pub fn normalize_fingerprint(s: &str) -> Option<String> {
    let s = s.trim();
    let b64 = s.strip_prefix("SHA256:")?;
    let ok = b64.len() == 43 && b64.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    ok.then(|| s.to_owned())
}

/// What a native command's sealed SSH credential is bound to (the AEAD
/// context of ADR 27): the command and its target, so a credential moved to
/// another command or another server does not open.
pub fn sealed_context(command_id: &str, host: &str, port: u16, username: &str) -> String {
    format!("edgelink command {command_id}\n{username}@{host}:{port}")
}

/// What a native command's sealed SSH credential holds once opened (the
/// plaintext of ADR 27's seal, JSON): a password, or a private key with
/// its passphrase. api-server writes it borrowed; the agent reads it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SealedCredential<'a> {
    /// The account's password.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Cow<'a, str>>,
    /// A private key (OpenSSH or PEM).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<Cow<'a, str>>,
    /// The private key's passphrase.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<Cow<'a, str>>,
}

/// Host-key pins written `HOST[:PORT]=SHA256:…` (blank entries skipped),
/// by `HOST[:PORT]`; the error names the bad entry.
pub fn parse_pins<S: AsRef<str>>(entries: &[S]) -> Result<HashMap<String, Vec<String>>, String> {
    let mut pins: HashMap<String, Vec<String>> = HashMap::new();
    for entry in entries.iter().map(AsRef::as_ref).filter(|e| !e.trim().is_empty()) {
        let (host, key) = entry.split_once('=').ok_or_else(|| format!("{entry}: expected HOST[:PORT]=SHA256:..."))?;
        let key = normalize_fingerprint(key)
            .ok_or_else(|| format!("{entry}: the key must be an OpenSSH SHA256 fingerprint"))?;
        if host.trim().is_empty() {
            return Err(format!("{entry}: the host is missing"));
        }
        pins.entry(host.trim().to_owned()).or_default().push(key);
    }
    Ok(pins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_credential_round_trips_with_only_what_it_holds() {
        let c = SealedCredential { private_key: Some("-----BEGIN\nk".into()), ..SealedCredential::default() };
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(text, r#"{"private_key":"-----BEGIN\nk"}"#);
        let back: SealedCredential<'_> = serde_json::from_str(&text).unwrap();
        assert_eq!((back.password, back.private_key.as_deref()), (None, Some("-----BEGIN\nk")));
    }

    #[test]
    fn pins_parse_by_host_and_name_the_bad_entry() {
        let fp = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
        let pins = parse_pins(&[format!("10.0.0.5:22={fp}"), " ".into(), format!("db={fp}")]).unwrap();
        assert_eq!(pins["10.0.0.5:22"], vec![fp.to_owned()]);
        assert_eq!(pins["db"], vec![fp.to_owned()]);
        assert!(parse_pins(&["db"]).unwrap_err().contains("expected HOST"));
        assert!(parse_pins(&["db=MD5:aa"]).unwrap_err().contains("SHA256"));
        assert!(parse_pins(&[format!("={fp}")]).unwrap_err().contains("host"));
    }

    #[test]
    fn fingerprints_are_openssh_sha256() {
        let fp = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
        assert_eq!(normalize_fingerprint(&format!("  {fp}\n")).as_deref(), Some(fp));
        assert_eq!(normalize_fingerprint("MD5:aa:bb"), None);
        assert_eq!(normalize_fingerprint("SHA256:short"), None);
        assert_eq!(normalize_fingerprint(&format!("{fp}=")), None);
    }
}
