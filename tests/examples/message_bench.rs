//! Message throughput end to end: a program sends messages through
//! api-server to online devices; each real agent takes them over its
//! tunnel, hands them to a local endpoint and acknowledges them. Reports
//! messages/s from the first send to the last acknowledgement, and the
//! latency from send (the message's `created_at`, when api-server
//! persisted it) to the device's acknowledgement (`finished_at`), p50/p99.
//!
//! `cargo run --release -p edgelink-e2e --example message_bench -- [MESSAGES] [DEVICES] [SENDERS]`
//! (SQLite, and PostgreSQL when EDGELINK_TEST_POSTGRES_URL is set).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use edgelink_agent::credentials::AuthClient;
use edgelink_e2e::{Db, Options, Stack, http, wait_until};
use secrecy::ExposeSecret;
use serde_json::json;

fn generous(c: &mut edgelink_api::ApiConfig) {
    c.rate_limits.device_per_hour = 10_000_000;
    c.messages.max_unread_per_device = 1_000_000;
}

async fn sink(count: Arc<AtomicUsize>) -> String {
    let app = axum::Router::new().route(
        "/inbox",
        axum::routing::post(move || {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/inbox", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn run(db: Db, messages: usize, devices: usize, senders: usize) {
    let Some(stack) = Stack::start_with(Options { db, api: generous, ..Options::default() }).await else { return };
    let handled = Arc::new(AtomicUsize::new(0));
    let url = sink(handled.clone()).await;
    let mut targets = Vec::new();
    let mut agents = Vec::new();
    for _ in 0..devices {
        let d = stack.add_device("fleet@example.com").await;
        let config = edgelink_agent::AgentConfig {
            message_url: Some(url.clone()),
            // Only the relay's notices wake the inbox during the run.
            message_poll_interval: Duration::from_secs(600),
            heartbeat_interval: Duration::from_secs(30),
            ..stack.agent_config(&d)
        };
        let mut agent = stack.spawn_agent_with(config, &d);
        agent.connected().await;
        stack.wait_session(&d.id, None).await;
        targets.push(d);
        agents.push(agent);
    }
    // The sender is a device of the same owner (a device token).
    let sender = stack.add_device("fleet@example.com").await;
    let token = AuthClient::new(http(), &stack.api_url, &sender.id).authenticate(&sender.key()).await.unwrap();
    let token = token.access.expose_secret().to_owned();

    let client = http();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (client, token, next, api) = (client.clone(), token.clone(), next.clone(), stack.api_url.clone());
        let ids: Vec<String> = targets.iter().map(|d| d.id.clone()).collect();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= messages {
                    break;
                }
                let body = json!({"to": [ids[i % ids.len()]], "type": "bench", "content": {"i": i}});
                let resp = client.post(format!("{api}/api/v1/messages")).bearer_auth(&token).json(&body).send().await;
                assert_eq!(resp.map(|r| r.status().as_u16()).unwrap_or(0), 201);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let sent_in = started.elapsed();
    let owner = targets[0].owner_id.clone();
    wait_until("every message acknowledged", Duration::from_secs(600), || async {
        let mut read = 0;
        for d in &targets {
            read += stack.store.device_messages(&owner, &d.id, Some("read"), 0, 1_000_000).await.ok()?.len();
        }
        (read >= messages).then_some(())
    })
    .await;
    let mut latencies = Vec::with_capacity(messages);
    let (mut first, mut last) = (i64::MAX, 0i64);
    for d in &targets {
        for m in stack.store.device_messages(&owner, &d.id, Some("read"), 0, 1_000_000).await.unwrap() {
            let done = m.finished_at.unwrap_or(m.created_at);
            latencies.push(done - m.created_at);
            first = first.min(m.created_at);
            last = last.max(done);
        }
    }
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let span = (last - first).max(1) as f64 / 1000.0;
    println!(
        "{db:?}: {messages} messages to {devices} online devices, {senders} concurrent senders: sent in {:.2} s \
         ({:.0}/s accepted); all acknowledged {:.2} s after the first was persisted = {:.0} messages/s end to end; \
         send→ack p50 {} ms, p99 {} ms, max {} ms; handler calls {}",
        sent_in.as_secs_f64(),
        messages as f64 / sent_in.as_secs_f64(),
        span,
        messages as f64 / span,
        pct(0.50),
        pct(0.99),
        latencies.last().copied().unwrap_or(0),
        handled.load(Ordering::Relaxed),
    );
    for a in agents {
        a.stop().await;
    }
}

#[tokio::main]
async fn main() {
    let arg = |i: usize, d: usize| std::env::args().nth(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (messages, devices, senders) = (arg(1, 2000), arg(2, 10), arg(3, 16));
    run(Db::Sqlite, messages, devices, senders).await;
    run(Db::Postgres, messages, devices, senders).await;
}
