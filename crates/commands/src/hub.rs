//! Connected intermediaries and the commands in flight to them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgelink_store::{CommandEnd, CommandRow, Intermediary, NewCommand, Store};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// Sends an event to one connected intermediary; false when it is gone.
pub type Emitter = Arc<dyn Fn(&'static str, Value) -> bool + Send + Sync>;
/// Ends one intermediary's connection.
pub type Kicker = Arc<dyn Fn() + Send + Sync>;

/// Longest command timeout accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a command waits for an intermediary to be connected.
pub const QUEUE_WAIT: Duration = Duration::from_secs(60);
/// Longest command line.
const MAX_COMMAND: usize = 16 * 1024;

/// Where a command goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// This intermediary.
    Intermediary(String),
    /// Any connected member of this group, another one if it drops.
    Group(String),
}

/// The SSH server a command runs on, with its credentials.
#[derive(Clone)]
pub struct TargetSpec {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Account.
    pub username: String,
    /// Password, or…
    pub password: Option<SecretString>,
    /// …a private key,
    pub private_key: Option<SecretString>,
    /// and its passphrase.
    pub passphrase: Option<SecretString>,
    /// The server's pinned host key (`SHA256:…`).
    pub host_key: Option<String>,
}

/// A command to run.
pub struct CommandRequest {
    /// Where.
    pub target: TargetSpec,
    /// What.
    pub command: String,
    /// Its timeout.
    pub timeout: Duration,
    /// The document's `serverId` (the main server's id of the SSH server;
    /// intermediaries may key their connection pools by it). Derived from
    /// host, port and user when not given.
    pub server_id: Option<u64>,
}

/// Why a command was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The request is unusable.
    #[error("{0}")]
    Invalid(&'static str),
    /// No such intermediary (or group) of this user.
    #[error("no such intermediary")]
    NotFound,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] edgelink_store::Error),
}

struct Conn {
    proxy_id: String,
    owner_id: String,
    group: String,
    emit: Emitter,
    kick: Kicker,
    inflight: HashSet<String>,
}

struct Pending {
    owner_id: String,
    destination: Destination,
    /// The `execute_command` payload, credentials included.
    payload: Value,
    /// The connection it was sent to.
    on: Option<u64>,
    /// Intermediaries it was sent to before.
    tried: Vec<String>,
    deadline: Instant,
}

#[derive(Default)]
struct State {
    next: u64,
    conns: HashMap<u64, Conn>,
    pending: HashMap<String, Pending>,
}

/// What to record after the lock is released.
enum Effect {
    Started { id: String, proxy_id: String },
    Ended { id: String, end: CommandEnd },
}

/// The connected intermediaries of this api-server and their commands.
pub struct Hub {
    store: Store,
    state: Mutex<State>,
    finished: broadcast::Sender<String>,
}

impl Hub {
    /// A hub over `store`.
    pub fn new(store: Store) -> Arc<Hub> {
        let (finished, _) = broadcast::channel(1024);
        Arc::new(Hub { store, state: Mutex::new(State::default()), finished })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether intermediary `proxy_id` is connected here.
    pub fn is_connected(&self, proxy_id: &str) -> bool {
        self.lock().conns.values().any(|c| c.proxy_id == proxy_id)
    }

    /// Ends every connection of intermediary `proxy_id` (revoked, or its
    /// key rotated); their commands fail over or fail as on a drop.
    pub fn kick(&self, proxy_id: &str) {
        let kicks: Vec<Kicker> =
            self.lock().conns.values().filter(|c| c.proxy_id == proxy_id).map(|c| Arc::clone(&c.kick)).collect();
        for kick in kicks {
            kick();
        }
    }

    /// Registers a connected intermediary; commands waiting for it (or its
    /// group) are sent to it. Returns the connection's id.
    pub async fn connect(&self, row: &Intermediary, emit: Emitter, kick: Kicker) -> u64 {
        let (conn, effects) = {
            let mut st = self.lock();
            st.next += 1;
            let conn = st.next;
            st.conns.insert(
                conn,
                Conn {
                    proxy_id: row.id.clone(),
                    owner_id: row.owner_id.clone(),
                    group: row.group_name.clone(),
                    emit,
                    kick,
                    inflight: HashSet::new(),
                },
            );
            let waiting: Vec<String> =
                st.pending.iter().filter(|(_, p)| p.on.is_none()).map(|(id, _)| id.clone()).collect();
            let effects: Vec<Effect> = waiting.into_iter().filter_map(|id| assign(&mut st, &id)).collect();
            (conn, effects)
        };
        tracing::info!(proxy_id = %row.id, user_id = %row.owner_id, "intermediary connected");
        self.apply(effects).await;
        conn
    }

    /// Forgets connection `conn`; its commands go to another member of
    /// their group, or fail.
    pub async fn disconnect(&self, conn: u64) {
        let effects = {
            let mut st = self.lock();
            let Some(gone) = st.conns.remove(&conn) else { return };
            tracing::info!(proxy_id = %gone.proxy_id, in_flight = gone.inflight.len(), "intermediary disconnected");
            let mut effects = Vec::new();
            for id in gone.inflight {
                let Some(p) = st.pending.get_mut(&id) else { continue };
                p.on = None;
                p.tried.push(gone.proxy_id.clone());
                let group = matches!(p.destination, Destination::Group(_));
                match group.then(|| assign(&mut st, &id)).flatten() {
                    Some(effect) => effects.push(effect),
                    None => {
                        st.pending.remove(&id);
                        effects.push(Effect::Ended {
                            id,
                            end: CommandEnd {
                                status: "failed",
                                ran_on: Some(gone.proxy_id.clone()),
                                error: Some(if group {
                                    "the intermediary disconnected before answering and no other member of \
                                     the group is connected"
                                        .into()
                                } else {
                                    "the intermediary disconnected before answering".into()
                                }),
                                ..CommandEnd::default()
                            },
                        });
                    }
                }
            }
            effects
        };
        self.apply(effects).await;
    }

    /// Stores and dispatches a command of `owner_id`.
    pub async fn submit(
        &self,
        owner_id: &str,
        destination: Destination,
        req: CommandRequest,
    ) -> Result<CommandRow, SubmitError> {
        let t = &req.target;
        if t.host.is_empty() || t.host.len() > 253 || t.host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(SubmitError::Invalid("host must be a host name or address"));
        }
        if t.port == 0 {
            return Err(SubmitError::Invalid("port must be 1–65535"));
        }
        if t.username.is_empty() || t.username.len() > 64 || t.username.chars().any(char::is_control) {
            return Err(SubmitError::Invalid("username must be 1–64 printable characters"));
        }
        if t.password.is_none() && t.private_key.is_none() {
            return Err(SubmitError::Invalid("a password or private_key is required"));
        }
        if req.command.trim().is_empty() || req.command.len() > MAX_COMMAND {
            return Err(SubmitError::Invalid("command must be 1–16384 bytes"));
        }
        if req.timeout.is_zero() || req.timeout > MAX_TIMEOUT {
            return Err(SubmitError::Invalid("timeout_ms must be 1–600000"));
        }
        if let Some(k) = &t.host_key
            && edgelink_protocol::ssh::normalize_fingerprint(k).is_none()
        {
            return Err(SubmitError::Invalid("host_key must be an OpenSSH SHA256 fingerprint"));
        }
        let (intermediary_id, group_name) = match &destination {
            Destination::Intermediary(id) => {
                self.store.intermediary(owner_id, id).await?.ok_or(SubmitError::NotFound)?;
                (Some(id.clone()), None)
            }
            Destination::Group(g) => {
                let any = self.store.list_intermediaries(owner_id).await?.iter().any(|i| &i.group_name == g);
                if g.is_empty() || !any {
                    return Err(SubmitError::NotFound);
                }
                (None, Some(g.clone()))
            }
        };
        let now = edgelink_store::now_ms();
        let id = format!("cmd_{now}_{:08x}", rand::rng().random::<u32>());
        let new = NewCommand {
            id: id.clone(),
            intermediary_id,
            group_name,
            host: t.host.clone(),
            port: i32::from(t.port),
            username: t.username.clone(),
            command: req.command.clone(),
            timeout_ms: req.timeout.as_millis() as i64,
            device_id: None,
            args: None,
            expires_at: None,
            secret_sealed: None,
            host_key: t.host_key.clone(),
        };
        let row = self.store.create_command(owner_id, &new, now).await?;
        // The document's fields; `hostKey` and `passphrase` are edgelink's.
        let mut payload = json!({
            "commandId": id,
            "host": t.host,
            "port": t.port,
            "username": t.username,
            "command": req.command,
            "timeout": req.timeout.as_millis() as u64,
            "serverId": req.server_id.unwrap_or_else(|| server_id(&t.host, t.port, &t.username)),
        });
        if let Some(p) = &t.password {
            payload["password"] = json!(p.expose_secret());
        }
        if let Some(k) = &t.private_key {
            payload["privateKey"] = json!(k.expose_secret());
        }
        if let Some(p) = &t.passphrase {
            payload["passphrase"] = json!(p.expose_secret());
        }
        if let Some(k) = &t.host_key {
            payload["hostKey"] = json!(k);
        }
        let deadline = Instant::now() + QUEUE_WAIT + req.timeout + Duration::from_secs(10);
        let effect = {
            let mut st = self.lock();
            st.pending.insert(
                id.clone(),
                Pending { owner_id: owner_id.to_owned(), destination, payload, on: None, tried: Vec::new(), deadline },
            );
            assign(&mut st, &id)
        };
        self.apply(effect.into_iter().collect()).await;
        tracing::info!(command_id = %id, user_id = owner_id, host = %t.host, "command submitted");
        Ok(row)
    }

    /// Takes a `command_result` from connection `conn`. True when it
    /// answered a command that connection was running.
    pub async fn result(&self, conn: u64, payload: &Value) -> bool {
        let Some(id) = payload.get("commandId").and_then(Value::as_str) else { return false };
        let result = payload.get("result").cloned().unwrap_or(Value::Null);
        let proxy_id = {
            let mut st = self.lock();
            let Some(c) = st.conns.get_mut(&conn) else { return false };
            if !c.inflight.remove(id) {
                return false;
            }
            let proxy_id = c.proxy_id.clone();
            st.pending.remove(id);
            proxy_id
        };
        let text = |k: &str| result.get(k).and_then(Value::as_str).map(|s| s.chars().take(1 << 20).collect::<String>());
        let exit_code = result.get("exitCode").and_then(Value::as_i64).and_then(|c| i32::try_from(c).ok());
        let end = CommandEnd {
            status: if exit_code == Some(0) { "succeeded" } else { "failed" },
            ran_on: Some(proxy_id),
            stdout: Some(text("stdout").unwrap_or_default()),
            stderr: Some(text("stderr").unwrap_or_default()),
            exit_code,
            error: exit_code.is_none().then(|| "the intermediary's result has no exitCode".to_owned()),
            ..CommandEnd::default()
        };
        self.apply(vec![Effect::Ended { id: id.to_owned(), end }]).await;
        true
    }

    /// Ends commands past their deadline: never taken → `expired`, taken
    /// but unanswered → `failed`.
    pub async fn sweep(&self) {
        let now = Instant::now();
        let effects = {
            let mut st = self.lock();
            let late: Vec<String> =
                st.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(id, _)| id.clone()).collect();
            let mut effects = Vec::new();
            for id in late {
                let Some(p) = st.pending.remove(&id) else { continue };
                let taken = p.on.and_then(|c| st.conns.get_mut(&c)).map(|c| {
                    c.inflight.remove(&id);
                    c.proxy_id.clone()
                });
                let end = match taken {
                    Some(proxy_id) => CommandEnd {
                        status: "failed",
                        ran_on: Some(proxy_id),
                        error: Some("no result from the intermediary in time".into()),
                        ..CommandEnd::default()
                    },
                    None => CommandEnd {
                        status: "expired",
                        error: Some("no intermediary was connected to take it in time".into()),
                        ..CommandEnd::default()
                    },
                };
                effects.push(Effect::Ended { id, end });
            }
            effects
        };
        self.apply(effects).await;
        match self.store.expire_device_commands(edgelink_store::now_ms(), 60_000).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(commands = n, "device commands expired or timed out"),
            Err(e) => tracing::warn!(error = %e, "could not expire device commands"),
        }
    }

    /// Drops pending command `id` (canceled before any intermediary took
    /// it): its credentials leave memory and it is never sent.
    pub fn forget(&self, id: &str) {
        self.lock().pending.remove(id);
    }

    /// Ids of commands as they end (subscribe before reading a command's
    /// state, then wait for its id).
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.finished.subscribe()
    }

    async fn apply(&self, effects: Vec<Effect>) {
        let now = edgelink_store::now_ms();
        for e in effects {
            match e {
                Effect::Started { id, proxy_id } => {
                    if let Err(e) = self.store.start_command(&id, &proxy_id, now).await {
                        tracing::warn!(command_id = %id, error = %e, "could not record a command's start");
                    }
                }
                Effect::Ended { id, end } => {
                    match self.store.finish_command(&id, &end, now).await {
                        Ok(_) => tracing::info!(command_id = %id, status = end.status, exit_code = ?end.exit_code,
                            "command ended"),
                        Err(e) => tracing::warn!(command_id = %id, error = %e, "could not record a command's end"),
                    }
                    let _ = self.finished.send(id);
                }
            }
        }
    }
}

/// Sends pending command `id` to a connected intermediary that may take
/// it (its own, or the group's least busy member not tried before).
fn assign(st: &mut State, id: &str) -> Option<Effect> {
    let p = st.pending.get(id)?;
    let candidate = st
        .conns
        .iter()
        .filter(|(_, c)| c.owner_id == p.owner_id && !p.tried.contains(&c.proxy_id))
        .filter(|(_, c)| match &p.destination {
            Destination::Intermediary(want) => &c.proxy_id == want,
            Destination::Group(g) => &c.group == g,
        })
        .min_by_key(|(_, c)| c.inflight.len())
        .map(|(k, _)| *k)?;
    let payload = p.payload.clone();
    let conn = st.conns.get_mut(&candidate)?;
    if !(conn.emit)("execute_command", payload) {
        return None;
    }
    conn.inflight.insert(id.to_owned());
    let proxy_id = conn.proxy_id.clone();
    if let Some(p) = st.pending.get_mut(id) {
        p.on = Some(candidate);
    }
    Some(Effect::Started { id: id.to_owned(), proxy_id })
}

/// A stable `serverId` for an SSH server named by address and account:
/// the first 6 bytes of SHA-256 over them (a JSON-safe integer), so that
/// intermediaries that pool by `serverId` (the document's Go example) keep
/// one pool per server.
fn server_id(host: &str, port: u16, username: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("{host}\0{port}\0{username}").as_bytes());
    d[..6].iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ids_are_stable_per_server_and_account() {
        let a = server_id("10.0.0.5", 22, "root");
        assert_eq!(a, server_id("10.0.0.5", 22, "root"));
        assert_ne!(a, server_id("10.0.0.5", 2222, "root"));
        assert_ne!(a, server_id("10.0.0.5", 22, "admin"));
        assert!(a < (1 << 53), "fits a JSON number exactly");
    }
}
