//! Native commands: run by a device's own agent (when its configuration
//! enables them and its allowlist admits the command). The command is
//! stored; the device is told through a message of edgelink's reserved
//! type carrying only the command's id; its agent claims the command from
//! its relay (which checks it is this device's and still pending), runs it
//! and reports the result there. A forged or replayed notice runs nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use edgelink_messages::{COMMAND_TYPE, Messages, Outgoing, SendError, Sender};
use edgelink_store::{CommandRow, NewCommand, Store};
use rand::Rng;
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
}

/// Why a native command was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// A field breaks its rule.
    #[error("{0}")]
    Invalid(&'static str),
    /// The device's message queue refused the notice.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] edgelink_store::Error),
}

/// Stores a command for `device_id` (already checked to be `owner_id`'s)
/// and tells the device.
pub async fn submit(
    store: &Store,
    messages: &Messages,
    owner_id: &str,
    device_id: &str,
    req: DeviceCommand,
) -> Result<CommandRow, NativeError> {
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
    let new = NewCommand {
        id: id.clone(),
        intermediary_id: None,
        group_name: None,
        host: String::new(),
        port: 0,
        username: String::new(),
        command: req.command,
        timeout_ms: timeout.as_millis() as i64,
        device_id: Some(device_id.to_owned()),
        args: Some(json!({"args": req.args, "env": req.env}).to_string()),
        expires_at: Some(now + (ttl as i64) * 1000),
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
    if let Err(e) = messages.send_reserved(owner_id, &Sender::User(owner_id.to_owned()), notice, now).await {
        let _ = store.cancel_command(owner_id, &id, now).await;
        return Err(e.into());
    }
    tracing::info!(command_id = %id, user_id = owner_id, device_id, "native command submitted");
    Ok(row)
}
