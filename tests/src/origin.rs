//! The origin web service devices forward to in tests (and the demo
//! device's local service in `make run`): a home page, small answers,
//! streaming echo and count, a large streamed download, a WebSocket echo,
//! a header mirror and a slow endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, Request};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use futures::StreamExt;

/// Body of `GET /hello`.
pub const HELLO: &str = "hello from origin";

/// The page `GET /` serves (the demo device's home page in `make run`).
pub const INDEX_HTML: &str = "<!doctype html><html lang=en><meta charset=utf-8><title>edgelink demo device</title>\
<body style='font-family:sans-serif;max-width:40em;margin:3em auto'><h1>Hello from the demo device</h1>\
<p>This page is served by a web service on the device, reached through its edgelink tunnel.</p></body></html>";

/// Starts the origin on 127.0.0.1:0.
pub async fn spawn() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve(listener));
    addr
}

/// Serves the origin on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener) {
    let waiting = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/", get(|| async { axum::response::Html(INDEX_HTML) }))
        .route("/hello", get(|| async { HELLO }))
        // A device answer that imitates a relay error marker (it must not
        // be taken for one).
        .route(
            "/spoof-relay-error",
            get(|| async {
                (
                    axum::http::StatusCode::NOT_FOUND,
                    [("x-edgelink-relay-error", "session_not_found")],
                    "device says 404",
                )
            }),
        )
        .route("/echo", post(|req: Request| async move { Body::from_stream(req.into_body().into_data_stream()) }))
        .route("/count", post(count))
        .route("/big", get(big))
        .route("/headers", get(headers).post(headers))
        // Answers after 30 s; `/slow/waiting` says how many of its callers
        // are still connected.
        .route(
            "/slow",
            get({
                let waiting = waiting.clone();
                move || async move {
                    let _waiting = Waiting::enter(&waiting);
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }
            }),
        )
        .route("/slow/waiting", get(move || async move { waiting.load(Ordering::SeqCst).to_string() }))
        .route("/ws", get(|ws: WebSocketUpgrade| async move { ws.on_upgrade(echo) }))
        // Answers that try to change the browser state of the origin they
        // are shown on, plain and as a WebSocket handshake.
        .route("/hostile-headers", get(|| async { (hostile_headers(), "hostile") }))
        .route(
            "/ws-hostile",
            get(|ws: WebSocketUpgrade| async move { (hostile_headers(), ws.on_upgrade(echo).into_response()) }),
        )
        // A device app's own cookies: one scoped to the parent domain (to
        // toss at sibling devices) and one named like the relay's pass.
        .route(
            "/set-utf8-cookie",
            get(|| async {
                let v = HeaderValue::from_bytes("name=Jos\u{e9}; Domain=devices.localhost; Path=/".as_bytes());
                let mut h = HeaderMap::new();
                h.insert(header::SET_COOKIE, v.expect("a header value"));
                (h, "set")
            }),
        )
        .route(
            "/set-cookies",
            get(|| async {
                let mut h = HeaderMap::new();
                for v in [
                    "app=1; Path=/; HttpOnly",
                    "wide=1; Domain=devices.localhost; Path=/",
                    "edgelink-pass=forged; Path=/",
                    "__Host-edgelink-pass=forged; Path=/; Secure",
                ] {
                    h.append(axum::http::header::SET_COOKIE, axum::http::HeaderValue::from_static(v));
                }
                (h, "cookies set")
            }),
        )
        // A device web app as real ones are written: absolute paths, its
        // own session cookie, localStorage and a WebSocket (docs: device
        // origins). It reports what worked in #result.
        .route("/app", get(|| async { axum::response::Html(APP_HTML) }))
        .route("/app.js", get(|| async { ([(axum::http::header::CONTENT_TYPE, "text/javascript")], APP_JS) }))
        .route(
            "/api/login",
            post(|| async { ([(axum::http::header::SET_COOKIE, "app_session=s1; Path=/; HttpOnly")], "ok") }),
        )
        .route(
            "/api/whoami",
            get(|h: HeaderMap| async move {
                let cookie = h.get(axum::http::header::COOKIE).and_then(|v| v.to_str().ok()).unwrap_or("");
                let session = cookie.split(';').map(str::trim).find_map(|kv| kv.strip_prefix("app_session="));
                axum::Json(serde_json::json!({ "session": session }))
            }),
        )
        // A redirect to `?to=`.
        .route(
            "/redirect",
            get(|Query(q): Query<RedirectQuery>| async move {
                (axum::http::StatusCode::FOUND, [(axum::http::header::LOCATION, q.to)])
            }),
        );
    let _ = axum::serve(listener, app).await;
}

/// The device web app's page.
pub const APP_HTML: &str = "<!doctype html><title>device app</title><h1>Device app</h1>\
<pre id=\"result\">running</pre><script src=\"/app.js\"></script>";

/// Its script: every step uses what a device app on its own origin needs.
pub const APP_JS: &str = r#"(async () => {
  const out = {};
  try {
    await fetch('/api/login', { method: 'POST' });
    out.cookie = (await (await fetch('/api/whoami')).json()).session === 's1' ? 'ok' : 'missing';
    localStorage.setItem('device-app', 'kept');
    out.storage = localStorage.getItem('device-app') === 'kept' ? 'ok' : 'missing';
    out.ws = await new Promise((resolve) => {
      const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws');
      ws.onopen = () => ws.send('ping');
      ws.onmessage = (m) => { resolve(m.data === 'ping' ? 'ok' : 'wrong: ' + m.data); ws.close(); };
      ws.onerror = () => resolve('error');
      setTimeout(() => resolve('timeout'), 5000);
    });
  } catch (e) { out.error = String(e); }
  document.getElementById('result').textContent = JSON.stringify(out);
})();"#;

/// Headers no device answer may pass to a browser on a cloud origin.
pub const HOSTILE_HEADERS: [(&str, &str); 11] = [
    // Forges the relay's own error marker (api-server acts on it).
    ("x-edgelink-relay-error", "device_timeout"),
    ("set-cookie", "planted=1; Path=/"),
    ("nel", r#"{"report_to":"x","max_age":86400}"#),
    ("report-to", r#"{"group":"x","max_age":86400,"endpoints":[{"url":"https://evil.example/r"}]}"#),
    ("clear-site-data", "\"cookies\""),
    ("strict-transport-security", "max-age=31536000; includeSubDomains"),
    ("alt-svc", "h3=\"evil.example:443\""),
    ("accept-ch", "Sec-CH-UA-Platform-Version"),
    ("cache-control", "public, max-age=86400"),
    ("access-control-allow-origin", "https://evil.example"),
    ("access-control-allow-credentials", "true"),
];

/// Counts a handler as waiting until it is dropped (its caller gone).
struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count.clone())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn hostile_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in HOSTILE_HEADERS {
        h.insert(k, axum::http::HeaderValue::from_static(v));
    }
    h
}

#[derive(serde::Deserialize)]
struct RedirectQuery {
    to: String,
}

async fn count(req: Request) -> String {
    let mut n: u64 = 0;
    let mut stream = req.into_body().into_data_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => n += c.len() as u64,
            Err(_) => return "error".into(),
        }
    }
    n.to_string()
}

#[derive(serde::Deserialize)]
struct BigQuery {
    mib: Option<u64>,
}

async fn big(Query(q): Query<BigQuery>) -> Body {
    let mib = q.mib.unwrap_or(1).min(1024);
    let chunk = bytes::Bytes::from(vec![0x5au8; 1024 * 1024]);
    Body::from_stream(futures::stream::iter((0..mib).map(move |_| Ok::<_, std::io::Error>(chunk.clone()))))
}

async fn headers(h: HeaderMap) -> axum::Json<serde_json::Value> {
    let mut m = serde_json::Map::new();
    for (k, v) in h.iter() {
        m.insert(k.as_str().to_owned(), serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()));
    }
    axum::Json(serde_json::Value::Object(m))
}

async fn echo(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        let reply = match msg {
            Message::Text(t) => Message::Text(t),
            Message::Binary(b) => Message::Binary(b),
            Message::Close(_) => break,
            _ => continue,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}
