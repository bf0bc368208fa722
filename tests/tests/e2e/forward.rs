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
