//! Streams the relay opens: each carries one or more HTTP/1.1 requests.
//! Control paths are answered here; everything else goes to the local
//! service (keep-alive pooled), upgrades spliced through.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgelink_protocol::error::{ErrorBody, ErrorCode};
use edgelink_protocol::{hop, limits, paths};
use edgelink_tunnel::TunnelStream;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

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
        }
    }
}

/// Serves one relay-opened stream on its own task.
pub fn spawn_stream(ctx: Arc<StreamContext>, stream: TunnelStream) {
    tokio::spawn(async move {
        let svc = hyper::service::service_fn(move |req| handle(ctx.clone(), req));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .max_header_size(limits::MAX_HEADER_BYTES);
        if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).with_upgrades().await {
            tracing::debug!(error = %e, "tunnel stream ended with an error");
        }
    });
}

fn full(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn error(code: ErrorCode, message: &str, path: &str) -> Response<Body> {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::BAD_GATEWAY);
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
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
    error(ErrorCode::NotFound, "no such control path", path)
}

async fn forward(ctx: &StreamContext, mut req: Request<Incoming>) -> Result<Response<Body>, String> {
    let upgrade = hop::is_upgrade(req.headers());
    let pq = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    let uri: http::Uri = format!("{}{}", ctx.local_base, pq).parse().map_err(|_| "bad path".to_owned())?;
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    hop::strip(&mut parts.headers, upgrade);
    if let Some(host) = parts.headers.remove(header::HOST) {
        parts.headers.entry("x-forwarded-host").or_insert(host);
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.local_authority) {
        parts.headers.insert(header::HOST, v);
    }
    if !upgrade {
        parts.uri = uri;
        let resp = ctx.client.request(Request::from_parts(parts, body)).await.map_err(|e| e.to_string())?;
        let (mut rparts, rbody) = resp.into_parts();
        hop::strip(&mut rparts.headers, false);
        return Ok(Response::from_parts(rparts, rbody.map_err(Into::into).boxed()));
    }

    // Upgrades get a connection of their own: it is handed over to the
    // spliced byte stream and never goes back to the pool.
    parts.uri = pq.parse().map_err(|_| "bad path".to_owned())?;
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
    let mut resp = sender.send_request(Request::from_parts(parts, body)).await.map_err(|e| e.to_string())?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let local_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let (Ok(a), Ok(b)) = tokio::join!(client_upgrade, local_upgrade) {
                    let mut a = TokioIo::new(a);
                    let mut b = TokioIo::new(b);
                    let _ = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, 64 * 1024, 64 * 1024).await;
                }
            });
        }
        let (rparts, _) = resp.into_parts();
        return Ok(Response::from_parts(rparts, Empty::new().map_err(|e| match e {}).boxed()));
    }
    let (mut rparts, rbody) = resp.into_parts();
    hop::strip(&mut rparts.headers, false);
    // The tunnel stream is its own keep-alive connection, whatever HTTP
    // version the local service answered with.
    rparts.version = http::Version::HTTP_11;
    Ok(Response::from_parts(rparts, rbody.map_err(Into::into).boxed()))
}
