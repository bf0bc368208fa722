//! What 10,000 devices heartbeating every 30 s cost the database: one
//! telemetry batch (the newest heartbeat of every device) written as minute
//! and hour points plus the latest values, timed, per backend.
//!
//! `cargo run --release -p edgelink-e2e --example telemetry_bench -- [DEVICES]`
//! (PostgreSQL too when EDGELINK_TEST_POSTGRES_URL is set).

use std::time::Instant;

use edgelink_protocol::heartbeat::Heartbeat;
use edgelink_store::Store;
use edgelink_telemetry::Telemetry;

async fn run(name: &str, store: Store, devices: usize) {
    let owner = store.upsert_user_by_email("fleet@example.com", "fleet").await.unwrap();
    let mut ids = Vec::with_capacity(devices);
    for _ in 0..devices {
        ids.push(store.create_device(&edgelink_store::testing::new_device(&owner.id)).await.unwrap().id);
    }
    let t = Telemetry::new(store);
    let beat = Heartbeat {
        cpu_percent: Some(12.5),
        memory_used_bytes: Some(1 << 30),
        memory_total_bytes: Some(4 << 30),
        load_1m: Some(0.4),
        disk_used_bytes: Some(10 << 30),
        disk_total_bytes: Some(32 << 30),
        network_in_bytes: Some(123_456_789),
        network_out_bytes: Some(987_654_321),
        uptime_secs: Some(86_400),
        agent_version: Some("0.1.0".into()),
        status: Some("healthy".into()),
        ..Heartbeat::default()
    };
    let mut times = Vec::new();
    for round in 0..3 {
        let now = edgelink_store::now_ms() + round * 30_000;
        let cpu = cpu_time();
        let started = Instant::now();
        for id in &ids {
            t.record(id, &owner.id, now, beat.clone());
        }
        let recorded = started.elapsed();
        let n = t.flush().await.unwrap();
        assert_eq!(n, devices);
        times.push((recorded, started.elapsed(), cpu_time() - cpu));
    }
    for (i, (recorded, total, cpu)) in times.iter().enumerate() {
        println!(
            "{name}: round {i}: record {devices} heartbeats {:.1} ms, batch written in {:.0} ms \
             ({} rows), process CPU {:.0} ms = {:.2}% of a core over a 30 s interval",
            recorded.as_secs_f64() * 1000.0,
            total.as_secs_f64() * 1000.0,
            devices * 3,
            cpu * 1000.0,
            cpu / 30.0 * 100.0
        );
    }
}

/// User + system CPU seconds of this process.
fn cpu_time() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

#[tokio::main]
async fn main() {
    let devices: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    run("sqlite", edgelink_store::testing::sqlite().await, devices).await;
    if let Some(pg) = edgelink_store::testing::postgres().await {
        run("postgres", pg, devices).await;
    }
}
