//! Native remote commands on the device (issue #13): claimed from the relay
//! when a notice names them, run beside the inbox (several at once, so a
//! long command does not hold up messages or a cancel), each killed whole
//! at its deadline or when its owner cancels it, and reported back over
//! whichever tunnel is up when it ends.
//!
//! A command runs here (`commands_allow`, `commands_run_as`,
//! `commands_env_allow`) or, when it names an SSH target, on a server in
//! the device's network through a pool of SSH connections; the target
//! must match `commands_ssh_allow`, its host key must be pinned (by the
//! request or `commands_ssh_host_keys`), and its password or private key
//! arrives sealed to this device's key (ADR 27): it is opened only in
//! memory, and never logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgelink_auth::agent_key::AgentKey;
use edgelink_protocol::paths;
use edgelink_ssh::{Credential, Limits, Outcome, Pool, Target};
use edgelink_tunnel::Handle;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::exec::{Policy, matches};
use crate::inbox::ControlConn;

/// Commands that run at once; further notices wait in the queue.
pub const MAX_RUNNING: usize = 8;
/// Attempts at reporting a result (the tunnel may be reconnecting).
const REPORT_ATTEMPTS: u32 = 8;

/// A claimed command, as the relay answers it.
#[derive(Deserialize)]
struct Claimed {
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: HashMap<String, String>,
    timeout_ms: u64,
    #[serde(default)]
    target: Option<ClaimedTarget>,
}

/// An SSH target with its sealed credential.
#[derive(Deserialize)]
struct ClaimedTarget {
    host: String,
    port: u16,
    username: String,
    #[serde(default)]
    host_key: Option<String>,
    secret_sealed: String,
}

/// What this device lets remote commands do.
#[derive(Debug, Clone)]
pub struct CommandConfig {
    /// Local commands: allowlist, account, environment.
    pub policy: Policy,
    /// Bytes kept of stdout and of stderr, each.
    pub output_cap: usize,
    /// `user@host:port` patterns SSH targets must match; empty: SSH
    /// targets are refused.
    pub ssh_allow: Vec<String>,
    /// Host-key pins by `host[:port]`.
    pub ssh_pins: HashMap<String, Vec<String>>,
}

/// Runs this device's native commands.
pub struct Runner {
    config: CommandConfig,
    key: Arc<AgentKey>,
    pool: Pool,
    slots: Arc<Semaphore>,
    /// Running commands' cancel switches, by command id.
    running: Mutex<HashMap<String, CancellationToken>>,
    /// The tunnel results are reported over (the newest one).
    handle: Mutex<Option<Handle>>,
    /// Woken when a command ends (notices that waited for a slot).
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("config", &self.config).finish_non_exhaustive()
    }
}

/// What became of a notice.
pub enum Taken {
    /// Claimed (and started) or not claimable: acknowledge the notice.
    Done,
    /// Every slot is busy: leave the notice queued for later.
    Busy,
}

impl Runner {
    /// A runner with `config`, opening sealed credentials with `key`.
    pub fn new(config: CommandConfig, key: Arc<AgentKey>, wake: Arc<Notify>) -> Self {
        let pool = Pool::new(edgelink_ssh::PoolConfig { pins: config.ssh_pins.clone(), ..Default::default() });
        Runner {
            config,
            key,
            pool,
            slots: Arc::new(Semaphore::new(MAX_RUNNING)),
            running: Mutex::new(HashMap::new()),
            handle: Mutex::new(None),
            wake,
        }
    }

    /// The tunnel now up.
    pub fn set_handle(&self, handle: Handle) {
        *self.handle.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
    }

    /// Stops running command `id`, if it runs here.
    pub fn cancel(&self, id: &str) {
        if let Some(token) = self.running.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            tracing::info!(command_id = id, "canceling a remote command");
            token.cancel();
        }
    }

    /// Claims command `id` over `conn` and starts it. Err only when the
    /// relay could not be asked (the notice is then taken again).
    pub(crate) async fn take(self: &Arc<Self>, conn: &mut ControlConn, id: &str) -> Result<Taken, String> {
        let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
            return Ok(Taken::Busy);
        };
        let base = format!("{}/{}", paths::COMMANDS, paths::encode_segment(id));
        let (status, body) = conn.send("POST", &format!("{base}/claim"), None).await?;
        if status != 200 {
            // Not this device's, no longer pending (canceled, expired, run
            // already): nothing to run.
            tracing::info!(command_id = id, status, "command not claimed");
            return Ok(Taken::Done);
        }
        let claimed: Claimed = serde_json::from_slice(&body).map_err(|e| format!("bad claim answer: {e}"))?;
        let token = CancellationToken::new();
        self.running.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_owned(), token.clone());
        let this = Arc::clone(self);
        let id = id.to_owned();
        tokio::spawn(async move { this.run(permit, id, claimed, token).await });
        Ok(Taken::Done)
    }

    async fn run(
        self: Arc<Self>,
        _permit: OwnedSemaphorePermit,
        id: String,
        claimed: Claimed,
        cancel: CancellationToken,
    ) {
        let limits = Limits { timeout: Duration::from_millis(claimed.timeout_ms), output_cap: self.config.output_cap };
        let report = match &claimed.target {
            None => {
                tracing::info!(command_id = %id, program = %claimed.command, "running a remote command");
                match crate::exec::run(
                    &self.config.policy,
                    &claimed.command,
                    &claimed.args,
                    &claimed.env,
                    limits,
                    &cancel,
                )
                .await
                {
                    Ok(out) => outcome_report(&out, claimed.timeout_ms),
                    Err(refusal) => json!({"error": refusal.to_string()}),
                }
            }
            Some(t) => match self.ssh_target(&id, &claimed, t) {
                Err(why) => json!({"error": why}),
                Ok(target) => {
                    tracing::info!(command_id = %id, host = %t.host, port = t.port, "running a remote command over SSH");
                    match self.pool.run_cancellable(&target, &claimed.command, limits, &cancel).await {
                        Ok(out) => outcome_report(&out, claimed.timeout_ms),
                        Err(e) => json!({"error": e.to_string()}),
                    }
                }
            },
        };
        self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        self.report(&id, &report).await;
        self.wake.notify_one();
    }

    /// The SSH target of a claimed command, once this device's rules admit
    /// it and its credential opens.
    fn ssh_target(&self, id: &str, claimed: &Claimed, t: &ClaimedTarget) -> Result<Target, String> {
        if self.config.ssh_allow.is_empty() {
            return Err("SSH targets are disabled on this device (commands_ssh_allow is empty)".into());
        }
        let target = format!("{}@{}:{}", t.username, t.host, t.port);
        if !self.config.ssh_allow.iter().any(|p| matches(p, &target)) {
            return Err(format!("{target} is not allowed by this device's commands_ssh_allow"));
        }
        if !claimed.args.is_empty() || !claimed.env.is_empty() {
            return Err("args and env are not used with an SSH target".into());
        }
        if !self.config.policy.allows(&claimed.command, &[]) {
            return Err("command not allowed by this device's allowlist".into());
        }
        let context = edgelink_protocol::ssh::sealed_context(id, &t.host, t.port, &t.username);
        let opened = self
            .key
            .open_sealed(&t.secret_sealed, context.as_bytes())
            .map_err(|_| "the SSH credential does not open with this device's key".to_owned())?;
        let sealed: edgelink_protocol::ssh::SealedCredential<'_> =
            serde_json::from_slice(&opened).map_err(|_| "the SSH credential is not in the expected form".to_owned())?;
        let secret = |c: std::borrow::Cow<'_, str>| secrecy::SecretString::from(c.into_owned());
        let credential = match (sealed.password, sealed.private_key) {
            (Some(p), None) => Credential::Password(secret(p)),
            (None, Some(k)) => Credential::PrivateKey { key: secret(k), passphrase: sealed.passphrase.map(secret) },
            _ => return Err("the SSH credential must be a password or a private key".into()),
        };
        Ok(Target {
            host: t.host.clone(),
            port: t.port,
            username: t.username.clone(),
            credential,
            host_key: t.host_key.clone(),
        })
    }

    /// Reports `report` for `id` over the tunnel now up, retrying while it
    /// reconnects; a result that cannot be delivered is failed by
    /// api-server after the command's deadline.
    async fn report(&self, id: &str, report: &Value) {
        let path = format!("{}/{}/result", paths::COMMANDS, paths::encode_segment(id));
        let body = report.to_string().into_bytes();
        let mut pause = Duration::from_millis(200);
        for _ in 0..REPORT_ATTEMPTS {
            let handle = self.handle.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(handle) = handle {
                let sent = async {
                    let mut conn = ControlConn::open(&handle).await?;
                    conn.send("POST", &path, Some(body.clone())).await
                };
                match sent.await {
                    Ok((status, _)) if status == 200 || status == 404 => {
                        tracing::info!(command_id = id, status, "command result reported");
                        return;
                    }
                    Ok((status, _)) => tracing::debug!(command_id = id, status, "result refused; retrying"),
                    Err(e) => tracing::debug!(command_id = id, error = %e, "could not report a result; retrying"),
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(10));
        }
        tracing::warn!(command_id = id, "could not report a command's result");
    }
}

/// The report of a command that ran.
fn outcome_report(out: &Outcome, timeout_ms: u64) -> Value {
    let mut report = json!({
        "stdout": out.stdout, "stderr": out.stderr,
        "exit_code": out.exit_code, "stdout_truncated": out.stdout_truncated,
        "stderr_truncated": out.stderr_truncated,
    });
    if out.canceled {
        report["canceled"] = json!(true);
        report["error"] = json!("the command was canceled");
    } else if out.timed_out {
        report["error"] = json!(format!("the command timed out after {timeout_ms} ms and was killed"));
    } else if out.exit_code.is_none() {
        report["error"] = json!(format!("the command was ended by {}", out.signal.as_deref().unwrap_or("a signal")));
    }
    report
}

/// How a device that runs no commands answers one it was sent.
pub fn disabled_report() -> Value {
    json!({"error": "remote commands are disabled on this device (commands_allow is empty)"})
}
