//! The operator's way to register a device before pairing exists:
//! `api-server device add --owner EMAIL --name NAME --public-key FILE`.

use edgelink_auth::device_key::DevicePublicKey;
use edgelink_store::{Device, NewDevice, Store};

/// Errors from provisioning.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The public key could not be parsed.
    #[error("public key: {0}")]
    Key(#[from] edgelink_auth::Error),
    /// A device field breaks its rule.
    #[error(transparent)]
    Field(#[from] crate::device_fields::FieldError),
    /// A field is out of bounds.
    #[error("{0}")]
    Invalid(String),
    /// No code was issued.
    #[error(transparent)]
    Pairing(#[from] crate::pairing::IssueError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] edgelink_store::Error),
}

/// What a provisioned device is created with.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// Owner's email; the user is created when missing.
    pub owner_email: String,
    /// Display name.
    pub name: String,
    /// Device type.
    pub device_type: String,
    /// PEM public key text.
    pub public_key_pem: String,
}

/// Creates the owner (if needed) and the device; returns the device.
pub async fn add_device(store: &Store, spec: &DeviceSpec) -> Result<Device, Error> {
    let email = spec.owner_email.trim();
    if email.is_empty() || email.len() > 254 || !email.contains('@') {
        return Err(Error::Invalid("owner must be an email address".into()));
    }
    let name = crate::device_fields::name(&spec.name)?;
    let device_type = crate::device_fields::label("type", &spec.device_type)?;
    let key = DevicePublicKey::from_pem(&spec.public_key_pem)?;
    let owner = store.upsert_user_by_email(email, email.split('@').next().unwrap_or(email)).await?;
    let device = store
        .create_device(&NewDevice {
            owner_id: owner.id,
            name,
            device_type,
            capabilities: Default::default(),
            region: None,
            metadata: Default::default(),
            public_key: key.to_pem(),
            key_algorithm: key.algorithm().as_str().into(),
            node_id: None,
        })
        .await?;
    Ok(device)
}

/// Creates a pairing code for the user with `owner_email` (created when
/// missing, claimed at their first sign-in): the operator's way to
/// bootstrap a device without a browser. Returns the code as shown to users.
pub async fn create_pairing(
    store: &Store,
    keys: &edgelink_auth::cookie::CookieKeys,
    owner_email: &str,
    ttl: std::time::Duration,
    max_live: u32,
) -> Result<String, Error> {
    let email = owner_email.trim();
    if email.is_empty() || email.len() > 254 || !email.contains('@') {
        return Err(Error::Invalid("owner must be an email address".into()));
    }
    let owner = store.upsert_user_by_email(email, email.split('@').next().unwrap_or(email)).await?;
    let issued = crate::pairing::issue(store, keys, &owner.id, ttl, max_live).await?;
    Ok(issued.code)
}

/// Ends every browser session of the user with `email` (an operator's
/// "sign this person out everywhere"); returns how many ended. Running
/// api-servers stop honouring them within their `cache_ttl`.
pub async fn sign_out_user(store: &Store, email: &str) -> Result<u64, Error> {
    let user = store
        .user_by_email(email.trim())
        .await?
        .ok_or_else(|| Error::Invalid(format!("no user with email {email}")))?;
    Ok(store.delete_all_user_sessions(&user.id).await?)
}
