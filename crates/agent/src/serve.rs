//! Streams the relay opens: each carries one or more HTTP/1.1 requests.
//! Control paths are answered here; everything else goes to the local
//! service, forwarded by heads (`edgelink_hop::h1`): one keep-alive stream
//! is one keep-alive connection to the service, bodies are copied with
//! their framing, upgrades spliced through.

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgelink_hop::h1::{Answer, Local, Target};
use edgelink_protocol::error::{ErrorBody, ErrorCode};
use edgelink_protocol::paths;
use edgelink_tunnel::TunnelStream;
use tracing::Instrument;

/// Everything a stream handler needs.
pub struct StreamContext {
    /// This device.
    pub device_id: String,
    /// Where requests go: the local service's `host:port` and timeouts.
    pub target: Target,
    /// When the agent started.
    pub started: Instant,
    /// Woken by the relay's notices (`/.edgelink/v1/notify`).
    pub wake: Arc<tokio::sync::Notify>,
}

impl StreamContext {
    /// A context forwarding to the local service at `local_authority`,
    /// under the base path `path_prefix` (`""` or `/base`, no trailing `/`).
    pub fn new(device_id: &str, local_authority: String, path_prefix: String, connect_timeout: Duration) -> Self {
        StreamContext {
            device_id: device_id.to_owned(),
            target: Target {
                authority: local_authority,
                path_prefix,
                connect_timeout,
                header_timeout: STREAM_HEADER_TIMEOUT,
            },
            started: Instant::now(),
            wake: Arc::new(tokio::sync::Notify::new()),
        }
    }
}

/// How long a relay-opened stream may sit without a request head. The
/// relay's pool keeps idle streams for less (20 s), so it closes them first.
const STREAM_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves one relay-opened stream on its own task.
pub fn spawn_stream(ctx: Arc<StreamContext>, stream: TunnelStream) {
    let span = tracing::debug_span!("tunnel_stream", device_id = %ctx.device_id);
    tokio::spawn(
        async move {
            edgelink_hop::h1::serve_stream(stream, &ctx.target, &*ctx).await;
        }
        .instrument(span),
    );
}

fn json(status: u16, body: Vec<u8>) -> Answer {
    Answer::json(status, body)
}

fn error(code: ErrorCode, message: &str, path: &str) -> Answer {
    let ts = edgelink_protocol::time::rfc3339(chrono::Utc::now().timestamp_millis());
    json(code.status(), serde_json::to_vec(&ErrorBody::new(code, message, path, ts)).unwrap_or_default())
}

impl Local for StreamContext {
    fn answer(&self, method: &str, path: &str) -> Option<Answer> {
        let path = path.split('?').next().unwrap_or(path);
        if !paths::is_control_path(path) {
            return None;
        }
        if path == paths::AGENT_INFO && method == "GET" {
            let info = serde_json::json!({
                "device_id": self.device_id,
                "agent_version": env!("CARGO_PKG_VERSION"),
                "uptime_secs": self.started.elapsed().as_secs(),
            });
            return Some(json(200, info.to_string().into_bytes()));
        }
        if path == paths::NOTIFY && method == "POST" {
            // Whatever the topic, the inbox looks (messages are the only one).
            self.wake.notify_one();
            return Some(json(200, br#"{"status":"ok"}"#.to_vec()));
        }
        Some(error(ErrorCode::NotFound, "no such control path", path))
    }

    fn failure(&self, failed: &edgelink_hop::h1::H1Error, path: &str) -> Answer {
        let message = failed.to_string();
        tracing::info!(error = %message, "local service failed");
        let path = path.split('?').next().unwrap_or(path);
        error(ErrorCode::DeviceUnavailable, &format!("local service: {message}"), path)
    }
}
