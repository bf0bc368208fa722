//! Store-and-forward messages end to end: sent through api-server, kept in
//! the database, taken by the real agent over its tunnel and handed to a
//! local endpoint, acknowledged after that succeeded (ADR 20).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use edgelink_agent::credentials::AuthClient;
use edgelink_e2e::signin::Browser;
use edgelink_e2e::{Device, Options, Stack, http, wait_until};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

/// A local endpoint the agent hands messages to: records each hand-over;
/// optionally fails the first one of every id, and takes `delay` each.
#[derive(Clone, Default)]
struct Sink {
    got: Arc<Mutex<Vec<Value>>>,
    fail_first: bool,
    delay: Duration,
}

impl Sink {
    async fn start(fail_first: bool, delay: Duration) -> (Sink, String) {
        let sink = Sink { fail_first, delay, ..Sink::default() };
        let app = axum::Router::new().route("/inbox", axum::routing::post(receive)).with_state(sink.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/inbox", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (sink, url)
    }

    fn ids(&self) -> Vec<String> {
        self.got.lock().unwrap().iter().map(|m| m["id"].as_str().unwrap_or("").to_owned()).collect()
    }
}

async fn receive(State(sink): State<Sink>, headers: HeaderMap, axum::Json(m): axum::Json<Value>) -> StatusCode {
    tokio::time::sleep(sink.delay).await;
    assert_eq!(headers.get("x-edgelink-message-id").and_then(|v| v.to_str().ok()), m["id"].as_str());
    let seen_before = sink.ids().iter().any(|id| Some(id.as_str()) == m["id"].as_str());
    sink.got.lock().unwrap().push(m);
    if sink.fail_first && !seen_before { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
}

fn quick_sweep(c: &mut edgelink_api::ApiConfig) {
    c.messages.sweep_interval = Duration::from_secs(1);
    c.messages.max_unread_per_device = 3;
}

async fn signed_in(stack: &Stack, user: &str) -> Browser {
    let b = Browser::new(&stack.api_url);
    b.sign_in(&stack.idp.as_ref().unwrap().issuer, user).await;
    b
}

async fn send(b: &Browser, body: Value) -> (u16, Value) {
    let resp = b.same_origin(Method::POST, "/api/v1/messages").json(&body).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

async fn queue(b: &Browser, device: &str, status: &str) -> Vec<Value> {
    let url = format!("{}/api/v1/devices/{device}/messages?status={status}", b.api_url);
    let v: Value = b.client.get(url).send().await.unwrap().json().await.unwrap();
    v["messages"].as_array().cloned().unwrap_or_default()
}

async fn device_token(stack: &Stack, d: &Device) -> String {
    let t = AuthClient::new(http(), &stack.api_url, &d.id).authenticate(&d.key()).await.unwrap();
    t.access.expose_secret().to_owned()
}

/// `GET /api/v1/messages/pending` with a device token.
async fn pending(stack: &Stack, token: &str) -> Value {
    let url = format!("{}/api/v1/messages/pending", stack.api_url);
    http().get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

/// `PUT /api/v1/messages/{id}/read` with a device token: the status.
async fn read(stack: &Stack, token: &str, id: &str) -> u16 {
    let url = format!("{}/api/v1/messages/{id}/read", stack.api_url);
    http().put(url).bearer_auth(token).send().await.unwrap().status().as_u16()
}

fn with_inbox(stack: &Stack, d: &Device, url: &str) -> edgelink_agent::AgentConfig {
    edgelink_agent::AgentConfig {
        message_url: Some(url.to_owned()),
        message_poll_interval: Duration::from_secs(1),
        ..stack.agent_config(d)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_device_gets_its_messages_when_it_connects_highest_priority_first() {
    let stack = Stack::start_with(Options { dev_idp: true, api: quick_sweep, ..Options::default() }).await.unwrap();
    let alice = signed_in(&stack, "alice").await;
    let device = stack.add_device("alice@example.com").await;
    let mut sent = Vec::new();
    for (i, priority) in ["low", "normal", "high"].iter().enumerate() {
        let body = json!({"to": [device.id], "type": "job", "content": {"n": i}, "priority": priority,
                          "metadata": {"correlation_id": format!("c{i}")}});
        let (status, v) = send(&alice, body).await;
        assert_eq!(status, 201, "{v}");
        assert_eq!(v["recipients"], json!([device.id]));
        assert!(v["message_id"].as_str().unwrap().starts_with("msg_"));
        sent.push(v["message_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(queue(&alice, &device.id, "pending").await.len(), 3);
    // The cap (3 here) refuses a fourth cleanly, and nothing of it is kept.
    let (status, v) = send(&alice, json!({"to": [device.id], "type": "job", "content": 4})).await;
    assert_eq!((status, v["error"].as_str()), (429, Some("message_queue_full")), "{v}");
    assert!(v["retry_after"].as_u64().is_some());
    assert_eq!(queue(&alice, &device.id, "").await.len(), 3);

    let (sink, url) = Sink::start(false, Duration::ZERO).await;
    let mut agent = stack.spawn_agent_with(with_inbox(&stack, &device, &url), &device);
    agent.connected().await;
    wait_until("three messages handed over", Duration::from_secs(10), || async {
        (sink.ids().len() >= 3).then_some(())
    })
    .await;
    let got = sink.got.lock().unwrap().clone();
    let order: Vec<&str> = got.iter().map(|m| m["priority"].as_str().unwrap()).collect();
    assert_eq!(order, ["high", "normal", "low"]);
    assert_eq!(got[0]["metadata"]["correlation_id"], "c2");
    assert_eq!(got[0]["content"], json!({"n": 2}));
    assert_eq!(got[0]["sender"]["kind"], "user");
    let read = wait_until("all three read", Duration::from_secs(10), || async {
        let r = queue(&alice, &device.id, "read").await;
        (r.len() == 3).then_some(r)
    })
    .await;
    let read_ids: HashSet<&str> = read.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(read_ids, sent.iter().map(String::as_str).collect());

    // Online now: a new message arrives at once, on the relay's notice
    // (the agent's own poll is a minute away by default, 1 s here).
    let (status, v) = send(&alice, json!({"to": [device.id], "type": "ping", "content": null})).await;
    assert_eq!(status, 201, "{v}");
    let id = v["message_id"].as_str().unwrap().to_owned();
    wait_until("the new message handed over", Duration::from_secs(5), || async {
        sink.ids().contains(&id).then_some(())
    })
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_dropped_and_reported_and_tenancy_holds() {
    let stack = Stack::start_with(Options { dev_idp: true, api: quick_sweep, ..Options::default() }).await.unwrap();
    let alice = signed_in(&stack, "alice").await;
    let bob = signed_in(&stack, "bob").await;
    let device = stack.add_device("alice@example.com").await;
    let sibling = stack.add_device("alice@example.com").await;
    let bobs = stack.add_device("bob@example.com").await;

    let (status, v) = send(&alice, json!({"to": [device.id], "type": "t", "content": 1, "ttl": 1})).await;
    assert_eq!(status, 201, "{v}");
    let expired_id = v["message_id"].as_str().unwrap().to_owned();
    let expired = wait_until("the message reported expired", Duration::from_secs(10), || async {
        let e = queue(&alice, &device.id, "expired").await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(expired[0]["id"], expired_id.as_str());

    // The device itself (REST, as a device without the agent): nothing
    // pending, and acknowledging the expired one says so.
    let token = device_token(&stack, &device).await;
    assert_eq!(pending(&stack, &token).await["messages"], json!([]));
    assert_eq!(read(&stack, &token, &expired_id).await, 410);

    // Devices message their owner's other devices, never another owner's.
    let dev_send = |to: &str| {
        http()
            .post(format!("{}/api/v1/messages", stack.api_url))
            .bearer_auth(&token)
            .json(&json!({"to": [to], "type": "t", "content": {}}))
            .send()
    };
    let resp = dev_send(&bobs.id).await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(queue(&bob, &bobs.id, "").await.len(), 0);
    let resp = dev_send(&sibling.id).await.unwrap();
    assert_eq!(resp.status(), 201);
    let sib = queue(&alice, &sibling.id, "pending").await;
    assert_eq!(
        (sib[0]["sender"]["kind"].as_str(), sib[0]["sender"]["id"].as_str()),
        (Some("device"), Some(device.id.as_str()))
    );
    // Bob cannot see alice's queue, nor send to her devices.
    let resp = bob.client.get(format!("{}/api/v1/devices/{}/messages", stack.api_url, device.id)).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(send(&bob, json!({"to": [device.id], "type": "t", "content": 1})).await.0, 404);
    // The sibling takes and acknowledges over REST; acks are idempotent.
    let sib_token = device_token(&stack, &sibling).await;
    let taken = pending(&stack, &sib_token).await;
    let id = taken["messages"][0]["id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        assert_eq!(read(&stack, &sib_token, &id).await, 200);
    }
    // Another device cannot acknowledge it (it is not its message).
    assert_eq!(read(&stack, &token, &id).await, 404);
    // Bad input changes nothing.
    for bad in [
        json!({"to": [device.id], "type": "t", "content": 1, "priority": "urgent"}),
        json!({"to": [], "type": "t", "content": 1}),
        json!({"to": [device.id], "type": "", "content": 1}),
        json!({"to": [device.id], "type": "t", "content": "x".repeat(40_000)}),
    ] {
        assert_eq!(send(&alice, bad).await.0, 400);
    }
    // Deleting a device deletes its queue.
    let resp = alice.same_origin(Method::DELETE, &format!("/api/v1/devices/{}", sibling.id)).send().await.unwrap();
    assert!(resp.status().is_success());
    assert!(stack.store.device_messages(&sibling.owner_id, &sibling.id, None, 0, 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_is_at_least_once_across_relay_and_api_server_restarts() {
    let mut stack = Stack::start_with(Options { dev_idp: true, ..Options::default() }).await.unwrap();
    let device = stack.add_device("alice@example.com").await;
    // A second api-server takes the sends (a program's token), then goes
    // away before delivery.
    let alice = signed_in(&stack, "alice").await;
    let (_, secret) = alice.api_token(json!({"name": "sender", "scopes": ["message:send"]})).await;
    let sender_api = stack.extra_api().await;
    let mut sent = HashSet::new();
    for i in 0..20 {
        let body = json!({"to": [device.id], "type": "bulk", "content": {"i": i}});
        let resp = http()
            .post(format!("{}/api/v1/messages", sender_api.url))
            .bearer_auth(&secret)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let v: Value = resp.json().await.unwrap();
        sent.insert(v["message_id"].as_str().unwrap().to_owned());
    }
    drop(sender_api);
    // Every first hand-over fails (so every message is delivered twice),
    // and each takes a while, so the restart lands mid-delivery.
    let (sink, url) = Sink::start(true, Duration::from_millis(40)).await;
    let mut agent = stack.spawn_agent_with(with_inbox(&stack, &device, &url), &device);
    agent.connected().await;
    wait_until("some messages handed over", Duration::from_secs(10), || async {
        (sink.ids().len() >= 6).then_some(())
    })
    .await;
    let addrs = stack.stop_relay().await;
    stack.start_relay(Some(addrs)).await;
    let done = wait_until("every message handled", Duration::from_secs(30), || async {
        let seen: HashSet<String> = sink.ids().into_iter().collect();
        let complete = sent.iter().all(|id| sink.ids().iter().filter(|s| *s == id).count() >= 2);
        (complete && seen == sent).then_some(seen)
    })
    .await;
    // Nothing lost, nothing invented: duplicates carry the original ids.
    assert_eq!(done, sent);
    wait_until("all read", Duration::from_secs(10), || async {
        (queue(&alice, &device.id, "read").await.len() == 20).then_some(())
    })
    .await;
    let redelivered = sink.got.lock().unwrap().iter().filter(|m| m["attempts"].as_i64() >= Some(2)).count();
    assert!(redelivered >= 20, "{redelivered}");
    agent.stop().await;
}

/// A message queued while the device's tunnel comes up finds no session to
/// notify, and the device's first fetch may already have run: the relay
/// tells the device once its session is registered if anything waits (a
/// bare tunnel client here, which fetches nothing by itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_connects_with_messages_waiting_is_told_at_once() {
    use tokio::io::AsyncReadExt;
    let stack = Stack::start_with(Options { dev_idp: true, ..Options::default() }).await.unwrap();
    let alice = signed_in(&stack, "alice").await;
    let device = stack.add_device("alice@example.com").await;
    let quiet = stack.add_device("alice@example.com").await;
    let (status, v) = send(&alice, json!({"to": [device.id], "type": "job", "content": 1})).await;
    assert_eq!(status, 201, "{v}");

    let (_session, mut inbound) = bare_tunnel(&stack, &device).await;
    let mut stream = tokio::time::timeout(Duration::from_secs(5), inbound.recv())
        .await
        .expect("the relay opened a stream to the device within 5 s")
        .expect("stream");
    let mut head = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut head)).await.unwrap().unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with(&format!("POST {} ", edgelink_protocol::paths::NOTIFY)), "{head}");
    assert!(head.contains("messages"), "{head}");

    // A device with nothing waiting gets no notice.
    let (_quiet_session, mut quiet_inbound) = bare_tunnel(&stack, &quiet).await;
    stack.wait_session(&quiet.id, None).await;
    assert!(tokio::time::timeout(Duration::from_millis(500), quiet_inbound.recv()).await.is_err());
}

/// A tunnel for `d` with no agent behind it: the streams the relay opens
/// come out of the receiver.
async fn bare_tunnel(
    stack: &Stack,
    d: &Device,
) -> (edgelink_tunnel::Session, tokio::sync::mpsc::UnboundedReceiver<edgelink_tunnel::TunnelStream>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let token = device_token(stack, d).await;
    let tls = edgelink_agent::tls::client_config(None).unwrap();
    let config = edgelink_tunnel::TunnelConfig::default();
    let session = edgelink_tunnel::dial(&stack.tunnel_url(), &token, tls, Duration::from_secs(5), &config, move |s| {
        let _ = tx.send(s);
    })
    .await
    .unwrap();
    (session, rx)
}
