//! Seed 001's intermediary: `edge-agent proxy` connects out to a main
//! server's Socket.IO namespace (`/proxy`) with its `proxyId` and
//! `apiKey`, runs each `execute_command` over SSH through the pool of
//! `edgelink_ssh`, and answers `command_result` with
//! `{commandId, result: {stdout, stderr, exitCode}}`.
//!
//! * Credentials go in the handshake query, in the `auth` payload, or both
//!   ([`CredentialsIn`]; both by default, so servers written to the
//!   document's query form and to its Python example both accept it).
//! * The connection is kept: a refused or lost one is retried with
//!   exponential backoff and jitter; results of commands that finish while
//!   it is down are sent once it is back.
//! * Any failure to run a command is an answer with `exitCode: 1` and the
//!   reason in `stderr`; reasons never carry a password or key, and log
//!   lines name the command id, server and account, never credentials or
//!   the command text.

pub mod socketio;

use std::sync::Arc;
use std::time::Duration;

use edgelink_ssh::{Credential, Limits, Pool, Target};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// Where the intermediary puts `proxyId` and `apiKey`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CredentialsIn {
    /// The handshake URL's query (the document's form).
    Query,
    /// Socket.IO's `auth` payload (the document's Python example).
    Auth,
    /// Both.
    Both,
}

/// How `edge-agent proxy` runs.
pub struct Config {
    /// The main server, e.g. `https://main.example` (namespace `/proxy`) or
    /// `https://main.example/other-namespace`.
    pub server: String,
    /// This intermediary's id.
    pub proxy_id: String,
    /// Its key.
    pub api_key: SecretString,
    /// Where the two go.
    pub credentials_in: CredentialsIn,
    /// The Engine.IO path on the server (`/socket.io/`).
    pub engine_path: String,
    /// TLS roots for `https`/`wss` servers.
    pub tls: Arc<rustls::ClientConfig>,
    /// The SSH pool commands run through.
    pub pool: Pool,
    /// Bytes kept of each command's stdout and stderr.
    pub output_cap: usize,
    /// The longest timeout a command may ask for (longer ones are cut).
    pub max_timeout: Duration,
    /// Commands running at once; more wait.
    pub concurrency: usize,
}

/// A command's `timeout` when it names none (the document's example).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to the main server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The `execute_command` payload (the document's field names; `hostKey`
/// and `passphrase` are edgelink's additions).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecuteCommand {
    host: String,
    #[serde(default = "default_port")]
    port: u16,
    username: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    private_key: Option<String>,
    #[serde(default)]
    passphrase: Option<String>,
    command: String,
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    host_key: Option<String>,
}

fn default_port() -> u16 {
    22
}

/// Runs until `shutdown`: connects, serves commands, reconnects.
pub async fn run(config: Config, shutdown: CancellationToken) {
    let config = Arc::new(config);
    let (results_tx, mut results_rx) = mpsc::channel::<Value>(256);
    let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let mut backoff = edgelink_agent::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let mut pending: Option<Value> = None;
    loop {
        let client = tokio::select! {
            () = shutdown.cancelled() => return,
            c = connect(&config) => c,
        };
        let mut client = match client {
            Ok(c) => {
                tracing::info!(server = %config.server, proxy_id = %config.proxy_id, "connected to the main server");
                backoff.reset();
                c
            }
            Err(e) => {
                let wait = backoff.next_delay();
                tracing::warn!(server = %config.server, error = %e, retry_in = ?wait, "cannot connect to the main server");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(wait) => continue,
                }
            }
        };
        let ended = loop {
            // A result that could not be sent before is sent first.
            if let Some(result) = pending.take()
                && let Err(e) = client.emit("command_result", result.clone()).await
            {
                pending = Some(result);
                break e;
            }
            tokio::select! {
                () = shutdown.cancelled() => {
                    client.close().await;
                    return;
                }
                packet = client.next_packet() => match packet {
                    Err(e) => break e,
                    Ok(socketio::Packet::Event { name, args, ack }) => {
                        on_event(&config, &mut client, &name, args, ack, &results_tx, &slots).await;
                    }
                    Ok(_) => {}
                },
                Some(result) = results_rx.recv() => pending = Some(result),
            }
        };
        let wait = backoff.next_delay();
        tracing::warn!(server = %config.server, error = %ended, retry_in = ?wait, "main server connection ended");
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn connect(config: &Config) -> Result<socketio::Client, socketio::Error> {
    let in_query = config.credentials_in != CredentialsIn::Auth;
    let key = config.api_key.expose_secret();
    let query: Vec<(&str, &str)> =
        if in_query { vec![("proxyId", config.proxy_id.as_str()), ("apiKey", key)] } else { Vec::new() };
    let (url, namespace) = socketio::endpoint(&config.server, &query, &config.engine_path)?;
    let auth =
        (config.credentials_in != CredentialsIn::Query).then(|| json!({"proxyId": config.proxy_id, "apiKey": key}));
    socketio::Client::connect(url, namespace, auth, Arc::clone(&config.tls), CONNECT_TIMEOUT).await.map_err(|e| match e
    {
        // The URL carries the key: keep it out of the error text.
        socketio::Error::Connection(reason) => socketio::Error::Connection(reason.replace(key, "***")),
        other => other,
    })
}

async fn on_event(
    config: &Arc<Config>,
    client: &mut socketio::Client,
    name: &str,
    args: Vec<Value>,
    ack: Option<u64>,
    results: &mpsc::Sender<Value>,
    slots: &Arc<Semaphore>,
) {
    match name {
        "execute_command" => {
            let payload = args.into_iter().next().unwrap_or(Value::Null);
            let Some(command_id) = payload.get("commandId").and_then(Value::as_str).map(str::to_owned) else {
                tracing::warn!("execute_command without a commandId ignored");
                return;
            };
            if let Some(id) = ack {
                let _ = client.ack(id, json!({"received": true, "commandId": command_id})).await;
            }
            let (config, results, slots) = (Arc::clone(config), results.clone(), Arc::clone(slots));
            tokio::spawn(async move {
                let _slot = slots.acquire_owned().await;
                let result = execute(&config, &command_id, payload).await;
                let _ = results.send(json!({"commandId": command_id, "result": result})).await;
            });
        }
        "command_result_received" => {
            let ok = args.first().and_then(|a| a.get("success")).and_then(Value::as_bool).unwrap_or(false);
            tracing::debug!(success = ok, "the main server acknowledged a result");
        }
        other => tracing::debug!(event = other, "event ignored"),
    }
}

/// Runs one `execute_command`; every failure is an answer too.
async fn execute(config: &Config, command_id: &str, payload: Value) -> Value {
    let failed = |reason: String| json!({"stdout": "", "stderr": reason, "exitCode": 1});
    let cmd: ExecuteCommand = match serde_json::from_value(payload) {
        Ok(c) => c,
        Err(e) => {
            // serde's message names the field, never its value.
            tracing::warn!(command_id, error = %e, "invalid execute_command");
            return failed(format!("invalid execute_command: {e}"));
        }
    };
    let credential = match (cmd.password, cmd.private_key) {
        (_, Some(key)) if !key.trim().is_empty() => {
            Credential::PrivateKey { key: key.into(), passphrase: cmd.passphrase.map(SecretString::from) }
        }
        (Some(p), _) => Credential::Password(p.into()),
        _ => return failed("invalid execute_command: a password or privateKey is required".into()),
    };
    let timeout = cmd.timeout.map(Duration::from_millis).unwrap_or(DEFAULT_TIMEOUT).min(config.max_timeout);
    let target = Target { host: cmd.host, port: cmd.port, username: cmd.username, credential, host_key: cmd.host_key };
    tracing::info!(command_id, host = %target.host, port = target.port, user = %target.username,
        command_bytes = cmd.command.len(), ?timeout, "executing");
    let limits = Limits { timeout, output_cap: config.output_cap };
    match config.pool.run(&target, &cmd.command, limits).await {
        Ok(out) => {
            let mut stderr = out.stderr;
            let mut note = |text: String| {
                if !stderr.is_empty() && !stderr.ends_with('\n') {
                    stderr.push('\n');
                }
                stderr.push_str(&text);
            };
            if out.stdout_truncated {
                note(format!("[edgelink] stdout truncated at {} bytes\n", config.output_cap));
            }
            if out.stderr_truncated {
                note(format!("[edgelink] stderr truncated at {} bytes\n", config.output_cap));
            }
            if out.timed_out {
                note(format!("[edgelink] command timed out after {} ms and was killed\n", timeout.as_millis()));
            } else if let (None, Some(sig)) = (out.exit_code, &out.signal) {
                note(format!("[edgelink] command ended by signal {sig}\n"));
            }
            let code = if out.timed_out { 1 } else { out.exit_code.unwrap_or(1) };
            tracing::info!(command_id, exit_code = code, timed_out = out.timed_out, "command finished");
            json!({"stdout": out.stdout, "stderr": stderr, "exitCode": code})
        }
        Err(e) => {
            tracing::warn!(command_id, error = %e, "command failed");
            failed(e.to_string())
        }
    }
}
