//! SSH host-key fingerprints as they travel in requests and configuration.

/// A fingerprint as OpenSSH prints it (`ssh-keygen -l -E sha256`):
/// `SHA256:` and 43 characters of unpadded base64, with surrounding blanks
/// removed; `None` when `s` is not one.
pub fn normalize_fingerprint(s: &str) -> Option<String> {
    let s = s.trim();
    let b64 = s.strip_prefix("SHA256:")?;
    let ok = b64.len() == 43 && b64.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    ok.then(|| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_openssh_sha256() {
        let fp = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
        assert_eq!(normalize_fingerprint(&format!("  {fp}\n")).as_deref(), Some(fp));
        assert_eq!(normalize_fingerprint("MD5:aa:bb"), None);
        assert_eq!(normalize_fingerprint("SHA256:short"), None);
        assert_eq!(normalize_fingerprint(&format!("{fp}=")), None);
    }
}
