//! The device's inbox (ADR 20): while the tunnel is up, the agent takes its
//! unread messages from the relay (`GET /.edgelink/v1/messages` on a stream
//! it opens), on connect, when the relay notifies it, and every
//! `message_poll_interval`; hands each to the configured local command or
//! HTTP endpoint; and acknowledges it only after that succeeded. A message
//! whose handling failed is taken again later (same id): at-least-once. A
//! message handled whose acknowledgement was lost is acknowledged, not
//! handled again, while this process lives.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use edgelink_protocol::paths;
use edgelink_tunnel::Handle;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

/// How many messages one fetch takes.
const BATCH: usize = 50;
/// Wait before retrying after a failed fetch or acknowledgement.
const RETRY: Duration = Duration::from_secs(1);
/// Most ids remembered as "handled, acknowledgement pending".
const MAX_REMEMBERED: usize = 10_000;

/// Where messages are handed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    /// Run this program (argv); the message JSON on stdin; exit 0 = handled.
    Command(Vec<String>),
    /// POST the message JSON here; a 2xx answer = handled.
    Http(String),
}

/// One message as the relay hands it over (other fields pass through to
/// the handler untouched).
#[derive(Debug, Deserialize)]
struct Envelope {
    id: String,
    #[serde(default)]
    message_type: String,
}

#[derive(Debug, Deserialize)]
struct Batch {
    messages: Vec<serde_json::Value>,
}

/// The inbox: one per agent process.
#[derive(Debug)]
pub struct Inbox {
    /// Where application messages go (`None`: they stay queued).
    handler: Option<Handler>,
    /// Runs native commands (`None`: they are refused).
    commands: Option<Arc<crate::commands::Runner>>,
    timeout: Duration,
    http: reqwest::Client,
    /// Handled, acknowledgement not yet accepted.
    handled: Mutex<HashSet<String>>,
    wake: Arc<Notify>,
}

impl Inbox {
    /// An inbox handing messages to `handler`, each within `timeout`;
    /// `wake` is notified by the relay's notices.
    pub fn new(
        handler: Option<Handler>,
        commands: Option<Arc<crate::commands::Runner>>,
        timeout: Duration,
        wake: Arc<Notify>,
    ) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        Inbox { handler, commands, timeout, http, handled: Mutex::new(HashSet::new()), wake }
    }

    /// Drains the inbox now, then whenever woken or every `poll`, until the
    /// task is dropped (the tunnel went down).
    pub async fn run(self: Arc<Self>, handle: Handle, poll: Duration) {
        if let Some(runner) = &self.commands {
            runner.set_handle(handle.clone());
        }
        let mut retry = RETRY;
        loop {
            match self.drain(&handle).await {
                Ok(n) => {
                    retry = RETRY;
                    if n > 0 {
                        tracing::debug!(handled = n, "messages handled");
                    }
                }
                Err(e) => {
                    // A refused fetch or acknowledgement (the relay's
                    // database busy, a stream reset): try again soon, not
                    // at the next poll, backing off to the poll interval.
                    tracing::debug!(error = %e, delay_ms = retry.min(poll).as_millis() as u64, "could not fetch messages; retrying");
                    tokio::time::sleep(retry.min(poll)).await;
                    retry = (retry * 2).min(poll);
                    continue;
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Takes and handles batches until the relay has nothing more that can
    /// be handled now; returns how many were acknowledged.
    pub async fn drain(&self, handle: &Handle) -> Result<usize, String> {
        let mut conn = ControlConn::open(handle).await?;
        let mut acked = 0;
        loop {
            let (status, body) = conn.send("GET", &format!("{}?limit={BATCH}", paths::MESSAGES), None).await?;
            if status != 200 {
                return Err(format!("relay answered {status} to the fetch"));
            }
            let batch: Batch = serde_json::from_slice(&body).map_err(|e| format!("bad message batch: {e}"))?;
            let full = batch.messages.len() >= BATCH;
            let mut progressed = false;
            for raw in batch.messages {
                let Ok(env) = serde_json::from_value::<Envelope>(raw.clone()) else {
                    tracing::warn!("a message without an id was skipped");
                    continue;
                };
                let known = self.handled.lock().unwrap_or_else(|e| e.into_inner()).contains(&env.id);
                if env.message_type == paths::COMMAND_NOTICE_TYPE {
                    // A native command's notice (or its cancel): handled
                    // here, whatever the application handler is.
                    if !known {
                        match self.command_notice(&mut conn, &raw).await? {
                            crate::commands::Taken::Busy => continue,
                            crate::commands::Taken::Done => self.remember(&env.id),
                        }
                    }
                } else if self.handler.is_none() {
                    // No application handler: it stays queued.
                    continue;
                } else if !known {
                    if let Err(e) = self.hand_over(&env, &raw).await {
                        // Not acknowledged: it comes back with the next fetch.
                        tracing::warn!(message_id = %env.id, error = %e, "message handler failed; will retry");
                        continue;
                    }
                    self.remember(&env.id);
                }
                let path = format!("{}/{}/ack", paths::MESSAGES, edgelink_protocol::paths::encode_segment(&env.id));
                let (status, _) = conn.send("POST", &path, None).await?;
                match status {
                    // Read, expired meanwhile, or gone (device deleted and
                    // re-added): nothing more to do with it either way.
                    200 | 404 | 410 => {
                        self.forget(&env.id);
                        acked += 1;
                        progressed = true;
                    }
                    s => return Err(format!("relay answered {s} to an acknowledgement")),
                }
            }
            // A full batch where nothing could be handled would loop
            // forever: wait for the next poll instead.
            if !full || !progressed {
                return Ok(acked);
            }
        }
    }

    fn remember(&self, id: &str) {
        let mut set = self.handled.lock().unwrap_or_else(|e| e.into_inner());
        if set.len() >= MAX_REMEMBERED {
            set.clear();
        }
        set.insert(id.to_owned());
    }

    fn forget(&self, id: &str) {
        self.handled.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    /// Acts on a native command's notice: a cancel stops the command if it
    /// runs here; otherwise the command is claimed and started (or, on a
    /// device that runs none, claimed and refused). Err only when the relay
    /// could not be asked (the notice is then taken again).
    async fn command_notice(
        &self,
        conn: &mut ControlConn,
        raw: &serde_json::Value,
    ) -> Result<crate::commands::Taken, String> {
        use crate::commands::Taken;
        let Some(id) = raw.pointer("/content/command_id").and_then(|v| v.as_str()) else {
            tracing::warn!("a command notice without a command_id was dropped");
            return Ok(Taken::Done);
        };
        let cancel = raw.pointer("/content/action").and_then(|v| v.as_str()) == Some("cancel");
        match &self.commands {
            Some(runner) if cancel => {
                runner.cancel(id);
                Ok(Taken::Done)
            }
            Some(runner) => runner.take(conn, id).await,
            None if cancel => Ok(Taken::Done),
            None => {
                let base = format!("{}/{}", paths::COMMANDS, paths::encode_segment(id));
                let (status, _) = conn.send("POST", &format!("{base}/claim"), None).await?;
                if status == 200 {
                    let body = crate::commands::disabled_report().to_string().into_bytes();
                    let (status, _) = conn.send("POST", &format!("{base}/result"), Some(body)).await?;
                    tracing::info!(command_id = id, status, "remote commands are disabled here; refusal reported");
                }
                Ok(Taken::Done)
            }
        }
    }

    /// Hands one message to the handler; Ok when it says it handled it.
    async fn hand_over(&self, env: &Envelope, raw: &serde_json::Value) -> Result<(), String> {
        let json = serde_json::to_vec(raw).map_err(|e| e.to_string())?;
        let Some(handler) = &self.handler else {
            return Err("no message handler".into());
        };
        match handler {
            Handler::Http(url) => {
                let resp = self
                    .http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-edgelink-message-id", &env.id)
                    .header("x-edgelink-message-type", &env.message_type)
                    .body(json)
                    .send()
                    .await
                    .map_err(|e| format!("local endpoint: {e}"))?;
                if !resp.status().is_success() {
                    return Err(format!("local endpoint answered {}", resp.status()));
                }
                Ok(())
            }
            Handler::Command(argv) => {
                let (program, args) = argv.split_first().ok_or("message_command is empty")?;
                let mut child = tokio::process::Command::new(program)
                    .args(args)
                    .env("EDGELINK_MESSAGE_ID", &env.id)
                    .env("EDGELINK_MESSAGE_TYPE", &env.message_type)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| format!("message_command: {e}"))?;
                if let Some(mut stdin) = child.stdin.take() {
                    // A handler that does not read its input still runs.
                    let _ = stdin.write_all(&json).await;
                }
                let status = tokio::time::timeout(self.timeout, child.wait())
                    .await
                    .map_err(|_| format!("message_command took longer than {:?}", self.timeout))?
                    .map_err(|e| format!("message_command: {e}"))?;
                if !status.success() {
                    return Err(format!("message_command exited with {status}"));
                }
                Ok(())
            }
        }
    }
}

/// One keep-alive HTTP/1.1 connection on a stream the device opened.
pub(crate) struct ControlConn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl ControlConn {
    pub(crate) async fn open(handle: &Handle) -> Result<Self, String> {
        let stream = handle.open_stream().await.map_err(|e| e.to_string())?;
        let (sender, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(ControlConn { sender })
    }

    pub(crate) async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "relay")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(15), self.sender.send_request(req))
            .await
            .map_err(|_| "the relay did not answer in time".to_owned())?
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).map_err(|e| e.to_string())?;
        Ok((status, body))
    }
}
