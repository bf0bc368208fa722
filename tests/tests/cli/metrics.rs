//! `GET /metrics` on both binaries, run as processes the way an operator
//! runs them: every series of docs/operations.md is there, and the text
//! parses with the Prometheus project's own Python parser
//! (`prometheus_client`).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use edgelink_e2e::{SECRET, Stack, binary, http, wait_until};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(name: &str, env: &[(&str, String)]) -> Killed {
    let mut cmd = Command::new(binary(name));
    cmd.arg("serve").stdout(Stdio::null()).stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Killed(cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}")))
}

async fn scrape(port: u16) -> Option<String> {
    let resp = http().get(format!("http://127.0.0.1:{port}/metrics")).send().await.ok()?;
    let ok = resp.status() == 200
        && resp.headers().get("content-type").is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/plain"));
    if ok { resp.text().await.ok() } else { None }
}

/// Family names, as the reference parser reads the text (it fails on
/// anything malformed).
fn parse(text: &str) -> Vec<String> {
    let script = "import sys\nfrom prometheus_client.parser import text_string_to_metric_families\n\
                  for f in text_string_to_metric_families(sys.stdin.read()):\n    print(f.name, f.type, len(f.samples))";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the Prometheus parser refused the text:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

fn parser_ready() -> bool {
    let ok =
        Command::new("python3").args(["-c", "import prometheus_client"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "python3 with prometheus_client is required in CI");
        eprintln!("!!! SKIPPED the /metrics parser test: pip install prometheus-client");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_binaries_serve_their_series_in_the_prometheus_text_format() {
    if !parser_ready() {
        return;
    }
    let stack = Stack::start().await;
    let (tunnel, internal, relay_metrics, api, api_metrics) =
        (free_port(), free_port(), free_port(), free_port(), free_port());
    let _relay = spawn(
        "remote-proxy",
        &[
            ("EDGELINK_RELAY__TUNNEL_LISTEN", format!("127.0.0.1:{tunnel}")),
            ("EDGELINK_RELAY__INTERNAL_LISTEN", format!("127.0.0.1:{internal}")),
            ("EDGELINK_RELAY__METRICS_LISTEN", format!("127.0.0.1:{relay_metrics}")),
            ("EDGELINK_RELAY__INTERNAL_SECRET", SECRET.into()),
            ("EDGELINK_RELAY__DATABASE_URL", stack.database_url.clone()),
            ("EDGELINK_RELAY__JWKS_URL", format!("{}/.well-known/jwks.json", stack.api_url)),
        ],
    );
    let _api = spawn(
        "api-server",
        &[
            ("EDGELINK_API__LISTEN", format!("127.0.0.1:{api}")),
            ("EDGELINK_API__METRICS_LISTEN", format!("127.0.0.1:{api_metrics}")),
            ("EDGELINK_API__PUBLIC_URL", format!("http://127.0.0.1:{api}")),
            ("EDGELINK_API__SESSION__INSECURE_COOKIES", "true".into()),
            ("EDGELINK_API__DATABASE_URL", stack.database_url.clone()),
            ("EDGELINK_API__SIGNING_KEY_FILE", stack.signing_key_file.display().to_string()),
            ("EDGELINK_API__SESSION__KEY_FILE", stack.session_key_file().display().to_string()),
            ("EDGELINK_API__AGENT_TUNNEL_URL", format!("ws://127.0.0.1:{tunnel}/tunnel")),
            ("EDGELINK_API__RELAY_INTERNAL_SECRET", SECRET.into()),
        ],
    );
    wait_until("both metrics listeners", Duration::from_secs(30), || async {
        Some((scrape(relay_metrics).await?, scrape(api_metrics).await?))
    })
    .await;

    // Traffic: a device tunnels to the relay process and serves a request
    // through it; api-server answers a public call and refuses an anonymous one.
    let device = stack.add_device("alice@example.com").await;
    let config = edgelink_agent::AgentConfig {
        tunnel_url: format!("ws://127.0.0.1:{tunnel}/tunnel"),
        ..stack.agent_config(&device)
    };
    let mut agent = stack.spawn_agent_with(config, &device);
    agent.connected().await;
    let forward = format!("http://127.0.0.1:{internal}/internal/forward/{}/", device.id);
    // The agent says connected as soon as its side is up; the relay lists
    // the session a moment later.
    wait_until("a request through the relay process", Duration::from_secs(10), || async {
        let resp = http().get(&forward).bearer_auth(SECRET).send().await.ok()?;
        (resp.status() == 200).then_some(())
    })
    .await;
    assert_eq!(http().get(format!("http://127.0.0.1:{api}/api/v1/health")).send().await.unwrap().status(), 200);
    assert_eq!(http().get(format!("http://127.0.0.1:{api}/api/v1/devices")).send().await.unwrap().status(), 401);

    let relay_text = wait_until("the relay's tunnel in its metrics", Duration::from_secs(10), || async {
        scrape(relay_metrics).await.filter(|t| t.contains("edgelink_tunnels_open 1"))
    })
    .await;
    let families = parse(&relay_text);
    for series in [
        "edgelink_tunnels_open gauge",
        "edgelink_tunnels_accepted counter",
        "edgelink_tunnel_streams_open gauge",
        "edgelink_relay_bytes counter",
        "edgelink_http_requests counter",
        "edgelink_http_request_duration_seconds histogram",
        "edgelink_heartbeats_received counter",
        "edgelink_messages_delivered counter",
    ] {
        assert!(families.iter().any(|f| f.starts_with(series)), "relay lacks {series}:\n{relay_text}");
    }
    let bytes: f64 = relay_text
        .lines()
        .filter(|l| l.starts_with("edgelink_relay_bytes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(bytes > 0.0, "{relay_text}");
    assert!(relay_text.contains("route=\"/internal/forward/{id}/\""), "{relay_text}");
    assert!(!relay_text.contains(&device.id), "device ids must never be labels");

    let api_text = scrape(api_metrics).await.unwrap();
    let families = parse(&api_text);
    for series in [
        "edgelink_http_requests counter",
        "edgelink_http_request_duration_seconds histogram",
        "edgelink_auth_failures counter",
        "edgelink_messages_queued counter",
        "edgelink_messages_expired counter",
        "edgelink_telemetry_batches counter",
    ] {
        assert!(families.iter().any(|f| f.starts_with(series)), "api-server lacks {series}:\n{api_text}");
    }
    assert!(api_text.contains("reason=\"unauthenticated\""), "{api_text}");
    assert!(api_text.contains("route=\"/api/v1/health\""), "{api_text}");
    agent.stop().await;
}
