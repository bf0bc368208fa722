//! Native commands: run by a device's own agent (when its configuration
//! enables them and its allowlist admits the command). The command is
//! stored; the device is told through a message of edgelink's reserved
//! type carrying only the command's id; its agent claims the command from
//! its relay (which checks it is this device's and still pending), runs it
//! and reports the result there. A forged or replayed notice runs nothing.
//!
//! A command may name an SSH target in the device's network instead: its
//! password or private key is sealed to the device's own key before it is
//! stored (ADR 27), so only that device's agent can open it; the stored
//! form is cleared when the command ends. A running command is stopped by
//! a second notice (`action: cancel`); the agent kills it and reports it
//! `canceled`.

use std::collections::BTreeMap;
use std::time::Duration;

use edgelink_auth::device_key::DevicePublicKey;
use edgelink_messages::{COMMAND_TYPE, Messages, Outgoing, SendError, Sender};
use edgelink_store::{CommandRow, Device, NewCommand, Store};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

/// `POST /api/v1/devices/{id}/commands`.
#[derive(Debug, Deserialize)]
pub struct DeviceCommand {
    /// The program (a path or a name on the device's PATH).
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables (the device's allowlist decides).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// ms, 1–600,000 (default 30 s).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Seconds the device has to take it (default 300, at most a day).
    #[serde(default)]
    pub ttl: Option<u64>,
    /// Run `command` (the whole command line) on this SSH server in the
    /// device's network instead of on the device.
    #[serde(default)]
    pub target: Option<SshTarget>,
}

/// An SSH server reached through the device.
#[derive(Deserialize)]
pub struct SshTarget {
    /// Host name or address, as the device resolves it.
    pub host: String,
    /// Port (22).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The account.
    pub username: String,
    /// Password, or…
    #[serde(default)]
    pub password: Option<SecretString>,
    /// …a private key (OpenSSH or PEM), with its passphrase if encrypted.
    #[serde(default)]
    pub private_key: Option<SecretString>,
    /// The private key's passphrase.
    #[serde(default)]
    pub passphrase: Option<SecretString>,
    /// The server's host-key fingerprint (`SHA256:…`); without it the
    /// device's `commands_ssh_host_keys` must pin one.
    #[serde(default)]
    pub host_key: Option<String>,
}

impl std::fmt::Debug for SshTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("host_key", &self.host_key)
            .finish_non_exhaustive()
    }
}

fn default_port() -> u16 {
    22
}

/// Why a native command was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// A field breaks its rule.
    #[error("{0}")]
    Invalid(&'static str),
    /// The device's key cannot receive a sealed credential.
    #[error("{0}")]
    KeyUnsupported(&'static str),
    /// The command cannot be canceled in its state.
    #[error("the command is {0} and cannot be canceled")]
    NotCancelable(String),
    /// No such command of this user.
    #[error("no such command")]
    NotFound,
    /// The device's message queue refused the notice.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] edgelink_store::Error),
}

/// Stores a command for `device` (already checked to be `owner_id`'s)
/// and tells the device.
pub async fn submit(
    store: &Store,
    messages: &Messages,
    owner_id: &str,
    sender: &Sender,
    device: &Device,
    req: DeviceCommand,
) -> Result<CommandRow, NativeError> {
    let device_id = device.id.as_str();
    if req.command.trim().is_empty() || req.command.len() > 4096 || req.command.chars().any(char::is_control) {
        return Err(NativeError::Invalid("command must be 1–4096 printable characters"));
    }
    if req.args.len() > 64 || req.args.iter().any(|a| a.len() > 4096 || a.contains('\0')) {
        return Err(NativeError::Invalid("at most 64 args of at most 4096 bytes each"));
    }
    let env_ok = |k: &str| !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if req.env.len() > 32 || req.env.iter().any(|(k, v)| !env_ok(k) || v.len() > 4096 || v.contains('\0')) {
        return Err(NativeError::Invalid("at most 32 env variables, names of letters, digits and _"));
    }
    let timeout = Duration::from_millis(req.timeout_ms.unwrap_or(30_000));
    if timeout.is_zero() || timeout > crate::hub::MAX_TIMEOUT {
        return Err(NativeError::Invalid("timeout_ms must be 1–600000"));
    }
    let ttl = req.ttl.unwrap_or(300);
    if ttl == 0 || ttl > 86_400 {
        return Err(NativeError::Invalid("ttl must be 1–86400 seconds"));
    }
    let now = edgelink_store::now_ms();
    let id = format!("cmd_{now}_{:08x}", rand::rng().random::<u32>());
    let (host, port, username, host_key, secret_sealed) = match &req.target {
        None => (String::new(), 0, String::new(), None, None),
        Some(t) => {
            let (host_key, sealed) = seal_target(device, &id, t)?;
            if !req.args.is_empty() || !req.env.is_empty() {
                return Err(NativeError::Invalid(
                    "args and env are not used with an SSH target: put the whole command line in command",
                ));
            }
            (t.host.clone(), i32::from(t.port), t.username.clone(), host_key, Some(sealed))
        }
    };
    let new = NewCommand {
        id: id.clone(),
        intermediary_id: None,
        group_name: None,
        host,
        port,
        username,
        command: req.command,
        timeout_ms: timeout.as_millis() as i64,
        device_id: Some(device_id.to_owned()),
        args: Some(json!({"args": req.args, "env": req.env}).to_string()),
        expires_at: Some(now + (ttl as i64) * 1000),
        secret_sealed,
        host_key,
    };
    let row = store.create_command(owner_id, &new, now).await?;
    let notice = Outgoing {
        to: vec![device_id.to_owned()],
        message_type: COMMAND_TYPE.to_owned(),
        content: json!({"command_id": id}),
        priority: Some("high".into()),
        ttl: Some(ttl),
        metadata: None,
    };
    if let Err(e) = messages.send_reserved(owner_id, sender, notice, now).await {
        let _ = store.cancel_command(owner_id, &id, now).await;
        return Err(e.into());
    }
    tracing::info!(command_id = %id, user_id = owner_id, device_id, "native command submitted");
    Ok(row)
}

/// Checks an SSH target and seals its credential to the device's key,
/// bound to the command and the target; returns the normalized host-key
/// pin and the sealed credential.
fn seal_target(device: &Device, id: &str, t: &SshTarget) -> Result<(Option<String>, String), NativeError> {
    let host_ok = |h: &str| {
        !h.is_empty() && h.len() <= 253 && !h.starts_with('-') && h.bytes().all(|b| b.is_ascii_graphic() && b != b'@')
    };
    if !host_ok(&t.host) || t.port == 0 {
        return Err(NativeError::Invalid("target.host must be a host name or address and target.port 1–65535"));
    }
    if t.username.is_empty() || t.username.len() > 64 || !t.username.bytes().all(|b| b.is_ascii_graphic() && b != b'@')
    {
        return Err(NativeError::Invalid("target.username must be 1–64 printable characters without @"));
    }
    let host_key = match t.host_key.as_deref() {
        None => None,
        Some(k) => Some(
            edgelink_protocol::ssh::normalize_fingerprint(k)
                .ok_or(NativeError::Invalid("target.host_key must be an OpenSSH SHA256 fingerprint (SHA256:…)"))?,
        ),
    };
    // Borrowed, serialized once into a buffer zeroed when dropped.
    use edgelink_protocol::ssh::SealedCredential;
    fn exposed(s: &Option<SecretString>) -> Option<&str> {
        s.as_ref().map(|v| v.expose_secret())
    }
    let plain = match (exposed(&t.password), exposed(&t.private_key)) {
        (Some(p), None) if !p.is_empty() => SealedCredential { password: Some(p.into()), ..Default::default() },
        (None, Some(k)) if !k.trim().is_empty() => SealedCredential {
            private_key: Some(k.into()),
            passphrase: exposed(&t.passphrase).map(Into::into),
            ..Default::default()
        },
        _ => return Err(NativeError::Invalid("target needs a password or a private_key (one of them)")),
    };
    let key = match DevicePublicKey::from_pem(&device.public_key) {
        Ok(DevicePublicKey::Ed25519(raw)) => raw,
        _ => {
            return Err(NativeError::KeyUnsupported(
                "SSH targets need a device with an Ed25519 key (as edge-agent makes): its credential is sealed to that key",
            ));
        }
    };
    let context = edgelink_protocol::ssh::sealed_context(id, &t.host, t.port, &t.username);
    let plain = zeroize::Zeroizing::new(
        serde_json::to_vec(&plain).map_err(|_| NativeError::Invalid("the credential could not be encoded"))?,
    );
    if plain.len() > edgelink_auth::sealed::MAX_PLAINTEXT {
        return Err(NativeError::Invalid("target's password or private_key is too large (at most 16 KiB)"));
    }
    let sealed = edgelink_auth::sealed::seal(&key, context.as_bytes(), &plain).map_err(|e| match e {
        edgelink_auth::Error::Seal(why) => NativeError::KeyUnsupported(why),
        _ => NativeError::KeyUnsupported("the credential could not be sealed to the device's key"),
    })?;
    Ok((host_key, sealed))
}

/// Cancels `owner_id`'s command `id`: a pending one never runs; a running
/// native one is stopped by its agent (told now; it reports `canceled`).
pub async fn cancel(
    store: &Store,
    messages: &Messages,
    owner_id: &str,
    sender: &Sender,
    id: &str,
) -> Result<CommandRow, NativeError> {
    let now = edgelink_store::now_ms();
    if !store.cancel_command(owner_id, id, now).await? {
        let row = store.command(owner_id, id).await?.ok_or(NativeError::NotFound)?;
        let device_id = match (&row.device_id, row.status.as_str()) {
            (Some(d), "running") => d.clone(),
            _ => return Err(NativeError::NotCancelable(row.status)),
        };
        if store.request_cancel(owner_id, id, now).await? {
            let notice = Outgoing {
                to: vec![device_id.clone()],
                message_type: COMMAND_TYPE.to_owned(),
                content: json!({"command_id": id, "action": "cancel"}),
                priority: Some("high".into()),
                ttl: Some(((row.timeout_ms / 1000) + 60) as u64),
                metadata: None,
            };
            messages.send_reserved(owner_id, sender, notice, now).await?;
            tracing::info!(command_id = id, user_id = owner_id, device_id, "cancel of a running command sent");
        }
    }
    store.command(owner_id, id).await?.ok_or(NativeError::NotFound)
}
