//! The rules of a device's user-set fields: one set, used by the pairing
//! exchange, `PATCH /api/v1/devices/{id}`, the list filters and the
//! operator's `api-server device add`.

use edgelink_store::{Capabilities, Metadata};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest type, capability or region label, in bytes.
pub const MAX_LABEL: usize = 64;
/// Most capabilities a device may list.
pub const MAX_CAPABILITIES: usize = 32;
/// Largest metadata object, as compact JSON.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;

/// A field that breaks its rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// Empty, too long, or with control characters.
    #[error("name must be 1 to {MAX_NAME_CHARS} printable characters")]
    Name,
    /// A type, capability or region outside `[A-Za-z0-9-_.:]{1,64}`.
    #[error("{0} must be 1 to {MAX_LABEL} of [A-Za-z0-9-_.:]")]
    Label(&'static str),
    /// More capabilities than allowed.
    #[error("at most {MAX_CAPABILITIES} capabilities")]
    TooManyCapabilities,
    /// A metadata object too large.
    #[error("metadata must be at most 8 KiB of JSON")]
    MetadataTooLarge,
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

/// A display name, trimmed.
pub fn name(name: &str) -> Result<String, FieldError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > MAX_NAME_CHARS || n.chars().any(char::is_control) {
        return Err(FieldError::Name);
    }
    Ok(n.to_owned())
}

/// A type, capability or region label; `what` names it in the error.
pub fn label(what: &'static str, v: &str) -> Result<String, FieldError> {
    let ok = !v.is_empty()
        && v.len() <= MAX_LABEL
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok { Ok(v.to_owned()) } else { Err(FieldError::Label(what)) }
}

/// A capability list: each a label, at most [`MAX_CAPABILITIES`].
pub fn capabilities<S: AsRef<str>>(list: &[S]) -> Result<Capabilities, FieldError> {
    if list.len() > MAX_CAPABILITIES {
        return Err(FieldError::TooManyCapabilities);
    }
    list.iter().map(|c| label("capability", c.as_ref())).collect::<Result<_, _>>().map(Capabilities)
}

/// A metadata object of at most [`MAX_METADATA_BYTES`] as JSON.
pub fn metadata(m: Map<String, Value>) -> Result<Metadata, FieldError> {
    let size = serde_json::to_vec(&m).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_METADATA_BYTES {
        return Err(FieldError::MetadataTooLarge);
    }
    Ok(Metadata(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_names_capabilities_and_metadata_are_bounded() {
        assert!(label("type", "camera.v2:x-y_z").is_ok());
        assert_eq!(label("type", "a b"), Err(FieldError::Label("type")));
        assert!(label("type", "").is_err());
        assert!(label("type", &"a".repeat(65)).is_err());
        assert_eq!(name("  cam  ").unwrap(), "cam");
        assert_eq!(name("a\u{0}b"), Err(FieldError::Name));
        assert!(name(&"x".repeat(129)).is_err());
        assert!(name(&"é".repeat(128)).is_ok());
        assert_eq!(capabilities(&["http", "ssh"]).unwrap().0, vec!["http", "ssh"]);
        assert_eq!(capabilities(&vec!["x"; 33]), Err(FieldError::TooManyCapabilities));
        assert_eq!(capabilities(&["bad cap"]), Err(FieldError::Label("capability")));
        let mut big = Map::new();
        big.insert("k".into(), Value::String("v".repeat(9000)));
        assert_eq!(metadata(big), Err(FieldError::MetadataTooLarge));
        assert!(metadata(Map::new()).is_ok());
    }
}
