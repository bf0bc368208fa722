//! A swarm of idle tunnels for benchmarks: `swarm COUNT`, configured by
//! environment (see below). It registers COUNT devices in the store, mints
//! their access tokens with api-server's signing key, dials COUNT tunnels
//! (yamux, device role) and keeps them up, redialing with jittered
//! backoff when they drop. It prints one line per event on stdout:
//!
//! * `READY n ms` — all n tunnels up, after ms since start;
//! * `DOWN n` — n tunnels dropped (e.g. the relay restarted);
//! * `RECONNECTED n ms` — all back, ms after the first drop.
//!
//! Env: SWARM_DATABASE_URL, SWARM_SIGNING_KEY, SWARM_TUNNEL_URL,
//! SWARM_CONCURRENCY (256), SWARM_SOURCES (0: the kernel picks the source
//! address; n > 0: tunnel i dials from 127.0.0.{2 + i % n}, so more than one
//! address's worth of source ports, ~28,000 each, can be open at once).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use edgelink_agent::backoff::Backoff;
use edgelink_auth::signing::SigningKey;
use edgelink_auth::token::TokenIssuer;
use edgelink_store::{NewDevice, Store};
use edgelink_tunnel::{Role, TunnelConfig};
use tokio::sync::Semaphore;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::args().nth(1).context("usage: swarm COUNT")?.parse()?;
    let db = std::env::var("SWARM_DATABASE_URL").context("SWARM_DATABASE_URL")?;
    let key_file = std::env::var("SWARM_SIGNING_KEY").context("SWARM_SIGNING_KEY")?;
    let url = std::env::var("SWARM_TUNNEL_URL").context("SWARM_TUNNEL_URL")?;
    let concurrency: usize = std::env::var("SWARM_CONCURRENCY").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let sources: u8 = std::env::var("SWARM_SOURCES").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let target: std::net::SocketAddr = {
        let u = url::Url::parse(&url)?;
        let host = u.host_str().context("tunnel url host")?;
        let port = u.port_or_known_default().context("tunnel url port")?;
        tokio::net::lookup_host((host, port)).await?.next().context("tunnel url resolves to nothing")?
    };

    let store = Store::connect(&db).await?;
    let (key, _) = SigningKey::load_or_generate(std::path::Path::new(&key_file))?;
    let issuer = TokenIssuer::new(&key, edgelink_protocol::claims::DEFAULT_ISSUER, 24 * 3600);
    let owner = store.upsert_user_by_email("swarm@example.com", "swarm").await?;
    let public = edgelink_auth::agent_key::AgentKey::generate()?.public_key_pem();
    let now = edgelink_store::now_ms() / 1000;
    let mut tokens = Vec::with_capacity(count);
    for i in 0..count {
        let d = store
            .create_device(&NewDevice {
                owner_id: owner.id.clone(),
                name: format!("swarm-{i}"),
                device_type: "bench".into(),
                capabilities: Default::default(),
                region: None,
                metadata: Default::default(),
                public_key: public.clone(),
                key_algorithm: "ed25519".into(),
                node_id: None,
            })
            .await?;
        tokens.push(issuer.issue(&d.id, &owner.id, now)?.0);
    }
    // The store is only needed to register: let its connections go.
    store.close().await;
    eprintln!("swarm: {count} devices registered");

    let up = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let (drop_tx, mut drop_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    for (i, token) in tokens.into_iter().enumerate() {
        let (up, gate, url, drop_tx) = (up.clone(), gate.clone(), url.clone(), drop_tx.clone());
        let source = (sources > 0).then(|| std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % sources as usize) as u8));
        tokio::spawn(async move {
            let cfg = TunnelConfig {
                ping_interval: Duration::from_secs(15),
                idle_timeout: Duration::from_secs(45),
                ..TunnelConfig::default()
            };
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
            loop {
                let permit = gate.acquire().await;
                let dialed = dial(target, source, &url, &token).await;
                drop(permit);
                let (tcp, early) = match dialed {
                    Ok(opened) => opened,
                    Err(_) => {
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                };
                backoff.reset();
                let session = edgelink_tunnel::session::spawn(tcp, &early, Role::Device, &cfg, |_| {});
                up.fetch_add(1, Ordering::SeqCst);
                let _ = session.ended.await;
                up.fetch_sub(1, Ordering::SeqCst);
                let _ = drop_tx.send(());
                tokio::time::sleep(backoff.next_delay()).await;
            }
        });
    }
    drop(drop_tx);

    loop {
        if up.load(Ordering::SeqCst) == count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("READY {count} {}", started.elapsed().as_millis());
    loop {
        // Wait for a drop, then time until everyone is back.
        if drop_rx.recv().await.is_none() {
            return Ok(());
        }
        let first_drop = Instant::now();
        let mut lowest = up.load(Ordering::SeqCst);
        while up.load(Ordering::SeqCst) < count {
            lowest = lowest.min(up.load(Ordering::SeqCst));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        while drop_rx.try_recv().is_ok() {}
        println!("DOWN {}", count - lowest);
        println!("RECONNECTED {count} {}", first_drop.elapsed().as_millis());
    }
}

/// Opens a TCP connection from `source` (or any address) and runs the
/// WebSocket handshake on it.
async fn dial(
    target: std::net::SocketAddr,
    source: Option<std::net::Ipv4Addr>,
    url: &str,
    token: &str,
) -> anyhow::Result<(tokio::net::TcpStream, Vec<u8>)> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket.bind(std::net::SocketAddr::from((ip, 0)))?;
    }
    let tcp = socket.connect(target).await?;
    tcp.set_nodelay(true)?;
    Ok(edgelink_tunnel::handshake::upgrade_client(tcp, url, token).await?)
}
