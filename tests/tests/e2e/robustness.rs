//! Hostile or broken peers: the bad session or stream is closed, the relay
//! keeps serving everyone else, nothing panics.

use std::time::Duration;

use edgelink_agent::credentials::AuthClient;
use edgelink_e2e::{Device, SECRET, Stack, http, origin};
use futures::SinkExt;
use secrecy::ExposeSecret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A healthy device whose forward must keep working throughout.
async fn healthy(stack: &Stack) -> (edgelink_e2e::AgentRun, String) {
    let (_device, agent, session) = stack.connected_device("healthy@example.com").await;
    (agent, session.token)
}

async fn assert_still_serving(stack: &Stack, session: &str) {
    let resp = http().get(stack.forward_url(session, "/hello")).bearer_auth(SECRET).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), origin::HELLO);
}

async fn token(stack: &Stack, device: &Device) -> String {
    let t = AuthClient::new(http(), &stack.api_url, &device.id).authenticate(&device.key()).await.unwrap();
    t.access.expose_secret().to_owned()
}

/// Reads until EOF or error; returns how long that took (panics after 10 s).
async fn read_until_closed(stream: &mut TcpStream) -> Duration {
    let start = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("connection was not closed"),
        }
    }
}

/// Performs the upgrade by hand and returns the raw socket after the 101.
async fn raw_upgrade(stack: &Stack, token: &str) -> TcpStream {
    let addr = stack.relay.as_ref().unwrap().tunnel_addr;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /tunnel HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    s
}

#[tokio::test]
async fn malformed_websocket_frames_close_only_that_session() {
    let stack = Stack::start().await;
    let (agent, good) = healthy(&stack).await;
    let bad = stack.add_device("mallory@example.com").await;
    let mut s = raw_upgrade(&stack, &token(&stack, &bad).await).await;
    let _ = stack.wait_session(&bad.id, None).await;
    // An unmasked frame with a reserved opcode and RSV bits set: invalid
    // from a client in every way.
    s.write_all(&[0x7f, 0x05, b'h', b'e', b'l', b'l', b'o']).await.unwrap();
    read_until_closed(&mut s).await;
    stack.wait_no_session(&bad.id, Duration::from_secs(3)).await;
    assert_still_serving(&stack, &good).await;
    agent.stop().await;
}

#[tokio::test]
async fn garbage_yamux_bytes_and_text_messages_close_only_that_session() {
    let stack = Stack::start().await;
    let (agent, good) = healthy(&stack).await;
    let bad = stack.add_device("mallory@example.com").await;
    for msg in [
        Message::Binary(bytes::Bytes::from_static(b"\x09\x09\x09 this is not a yamux frame header")),
        Message::text("yamux does not speak text"),
    ] {
        let mut req = stack.tunnel_url().into_client_request().unwrap();
        req.headers_mut().insert("authorization", format!("Bearer {}", token(&stack, &bad).await).parse().unwrap());
        let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        let id = resp.headers().get("x-edgelink-session").unwrap().to_str().unwrap().to_owned();
        let _ = stack.wait_session(&bad.id, None).await;
        ws.send(msg).await.unwrap();
        stack.wait_no_session(&bad.id, Duration::from_secs(3)).await;
        let stored = stack.wait_closed_in_store(&id).await;
        assert_eq!(stored.close_reason.as_deref(), Some("protocol_error"), "{stored:?}");
        assert_still_serving(&stack, &good).await;
    }
    agent.stop().await;
}

#[tokio::test]
async fn a_device_stream_that_never_sends_a_request_is_closed() {
    let stack = Stack::start().await;
    let (agent, good) = healthy(&stack).await;
    let dev = stack.add_device("slowloris@example.com").await;
    let url = stack.tunnel_url();
    let tcp =
        tokio::net::TcpStream::connect(url.trim_start_matches("ws://").trim_end_matches("/tunnel")).await.unwrap();
    let (tcp, early) = edgelink_tunnel::handshake::upgrade_client(tcp, &url, &token(&stack, &dev).await).await.unwrap();
    let session = edgelink_tunnel::session::spawn(
        tcp,
        &early,
        edgelink_tunnel::Role::Device,
        &edgelink_tunnel::TunnelConfig::default(),
        |_| {},
    );
    let handle = session.handle.clone();
    // A yamux stream exists for the relay once its first frame arrives, so
    // "never sends a request" means: a byte or a partial head, then silence.
    let mut one_byte = handle.open_stream().await.unwrap();
    one_byte.write_all(b"P").await.unwrap();
    let mut partial = handle.open_stream().await.unwrap();
    partial.write_all(b"POST /.edgelink/v1/heartbeat HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // The relay's header_timeout is 2 s in the harness.
    let started = std::time::Instant::now();
    let mut buf = [0u8; 256];
    for s in [&mut one_byte, &mut partial] {
        let n = tokio::time::timeout(Duration::from_secs(6), s.read(&mut buf)).await.expect("stream not closed");
        // Either a clean EOF or a reset; a 408 answer is also a close.
        if let Ok(n) = n
            && n > 0
        {
            assert!(String::from_utf8_lossy(&buf[..n]).contains("408"), "{}", String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert!(started.elapsed() < Duration::from_secs(6));
    // The session itself survives: a well-formed heartbeat still works, and
    // the answer says how often to send them (the relay's 30 s default).
    let beat = edgelink_agent::host::Sampler::default().sample(1);
    let told = edgelink_agent::run::send_heartbeat(&handle, &beat).await.unwrap();
    assert_eq!(told, Some(30));
    assert_still_serving(&stack, &good).await;
    agent.stop().await;
}

#[tokio::test]
async fn oversized_headers_are_refused_on_both_ports() {
    let stack = Stack::start().await;
    let (agent, good) = healthy(&stack).await;
    let huge = "a".repeat(100 * 1024);
    for addr in [stack.relay.as_ref().unwrap().tunnel_addr, stack.relay.as_ref().unwrap().internal_addr] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!("GET /tunnel HTTP/1.1\r\nHost: x\r\nX-Big: {huge}\r\n\r\n");
        // The relay may close while we are still writing; that is a refusal too.
        let _ = s.write_all(req.as_bytes()).await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.is_empty() || text.starts_with("HTTP/1.1 431"), "{text}");
    }
    assert_still_serving(&stack, &good).await;
    agent.stop().await;
}

#[tokio::test]
async fn slow_clients_are_closed_at_the_header_timeout_on_api_server_and_the_internal_api() {
    let mut options = edgelink_e2e::Options {
        api: |c| c.header_timeout = Duration::from_secs(1),
        ..edgelink_e2e::Options::default()
    };
    options.relay.header_timeout = Duration::from_secs(1);
    let stack = Stack::start_with(options).await.unwrap();
    let api = stack.api_url.trim_start_matches("http://").to_owned();
    let internal = stack.internal_url().trim_start_matches("http://").to_owned();
    for addr in [api, internal] {
        // Half a request head, never finished (slowloris).
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        let took = read_until_closed(&mut s).await;
        assert!(took < Duration::from_secs(3), "{addr}: half a head kept open {took:?}");
        // A keep-alive connection left idle after an answer.
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 "), "{addr}");
        let took = read_until_closed(&mut s).await;
        assert!(took < Duration::from_secs(3), "{addr}: idle keep-alive kept open {took:?}");
    }
}

#[tokio::test]
async fn a_request_body_that_never_finishes_is_answered_408_at_the_body_timeout() {
    let options =
        edgelink_e2e::Options { api: |c| c.body_timeout = Duration::from_secs(1), ..edgelink_e2e::Options::default() };
    let stack = Stack::start_with(options).await.unwrap();
    let api = stack.api_url.trim_start_matches("http://").to_owned();
    // A public route with a JSON body: the head, then 10 of the 100 bytes
    // announced, then nothing (a slowloris on bodies).
    let mut s = TcpStream::connect(&api).await.unwrap();
    s.write_all(
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"node_id\"",
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was kept open");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "answered after {took:?}");
    // A complete body on time is unaffected.
    let resp =
        http().post(format!("{}/api/v1/auth/login", stack.api_url)).json(&serde_json::json!({})).send().await.unwrap();
    assert_ne!(resp.status().as_u16(), 408);
}

fn vm_rss_kib() -> u64 {
    edgelink_e2e::proc_status_kib("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_device_cannot_pin_relay_memory_with_many_slow_streams() {
    // The harness relay's header_timeout (2 s) bounds heads and bodies.
    let stack = Stack::start().await;
    let (agent, good) = healthy(&stack).await;
    let bad = stack.add_device("mallory@example.com").await;
    let tls = edgelink_agent::tls::client_config(None).unwrap();
    let config = edgelink_tunnel::TunnelConfig::default();
    let session = edgelink_tunnel::dial(
        &stack.tunnel_url(),
        &token(&stack, &bad).await,
        tls,
        Duration::from_secs(5),
        &config,
        |_| {},
    )
    .await
    .unwrap();
    stack.wait_session(&bad.id, None).await;
    let before = vm_rss_kib();

    // 256 streams, each announcing a 64 KiB heartbeat and then sending the
    // body a trickle at a time, never finishing.
    let mut streams = Vec::new();
    for _ in 0..256 {
        // yamux on this side stops at its own stream limit.
        let Ok(mut s) = session.handle.open_stream().await else { break };
        let head = "POST /.edgelink/v1/heartbeat HTTP/1.1\r\nHost: relay\r\nContent-Length: 65536\r\n\r\n";
        if s.write_all(head.as_bytes()).await.is_ok() {
            let _ = s.write_all(&[b' '; 1000]).await;
        }
        streams.push(s);
    }
    assert!(streams.len() >= 200, "only {} streams opened", streams.len());
    // Beyond the per-tunnel budget, streams are closed at once; the rest
    // are answered 408 and closed when their body is not done in time.
    let start = std::time::Instant::now();
    let mut timed_out = 0;
    for s in &mut streams {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "a device stream was kept open");
        if String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408") {
            timed_out += 1;
        }
    }
    assert!(start.elapsed() < Duration::from_secs(8), "streams closed after {:?}", start.elapsed());
    assert_eq!(timed_out, edgelink_protocol::limits::MAX_DEVICE_STREAMS, "only the budgeted streams were served");
    let grown_mib = vm_rss_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 32, "relay memory grew by {grown_mib} MiB");

    // The device's tunnel still works, and so does everyone else's.
    drop(streams);
    let handle = &session.handle;
    // (Freeing 256 stream slots takes both muxers a round of frames each;
    // under a loaded CI machine that has taken more than 5 s once.)
    let mut s = edgelink_e2e::wait_until("a stream slot freed", Duration::from_secs(20), || async {
        handle.open_stream().await.ok()
    })
    .await;
    s.write_all(b"POST /.edgelink/v1/heartbeat HTTP/1.1\r\nHost: relay\r\nContent-Length: 2\r\n\r\n{}").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    assert_still_serving(&stack, &good).await;
    session.handle.close(1000, "done");
    agent.stop().await;
}

#[tokio::test]
async fn a_burst_beyond_the_stream_limit_times_out_without_ending_the_tunnel() {
    let stack = Stack::start().await;
    let (device, agent, session) = stack.connected_device("burst@example.com").await;
    let session = session.token;
    // 300 requests at once to a device that answers after 30 s: more than
    // the streams a session may hold. The relay opens at most its budget;
    // the rest wait for a stream, and all get the forward timeout (5 s
    // here), not a dead tunnel.
    let client = http();
    let slow = stack.forward_url(&session, "/slow");
    let burst = (0..300).map(|_| {
        let req = client.get(&slow).bearer_auth(SECRET);
        async move { req.send().await.map(|r| r.status().as_u16()) }
    });
    let statuses = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(burst))
        .await
        .expect("every request is answered within the forward timeout");
    for status in &statuses {
        assert_eq!(status.as_ref().ok(), Some(&504), "{status:?}");
    }
    // The same tunnel still serves, at once.
    assert_still_serving(&stack, &session).await;
    assert_eq!(stack.wait_session(&device.id, None).await.token, session);
    // The requests given up on end on the device too: its service sees
    // its callers gone long before it would have answered (30 s).
    let waiting = stack.forward_url(&session, "/slow/waiting");
    edgelink_e2e::wait_until("the device's service to see its callers gone", Duration::from_secs(10), || async {
        let n = client.get(&waiting).bearer_auth(SECRET).send().await.ok()?.text().await.ok()?;
        (n == "0").then_some(())
    })
    .await;
    agent.stop().await;
}
