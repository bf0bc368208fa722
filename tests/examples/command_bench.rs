//! Remote commands per second and their latency, p50/p99, against a real
//! OpenSSH server on this machine (`sshd -i` per connection, as in the
//! tests; run as root):
//!
//! 1. **SSH, warm pool**: `edgelink_ssh::Pool::run` of `true`, one at a
//!    time and 8 at once, after one command opened the connection.
//! 2. **Through api-server and an intermediary**: `POST
//!    /api/v1/proxies/{id}/commands` then `GET /api/v1/commands/{id}?wait=`
//!    for its result, the intermediary being edge-agent's
//!    (`edgelink_intermediary`) over Socket.IO, running it over SSH.
//!
//! `cargo run --release -p edgelink-e2e --example command_bench -- [COMMANDS]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgelink_e2e::signin::Browser;
use edgelink_e2e::{Options, Stack};
use edgelink_ssh::testing::OpenSsh;
use edgelink_ssh::{Limits, Pool, PoolConfig};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

fn report(what: &str, started: Instant, mut latencies: Vec<Duration>) {
    latencies.sort();
    let n = latencies.len();
    let pct = |p: f64| latencies[((n as f64 * p) as usize).min(n - 1)];
    let secs = started.elapsed().as_secs_f64();
    println!(
        "| {what} | {n} | {:.0} | {:.2} | {:.2} |",
        n as f64 / secs,
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0
    );
}

async fn timed<F, Fut>(n: usize, concurrency: usize, one: F) -> (Instant, Vec<Duration>)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let gate = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let permit = Arc::clone(&gate).acquire_owned().await.expect("semaphore");
        let one = one.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            one().await;
            drop(permit);
            t.elapsed()
        }));
    }
    let mut latencies = Vec::with_capacity(n);
    for t in tasks {
        latencies.push(t.await.expect("task"));
    }
    (started, latencies)
}

/// One command sent to `path` and awaited with `GET …?wait=`, as a
/// repeatable closure for [`timed`].
fn command_via(
    alice: Arc<Browser>,
    path: String,
    body: Value,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Clone + Send + 'static {
    move || {
        let (alice, path, body) = (Arc::clone(&alice), path.clone(), body.clone());
        Box::pin(async move {
            let sent: Value = alice
                .same_origin(reqwest::Method::POST, &path)
                .json(&body)
                .send()
                .await
                .expect("post")
                .json()
                .await
                .expect("json");
            let id = sent["command_id"].as_str().expect("command_id").to_owned();
            let done: Value = alice
                .same_origin(reqwest::Method::GET, &format!("/api/v1/commands/{id}?wait=30s"))
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            assert_eq!(done["status"], "succeeded", "{done}");
        })
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(400);
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let sshd = OpenSsh::start().await;
    let limits = Limits { timeout: Duration::from_secs(30), output_cap: 64 * 1024 };
    println!("| path | commands | commands/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|");

    let pool = Pool::new(PoolConfig::default());
    let target = sshd.password_target();
    pool.run(&target, "true", limits).await.expect("warm-up");
    for c in [1, 8] {
        let (pool, target) = (pool.clone(), target.clone());
        let (started, lat) = timed(n, c, move || {
            let (pool, target) = (pool.clone(), target.clone());
            async move {
                let out = pool.run(&target, "true", limits).await.expect("ssh");
                assert_eq!(out.exit_code, Some(0));
            }
        })
        .await;
        report(&format!("SSH, warm pool, c{c}"), started, lat);
    }
    assert_eq!(pool.connections_opened(), 1);

    let stack = Stack::start_with(Options {
        dev_idp: true,
        api: |c| c.rate_limits.session_per_hour = 100_000_000,
        ..Options::default()
    })
    .await
    .expect("stack");
    let alice = Browser::new(&stack.api_url);
    alice.sign_in(&stack.idp.as_ref().expect("dev idp").issuer, "alice").await;
    let created: Value = alice
        .same_origin(reqwest::Method::POST, "/api/v1/proxies")
        .json(&json!({"name": "bench"}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("json");
    let proxy_id = created["id"].as_str().expect("id").to_owned();
    let config = edgelink_intermediary::Config {
        server: stack.api_url.clone(),
        proxy_id: proxy_id.clone(),
        api_key: created["api_key"].as_str().expect("key").to_owned().into(),
        credentials_in: edgelink_intermediary::CredentialsIn::Auth,
        engine_path: "/socket.io/".into(),
        tls: edgelink_agent::tls::client_config(None).expect("tls"),
        pool: Pool::new(PoolConfig::default()),
        output_cap: 64 * 1024,
        max_timeout: Duration::from_secs(60),
        concurrency: 32,
    };
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(edgelink_intermediary::run(config, stop.clone()));
    let body = json!({"host": "127.0.0.1", "port": sshd.port, "username": OpenSsh::USER,
        "password": OpenSsh::PASSWORD, "host_key": sshd.host_fingerprint, "command": "true"});
    let alice = Arc::new(alice);
    let path = format!("/api/v1/proxies/{proxy_id}/commands");
    let one = command_via(Arc::clone(&alice), path, body);
    // The first command waits for the intermediary to connect.
    one().await;
    for c in [1, 8] {
        let (started, lat) = timed(n, c, one.clone()).await;
        report(&format!("api-server → intermediary → SSH, c{c}"), started, lat);
    }
    stop.cancel();

    // Native: api-server → message notice → relay → tunnel → agent (claim,
    // run /bin/true, report) → GET ?wait (which reads the store every 50 ms
    // for results a relay wrote).
    let device = stack.add_device("alice@example.com").await;
    let mut agent_config = stack.agent_config(&device);
    agent_config.commands_allow = vec!["/bin/true".into()];
    let mut agent = stack.spawn_agent_with(agent_config, &device);
    agent.connected().await;
    stack.wait_session(&device.id, None).await;
    let native = command_via(
        Arc::clone(&alice),
        format!("/api/v1/devices/{}/commands", device.id),
        json!({"command": "/bin/true"}),
    );
    native().await;
    for c in [1, 8] {
        let (started, lat) = timed(n.min(200), c, native.clone()).await;
        report(&format!("api-server → tunnel → agent (native), c{c}"), started, lat);
    }
    agent.stop().await;
}
