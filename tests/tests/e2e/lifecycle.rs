//! Liveness, restarts, replacement and closing of tunnel sessions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use edgelink_agent::Status;
use edgelink_agent::credentials::AuthClient;
use edgelink_e2e::{SECRET, Stack, http, origin, wait_for};
use secrecy::ExposeSecret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn get_hello(stack: &Stack, session: &str) -> (u16, String) {
    let resp = http().get(stack.forward_url(session, "/hello")).bearer_auth(SECRET).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn abruptly_killed_agent_disappears_from_the_registry() {
    let stack = Stack::start().await;
    let (device, agent, session) = stack.connected_device("alice@example.com").await;
    // Dropping the agent's task drops its socket without a Close frame.
    agent.task.abort();
    let bound = stack.relay_config.idle_timeout + stack.relay_config.ping_interval;
    stack.wait_no_session(&device.id, bound).await;
    let stored = stack.wait_closed_in_store(&session.token).await;
    assert_eq!(stored.close_reason.as_deref(), Some("disconnected"));
}

/// A TCP relay that can be frozen: it stops moving bytes but keeps both
/// sockets open, like a peer whose network silently died.
async fn freezable_proxy(target: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let frozen = Arc::new(AtomicBool::new(false));
    let f = frozen.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = TcpStream::connect(target).await else {
                continue;
            };
            let (ir, iw) = inbound.into_split();
            let (or, ow) = outbound.into_split();
            pump(ir, ow, f.clone());
            pump(or, iw, f.clone());
        }
    });
    (addr, frozen)
}

fn pump(mut r: tokio::net::tcp::OwnedReadHalf, mut w: tokio::net::tcp::OwnedWriteHalf, frozen: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if frozen.load(Ordering::SeqCst) {
                // Swallow everything from now on and never close.
                std::future::pending::<()>().await;
            }
            if w.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
}

#[tokio::test]
async fn silent_agent_is_declared_dead_within_the_configured_bound() {
    let stack = Stack::start().await;
    let device = stack.add_device("alice@example.com").await;
    let relay_addr = stack.relay.as_ref().unwrap().tunnel_addr;
    let (proxy, frozen) = freezable_proxy(relay_addr).await;
    let mut cfg = stack.agent_config(&device);
    cfg.tunnel_url = format!("ws://{proxy}/tunnel");
    // The agent must not notice first and reconnect through the proxy.
    cfg.idle_timeout = Duration::from_secs(60);
    cfg.ping_interval = Duration::from_secs(20);
    let mut agent = stack.spawn_agent_with(cfg, &device);
    agent.connected().await;
    let session = stack.wait_session(&device.id, None).await;
    frozen.store(true, Ordering::SeqCst);
    let bound = stack.relay_config.idle_timeout + stack.relay_config.ping_interval;
    let took = stack.wait_no_session(&device.id, bound + Duration::from_millis(700)).await;
    assert!(took >= stack.relay_config.idle_timeout / 2, "declared dead suspiciously early: {took:?}");
    let stored = stack.wait_closed_in_store(&session.token).await;
    assert_eq!(stored.close_reason.as_deref(), Some("timeout"));
    agent.stop().await;
}

#[tokio::test]
async fn agent_reconnects_by_itself_after_a_relay_restart() {
    let mut stack = Stack::start().await;
    let (device, agent, before) = stack.connected_device("alice@example.com").await;
    assert_eq!(get_hello(&stack, &before.token).await, (200, origin::HELLO.to_owned()));

    let addrs = stack.stop_relay().await;
    let stored = stack.wait_closed_in_store(&before.token).await;
    assert_eq!(stored.close_reason.as_deref(), Some("shutdown"));
    stack.start_relay(Some(addrs)).await;

    let after = stack.wait_session(&device.id, Some(&before.token)).await;
    assert_eq!(get_hello(&stack, &after.token).await, (200, origin::HELLO.to_owned()));
    agent.stop().await;
}

#[tokio::test]
async fn second_connection_of_a_device_replaces_the_first() {
    let stack = Stack::start().await;
    let device = stack.add_device("alice@example.com").await;
    let mut cfg = stack.agent_config(&device);
    // Keep the first agent from reconnecting while the test looks.
    cfg.reconnect_min = Duration::from_secs(20);
    cfg.reconnect_max = Duration::from_secs(20);
    let mut first = stack.spawn_agent_with(cfg, &device);
    first.connected().await;
    let old = stack.wait_session(&device.id, None).await;

    // The second connection: same device, its own token.
    let tokens = AuthClient::new(http(), &stack.api_url, &device.id).authenticate(&device.key()).await.unwrap();
    let mut req = stack.tunnel_url().into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", tokens.access.expose_secret()).parse().unwrap());
    let (_ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    let new_id = resp.headers().get("x-edgelink-session").unwrap().to_str().unwrap().to_owned();

    let new = stack.wait_session(&device.id, Some(&old.token)).await;
    assert_eq!(new.token, new_id);
    let list = stack.internal().list_sessions().await.unwrap();
    assert_eq!(list.sessions.iter().filter(|s| s.device_id == device.id).count(), 1, "{list:?}");
    let stored = stack.wait_closed_in_store(&old.token).await;
    assert_eq!(stored.close_reason.as_deref(), Some("replaced"));
    wait_for(&mut first.status, |s| matches!(s, Status::Backoff(_))).await;
    first.stop().await;
}

#[tokio::test]
async fn closed_session_comes_back_only_while_the_device_is_allowed() {
    let stack = Stack::start().await;
    let (device, mut agent, first) = stack.connected_device("alice@example.com").await;

    let closed = stack.internal().close_session(&first.token).await.unwrap();
    assert!(closed.closed);
    wait_for(&mut agent.status, |s| matches!(s, Status::Backoff(_))).await;
    let second = stack.wait_session(&device.id, Some(&first.token)).await;
    let stored = stack.wait_closed_in_store(&first.token).await;
    assert_eq!(stored.close_reason.as_deref(), Some("closed_by_operator"));
    assert_eq!(get_hello(&stack, &second.token).await.0, 200);
    assert!(matches!(stack.internal().get_session(&first.token).await, Err(edgelink_internal_api::Error::NotFound)));
    assert!(matches!(stack.internal().close_session(&first.token).await, Err(edgelink_internal_api::Error::NotFound)));

    // Revoke, then close: the agent's next attempt is refused and it stops.
    stack.store.revoke_device(&device.owner_id, &device.id).await.unwrap();
    stack.internal().close_session(&second.token).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), agent.task).await.unwrap().unwrap();
    assert!(matches!(result, Err(edgelink_agent::AgentError::Refused(_))), "{result:?}");
    stack.wait_no_session(&device.id, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn internal_api_refuses_missing_and_wrong_secrets() {
    let stack = Stack::start().await;
    let client = http();
    for path in ["/internal/sessions", "/internal/session/x", "/internal/forward/x/y", "/nope"] {
        let url = format!("{}{}", stack.internal_url(), path);
        let resp = client.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "token_missing");
        let resp = client.get(&url).bearer_auth("test-internal-secret-0123456780").send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "token_invalid");
    }
    let resp = client.post(format!("{}/internal/session/x/close", stack.internal_url())).send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn agent_refreshes_its_token_before_it_expires() {
    let options = edgelink_e2e::Options { access_token_ttl: Duration::from_secs(3), ..Default::default() };
    let stack = Stack::start_with(options).await.unwrap();
    let (device, agent, first) = stack.connected_device("alice@example.com").await;
    // The agent refreshes with a fifth of the lifetime left (capped at
    // half): a rotation adds a refresh token to the family.
    edgelink_e2e::wait_until("a refresh", Duration::from_secs(8), || async {
        (stack.store.refresh_token_count(&device.id).await.unwrap() >= 2).then_some(())
    })
    .await;
    // The tunnel stayed up meanwhile, and a reconnect uses fresh credentials.
    assert_eq!(stack.wait_session(&device.id, None).await.token, first.token);
    stack.internal().close_session(&first.token).await.unwrap();
    let second = stack.wait_session(&device.id, Some(&first.token)).await;
    assert_eq!(get_hello(&stack, &second.token).await.0, 200);
    agent.stop().await;
}

#[tokio::test]
async fn relay_readiness_reports_the_database_and_nothing_more() {
    let stack = Stack::start().await;
    let (_device, agent, _session) = stack.connected_device("alice@example.com").await;
    let base = stack.tunnel_url().replace("ws://", "http://").replace("/tunnel", "");
    let ready: serde_json::Value = reqwest::get(format!("{base}/readyz")).await.unwrap().json().await.unwrap();
    assert_eq!(ready, serde_json::json!({"status": "ready"}), "the public port discloses no tunnel count");
    assert_eq!(stack.internal().list_sessions().await.unwrap().sessions.len(), 1, "operators see it");
    agent.stop().await;
}
