//! The device side of pairing with the real binary: alice makes a code at
//! api-server (signed in at the real dev provider), `edge-agent pair` uses
//! it, `edge-agent run` starts from the state file and dials the relay, and
//! alice reaches the device's web service (HTTP and WebSocket) through
//! api-server.

use std::process::{Command, Stdio};
use std::time::Duration;

use edgelink_e2e::signin::Browser;
use edgelink_e2e::{Options, Stack};

fn agent(dir: &std::path::Path) -> Command {
    let mut c = Command::new(edgelink_e2e::binary("edge-agent"));
    c.env("EDGELINK_AGENT__KEY_FILE", dir.join("device.key"))
        .env("EDGELINK_AGENT__STATE_FILE", dir.join("state.json"))
        .env_remove("EDGELINK_AGENT__DEVICE_ID");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_agent_pairs_with_a_code_and_runs_from_its_state_file() {
    let stack = Stack::start_with(Options { dev_idp: true, ..Options::default() }).await.unwrap();
    let browser = Browser::new(&stack.api_url);
    browser.sign_in(&stack.idp.as_ref().unwrap().issuer, "alice").await;
    let created: serde_json::Value =
        browser.same_origin(reqwest::Method::POST, "/api/v1/pairings").send().await.unwrap().json().await.unwrap();
    let code = created["code"].as_str().unwrap().to_owned();
    let dir = tempfile_dir();

    let out = tokio::task::block_in_place(|| {
        agent(&dir).args(["pair", "--server", &stack.api_url, "--code", &code, "--name", "lab camera"]).output()
    })
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pair failed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
    let device_id = state["device_id"].as_str().unwrap().to_owned();
    assert!(stdout.contains(&device_id));
    assert_eq!(state["tunnel_url"], stack.tunnel_url());

    // The same code again: refused with the server's reason, exit 2.
    let again = tokio::task::block_in_place(|| {
        agent(&tempfile_dir()).args(["pair", "--server", &stack.api_url, "--code", &code]).output()
    })
    .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already used"));

    let mut run = agent(&dir)
        .args(["run", "--local-service", &format!("http://{}", stack.origin)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let session = stack.wait_session(&device_id, None).await;
    let me: serde_json::Value = browser.me().await.json().await.unwrap();
    assert_eq!(session.user_id, me["id"].as_str().unwrap(), "the device belongs to alice");
    // alice reaches the device's web service through api-server.
    let resp = browser
        .client
        .get(format!("{}/api/v1/devices/{device_id}/http/hello", stack.api_url))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), edgelink_e2e::origin::HELLO);

    // A WebSocket through the same route echoes (with the Origin every
    // browser sends on a handshake).
    let cookie = format!("edgelink_session={}", browser.session_cookie().unwrap());
    let ws_url = format!("{}/api/v1/devices/{device_id}/http/ws", stack.api_url);
    edgelink_e2e::ws_echo(&ws_url, &[("cookie", &cookie), ("origin", &stack.api_url)]).await;
    let _ = run.kill();
    let _ = run.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("edge-agent-pair-{}", std::process::id() as u64 * 1000 + rand_suffix()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}
