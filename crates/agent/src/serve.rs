//! Streams the relay opens: each carries one or more HTTP/1.1 requests.
//! Control paths are answered here; everything else goes to the local
//! service (keep-alive pooled), upgrades spliced through.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgelink_protocol::error::{ErrorBody, ErrorCode};
use edgelink_protocol::paths;
use edgelink_tunnel::TunnelStream;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tracing::Instrument;

/// Response body type of the agent's stream server.
pub type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Everything a stream handler needs.
pub struct StreamContext {
    /// This device.
    pub device_id: String,
    /// `http://host:port` of the local service, without trailing slash.
    pub local_base: String,
    /// `host:port` of the local service.
    pub local_authority: String,
    /// Pooled client to the local service.
    pub client: Client<HttpConnector, Incoming>,
    /// Connect timeout to the local service.
    pub connect_timeout: Duration,
    /// When the agent started.
    pub started: Instant,
    /// Woken by the relay's notices (`/.edgelink/v1/notify`).
    pub wake: Arc<tokio::sync::Notify>,
}

impl StreamContext {
    /// A context forwarding to `local_service`.
    pub fn new(device_id: &str, local_service: &str, local_authority: String, connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(connector);
        StreamContext {
            device_id: device_id.to_owned(),
            local_base: local_service.trim_end_matches('/').to_owned(),
            local_authority,
            client,
            connect_timeout,
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
            let svc = hyper::service::service_fn(move |req| handle(ctx.clone(), req));
            edgelink_hop::serve(stream, svc, STREAM_HEADER_TIMEOUT).await;
        }
        .instrument(span),
    );
}

fn full(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn error(code: ErrorCode, message: &str, path: &str) -> Response<Body> {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::BAD_GATEWAY);
    let ts = edgelink_protocol::time::rfc3339(chrono::Utc::now().timestamp_millis());
    full(status, serde_json::to_vec(&ErrorBody::new(code, message, path, ts)).unwrap_or_default())
}

async fn handle(ctx: Arc<StreamContext>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    if paths::is_control_path(&path) {
        return Ok(control(&ctx, &req, &path));
    }
    Ok(match forward(&ctx, req).await {
        Ok(resp) => resp,
        Err(msg) => {
            tracing::info!(error = %msg, "local service failed");
            error(ErrorCode::DeviceUnavailable, &format!("local service: {msg}"), &path)
        }
    })
}

fn control(ctx: &StreamContext, req: &Request<Incoming>, path: &str) -> Response<Body> {
    if path == paths::AGENT_INFO && req.method() == http::Method::GET {
        let info = serde_json::json!({
            "device_id": ctx.device_id,
            "agent_version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": ctx.started.elapsed().as_secs(),
        });
        return full(StatusCode::OK, info.to_string().into_bytes());
    }
    if path == paths::NOTIFY && req.method() == http::Method::POST {
        // Whatever the topic, the inbox looks (messages are the only one).
        ctx.wake.notify_one();
        return full(StatusCode::OK, br#"{"status":"ok"}"#.to_vec());
    }
    error(ErrorCode::NotFound, "no such control path", path)
}

async fn forward(ctx: &StreamContext, mut req: Request<Incoming>) -> Result<Response<Body>, String> {
    // The relay already removed the caller's credentials for its own API.
    let pending = edgelink_hop::prepare(&mut req, &[]);
    let pq = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    let headers = req.headers_mut();
    if let Some(host) = headers.remove(header::HOST) {
        headers.entry("x-forwarded-host").or_insert(host);
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.local_authority) {
        headers.insert(header::HOST, v);
    }
    let resp = if pending.is_upgrade() {
        // Upgrades get a connection of their own: it is handed over to the
        // spliced byte stream and never goes back to the pool.
        *req.uri_mut() = pq.parse().map_err(|_| "bad path".to_owned())?;
        let tcp = tokio::time::timeout(ctx.connect_timeout, tokio::net::TcpStream::connect(&ctx.local_authority))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        sender.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        *req.uri_mut() = format!("{}{}", ctx.local_base, pq).parse().map_err(|_| "bad path".to_owned())?;
        ctx.client.request(req).await.map_err(|e| e.to_string())?
    };
    let resp = edgelink_hop::finish(resp, pending).map_err(|e| e.to_string())?;
    Ok(resp.map(|b| match b {
        Some(b) => b.map_err(Into::into).boxed(),
        None => Empty::new().map_err(|e| match e {}).boxed(),
    }))
}
