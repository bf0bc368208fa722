//! How much authentication costs on api-server's hot path: requests per
//! second of `GET /api/v1/devices` with a browser session cookie and with
//! an API token, same user, same answer, in one run (docs/benchmarks.md).
//!
//! `cargo run --release -p edgelink-e2e --example auth_bench -- [SECONDS] [CONCURRENCY]`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgelink_e2e::signin::Browser;
use edgelink_e2e::{Options, Stack};

async fn measure(url: &str, header: (&str, String), seconds: u64, concurrency: usize) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (url, done) = (url.to_owned(), done.clone());
        let (name, value) = (header.0.to_owned(), header.1.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            while Instant::now() < until {
                let resp = client.get(&url).header(&name, &value).send().await.expect("request");
                assert_eq!(resp.status(), 200);
                let _ = resp.bytes().await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    done.load(Ordering::Relaxed) as f64 / seconds as f64
}

fn big_limits(c: &mut edgelink_api::ApiConfig) {
    c.rate_limits.token_per_hour = u32::MAX;
    c.rate_limits.session_per_hour = u32::MAX;
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let concurrency: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(16);
    let stack = Stack::start_with(Options { dev_idp: true, api: big_limits, ..Options::default() }).await.unwrap();
    let alice = Browser::new(&stack.api_url);
    alice.sign_in(&stack.idp.as_ref().unwrap().issuer, "alice").await;
    let cookie = format!("edgelink_session={}", alice.session_cookie().unwrap());
    let (_, secret) = alice.api_token(serde_json::json!({"name": "bench", "scopes": ["device:read"]})).await;
    let token = format!("Bearer {secret}");
    for i in 0..3 {
        stack.add_device("alice@example.com").await;
        let _ = i;
    }
    let url = format!("{}/api/v1/devices", stack.api_url);
    // Warm both caches, then alternate so neither gets a warmer machine.
    measure(&url, ("cookie", cookie.clone()), 1, concurrency).await;
    measure(&url, ("authorization", token.clone()), 1, concurrency).await;
    let mut results = (Vec::new(), Vec::new());
    for _ in 0..3 {
        results.0.push(measure(&url, ("cookie", cookie.clone()), seconds, concurrency).await);
        results.1.push(measure(&url, ("authorization", token.clone()), seconds, concurrency).await);
    }
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let (c, t) = (best(&results.0), best(&results.1));
    println!("GET /api/v1/devices, {concurrency} connections, best of 3 x {seconds} s");
    println!("session cookie: {c:.0} req/s");
    println!("API token:      {t:.0} req/s  ({:.2}x the cookie path)", t / c);
}
