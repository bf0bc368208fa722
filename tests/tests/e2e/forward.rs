//! Internal forward → tunnel → agent → origin.

use edgelink_e2e::{SECRET, Stack, http, origin};
use futures::StreamExt;

#[tokio::test]
async fn get_and_post_reach_the_local_service() {
    let stack = Stack::start().await;
    let (device, agent, session) = stack.connected_device("alice@example.com").await;
    let client = http();

    let resp = client.get(stack.forward_url(&session.token, "/hello")).bearer_auth(SECRET).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), origin::HELLO);

    // By device id instead of session id.
    let resp = client.get(stack.forward_url(&device.id, "/hello")).bearer_auth(SECRET).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), origin::HELLO);

    // The device's root, with and without the trailing slash.
    for url in
        [stack.forward_url(&session.token, "/"), stack.forward_url(&session.token, "").trim_end_matches('/').to_owned()]
    {
        let resp = client.get(&url).bearer_auth(SECRET).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        assert_eq!(resp.text().await.unwrap(), origin::INDEX_HTML);
    }

    let resp = client
        .post(stack.forward_url(&session.token, "/echo?x=1"))
        .bearer_auth(SECRET)
        .body("ping body")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "ping body");
    agent.stop().await;
}

#[tokio::test]
async fn caller_credentials_and_hop_by_hop_headers_do_not_reach_the_device() {
    let stack = Stack::start().await;
    let (_device, agent, session) = stack.connected_device("alice@example.com").await;
    let resp = http()
        .get(stack.forward_url(&session.token, "/headers"))
        .bearer_auth(SECRET)
        .header("x-custom", "kept")
        .header("connection", "x-drop-me")
        .header("x-drop-me", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(h["x-custom"], "kept");
    assert!(h.get("authorization").is_none(), "internal secret leaked to the device: {h}");
    assert!(h.get("x-drop-me").is_none(), "{h}");
    agent.stop().await;
}

#[tokio::test]
async fn one_internal_connection_carries_pipelined_forwards_then_other_routes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::start().await;
    let (_device, agent, session) = stack.connected_device("alice@example.com").await;
    let addr = stack.internal_url().trim_start_matches("http://").to_owned();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let t = &session.token;
    // Three forwards (one with a chunked body) and a session list, sent at
    // once on one connection: the relay forwards the first three by heads
    // and hands the connection to its router for the fourth.
    let auth = format!("Authorization: Bearer {SECRET}");
    let requests = format!(
        "GET /internal/forward/{t}/hello HTTP/1.1\r\nHost: relay\r\n{auth}\r\n\r\n\
POST /internal/forward/{t}/echo HTTP/1.1\r\nHost: relay\r\n{auth}\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nping\r\n0\r\n\r\n\
GET /internal/forward/{t}/hostile-headers HTTP/1.1\r\nHost: relay\r\n{auth}\r\n\r\n\
GET /internal/sessions HTTP/1.1\r\nHost: relay\r\n{auth}\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(requests.as_bytes()).await.unwrap();
    let mut answers = String::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), conn.read_to_string(&mut answers))
        .await
        .expect("the relay closes after the last answer")
        .unwrap();
    assert_eq!(answers.matches("HTTP/1.1 200 OK\r\n").count(), 4, "{answers}");
    let at = |needle: &str| answers.find(needle).unwrap_or_else(|| panic!("{needle:?} missing: {answers}"));
    assert!(at(origin::HELLO) < at("ping") && at("ping") < at("hostile") && at("hostile") < at("\"sessions\""));
    assert!(answers.contains(t.as_str()), "the session list names the session: {answers}");
    // A device cannot forge the relay's own error marker.
    assert!(!answers.to_ascii_lowercase().contains("x-edgelink-relay-error"), "{answers}");

    // A forward that asks to close is told so in its answer (a client
    // would otherwise send its next request into a closed socket).
    let mut conn = tokio::net::TcpStream::connect(stack.internal_url().trim_start_matches("http://")).await.unwrap();
    let request =
        format!("GET /internal/forward/{t}/hello HTTP/1.1\r\nHost: relay\r\n{auth}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), conn.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "{answer}");
    agent.stop().await;
}

/// Peak resident memory of this process, KiB.
fn vm_hwm_kib() -> u64 {
    edgelink_e2e::proc_status_kib("VmHWM")
}

#[tokio::test]
async fn sixty_four_mib_streams_both_ways_without_buffering_the_body() {
    let stack = Stack::start().await;
    let (_device, agent, session) = stack.connected_device("alice@example.com").await;
    let client = http();
    let before = vm_hwm_kib();
    const MIB: usize = 64;

    // Download: the origin streams 64 MiB; count it as it arrives.
    let resp = client
        .get(stack.forward_url(&session.token, &format!("/big?mib={MIB}")))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut got = 0usize;
    while let Some(chunk) = body.next().await {
        got += chunk.unwrap().len();
    }
    assert_eq!(got, MIB * 1024 * 1024);

    // Upload: stream 64 MiB in 1 MiB chunks; the origin counts them.
    let chunk = bytes::Bytes::from(vec![7u8; 1024 * 1024]);
    let stream = futures::stream::iter((0..MIB).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let resp = client
        .post(stack.forward_url(&session.token, "/count"))
        .bearer_auth(SECRET)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), (MIB * 1024 * 1024).to_string());

    // Client, relay, agent and origin all live in this process: had any hop
    // buffered a whole body, the peak would have grown by 64 MiB or more.
    let grown_mib = (vm_hwm_kib().saturating_sub(before)) / 1024;
    assert!(grown_mib < 40, "peak RSS grew by {grown_mib} MiB while streaming {MIB} MiB");
    agent.stop().await;
}

#[tokio::test]
async fn websocket_echo_passes_through_the_upgrade() {
    let stack = Stack::start().await;
    let (_device, agent, session) = stack.connected_device("alice@example.com").await;
    let auth = format!("Bearer {SECRET}");
    edgelink_e2e::ws_echo(&stack.forward_url(&session.token, "/ws"), &[("authorization", &auth)]).await;
    agent.stop().await;
}

#[tokio::test]
async fn control_paths_unknown_sessions_and_slow_devices_get_error_bodies() {
    let stack = Stack::start().await;
    let (_device, agent, session) = stack.connected_device("alice@example.com").await;
    let client = http();

    let resp =
        client.get(stack.forward_url(&session.token, "/.edgelink/v1/info")).bearer_auth(SECRET).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "forbidden");

    let resp = client.get(stack.forward_url("no-such-session", "/hello")).bearer_auth(SECRET).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 404003);
    assert!(body["timestamp"].is_string() && body["path"].is_string() && body["message"].is_string());

    // forward_timeout is 5 s in the harness; /slow answers after 30 s.
    let resp = client.get(stack.forward_url(&session.token, "/slow")).bearer_auth(SECRET).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "device_timeout");
    agent.stop().await;
}

/// Reads one request head from a stream a bare device was given.
async fn head_on(stream: &mut edgelink_tunnel::TunnelStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("a request head within 5 s")
            .expect("read");
        assert!(n > 0, "the stream ended before a head: {}", String::from_utf8_lossy(&head));
        head.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(head).expect("a text head")
}

/// A device that announces its local service when it dials gets every
/// request written for that service (its `Host`, its base path, the
/// original host kept), on the fast path and the router's, and control
/// requests on streams of their own: what lets it splice streams as they
/// are (docs/protocol.md §5). A malformed announcement is not taken.
#[tokio::test]
async fn a_device_that_announces_its_local_service_gets_requests_written_for_it() {
    use edgelink_agent::credentials::AuthClient;
    use secrecy::ExposeSecret;
    use tokio::io::AsyncWriteExt;
    let stack = Stack::start().await;
    let device = stack.add_device("alice@example.com").await;
    let tokens = AuthClient::new(http(), &stack.api_url, &device.id).authenticate(&device.key()).await.unwrap();
    let tls = edgelink_agent::tls::client_config(None).unwrap();
    let config = edgelink_tunnel::TunnelConfig::default();
    let dial = |offer: &'static str| {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (tls, config, url, token) =
            (tls.clone(), config.clone(), stack.tunnel_url(), tokens.access.expose_secret().to_owned());
        async move {
            let mut accepted = None;
            let session = edgelink_tunnel::dial_with(
                &url,
                &token,
                Some(offer),
                tls,
                std::time::Duration::from_secs(5),
                &config,
                |yes| {
                    accepted = Some(yes);
                    move |s| {
                        let _ = tx.send(s);
                    }
                },
            )
            .await
            .unwrap();
            (session, accepted.expect("told before any stream"), rx)
        }
    };

    let (_session, accepted, mut inbound) = dial("127.0.0.1:9/base/").await;
    assert!(accepted, "the relay takes a well-formed local origin");
    let session = stack.wait_session(&device.id, None).await;
    let internal_host = stack.internal_url().trim_start_matches("http://").to_owned();

    // The fast path: written for the local service.
    let client = http();
    let url = stack.forward_url(&session.token, "/a%20b/c?x=1");
    let sent = tokio::spawn(client.get(url).bearer_auth(SECRET).header("x-custom", "kept").send());
    let mut stream = tokio::time::timeout(std::time::Duration::from_secs(5), inbound.recv()).await.unwrap().unwrap();
    let head = head_on(&mut stream).await;
    let lower = head.to_ascii_lowercase();
    assert!(head.starts_with("GET /base/a%20b/c?x=1 HTTP/1.1\r\n"), "{head}");
    assert!(lower.contains("\r\nhost: 127.0.0.1:9\r\n"), "{head}");
    assert!(lower.contains(&format!("\r\nx-forwarded-host: {internal_host}\r\n")), "{head}");
    assert_eq!(lower.matches("\r\nhost:").count(), 1, "{head}");
    assert!(lower.contains("\r\nx-custom: kept\r\n") && !lower.contains("authorization"), "{head}");
    stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
    let resp = sent.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "ok");

    // A notice goes on a new stream, as the relay wrote it, though a kept
    // stream (the first one) is idle in the pool.
    let notified = tokio::spawn({
        let internal = stack.internal();
        let token = session.token.clone();
        async move { internal.notify(&token, "messages").await }
    });
    let mut control = tokio::time::timeout(std::time::Duration::from_secs(5), inbound.recv())
        .await
        .expect("the notice on a new stream")
        .unwrap();
    let head = head_on(&mut control).await;
    assert!(head.starts_with(&format!("POST {} HTTP/1.1\r\n", edgelink_protocol::paths::NOTIFY)), "{head}");
    assert!(!head.to_ascii_lowercase().contains("127.0.0.1:9"), "control requests are the agent's: {head}");
    control.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").await.unwrap();
    notified.await.unwrap().unwrap();
    // ... and that stream is not kept for user requests.
    let url = stack.forward_url(&session.token, "/next");
    let sent = tokio::spawn(client.get(url).bearer_auth(SECRET).send());
    let head = head_on(&mut stream).await;
    assert!(head.starts_with("GET /base/next HTTP/1.1\r\n"), "the kept user stream carries it: {head}");
    stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap();
    assert_eq!(sent.await.unwrap().unwrap().status(), 204);

    // The router's path (an upgrade), with the caller's own forwarded host:
    // on the kept stream or a new one.
    let url = stack.forward_url(&session.token, "/ws");
    let sent = tokio::spawn(
        client
            .get(url)
            .bearer_auth(SECRET)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("x-forwarded-host", "caller.example")
            .send(),
    );
    let (head, mut new) = tokio::select! {
        head = head_on(&mut stream) => (head, None),
        s = inbound.recv() => {
            let mut s = s.expect("stream");
            (head_on(&mut s).await, Some(s))
        }
    };
    let lower = head.to_ascii_lowercase();
    assert!(head.starts_with("GET /base/ws HTTP/1.1\r\n"), "{head}");
    assert!(lower.contains("\r\nhost: 127.0.0.1:9\r\n"), "{head}");
    assert!(lower.contains("\r\nx-forwarded-host: caller.example\r\n"), "{head}");
    assert_eq!(lower.matches("x-forwarded-host").count(), 1, "{head}");
    new.as_mut()
        .unwrap_or(&mut stream)
        .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(sent.await.unwrap().unwrap().status(), 404);

    // A malformed announcement: the tunnel comes up, requests go as sent.
    let (_second, accepted, mut inbound) = dial("127.0.0.1:9/a b").await;
    assert!(!accepted, "a malformed local origin is not echoed");
    let session = stack.wait_session(&device.id, Some(&session.token)).await;
    let sent = tokio::spawn(client.get(stack.forward_url(&session.token, "/plain")).bearer_auth(SECRET).send());
    let mut stream = tokio::time::timeout(std::time::Duration::from_secs(5), inbound.recv()).await.unwrap().unwrap();
    let head = head_on(&mut stream).await;
    assert!(head.starts_with("GET /plain HTTP/1.1\r\n"), "{head}");
    assert!(head.to_ascii_lowercase().contains(&format!("\r\nhost: {internal_host}\r\n")), "{head}");
    stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.unwrap();
    assert_eq!(sent.await.unwrap().unwrap().status(), 204);
}
