//! A device in Go on hashicorp/yamux and gorilla/websocket (tests/go-device):
//! the tunnel's wire protocol against independent implementations of both
//! layers, in both directions of stream opening. `.ci/run` installs Debian's
//! Go and both libraries; without them the test says SKIPPED.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use edgelink_e2e::{SECRET, Stack, http, ws_echo};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const GOPATH: &str = "/usr/share/gocode";

/// Builds the Go device; None (with a loud message) where Go or the
/// libraries are missing.
fn build_go_device() -> Option<PathBuf> {
    let missing = ["github.com/hashicorp/yamux", "github.com/gorilla/websocket"]
        .iter()
        .any(|p| !PathBuf::from(GOPATH).join("src").join(p).is_dir());
    if missing || std::process::Command::new("go").arg("version").output().is_err() {
        eprintln!(
            "SKIPPED go device interop: needs Debian's golang-go, golang-github-hashicorp-yamux-dev and \
             golang-github-gorilla-websocket-dev (.ci/run installs them)"
        );
        return None;
    }
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("go-device/main.go");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go-device");
    let built = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOCACHE", PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go-cache"))
        .env("GOFLAGS", "")
        .output()
        .expect("go build runs");
    assert!(built.status.success(), "go build failed: {}", String::from_utf8_lossy(&built.stderr));
    Some(out)
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>, what: &str) -> String {
    tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("go device: no '{what}' line in time"))
        .expect("read go device output")
        .unwrap_or_else(|| panic!("go device exited before '{what}'"))
}

#[tokio::test]
async fn a_go_device_on_hashicorp_yamux_serves_through_the_relay() {
    let Some(binary) = build_go_device() else { return };
    let stack = Stack::start().await;
    let device = stack.add_device("alice@example.com").await;
    let key_file = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("go-device-{}.pem", device.id));
    std::fs::write(&key_file, &device.key_pem).unwrap();

    let mut child: Child = Command::new(&binary)
        .arg("-api")
        .arg(&stack.api_url)
        .arg("-tunnel")
        .arg(stack.tunnel_url())
        .arg("-device")
        .arg(&device.id)
        .arg("-key")
        .arg(&key_file)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start go device");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(next_line(&mut lines, "ready").await, "ready");
    let session = stack.wait_session(&device.id, None).await;

    // A stream the device opened: its heartbeat, answered by the relay.
    let beat = next_line(&mut lines, "heartbeat").await;
    assert!(beat.starts_with("heartbeat 200 "), "{beat}");
    assert!(beat.contains(&session.token), "the ack names the session: {beat}");

    let client = http();
    let url = |path: &str| stack.forward_url(&session.token, path);
    let resp = client.get(url("/hello")).bearer_auth(SECRET).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "hello from go");

    // Many streams at once, each on its own relay connection.
    let many = futures::future::join_all((0..48).map(|_| async {
        let resp = client.get(url("/hello")).bearer_auth(SECRET).send().await.unwrap();
        (resp.status(), resp.text().await.unwrap())
    }))
    .await;
    assert!(many.iter().all(|(s, b)| *s == 200 && b == "hello from go"), "{many:?}");

    // 64 MiB down: beyond every window, so window updates flow both ways.
    const BIG: usize = 64 * 1024 * 1024;
    let resp = client.get(url(&format!("/bytes?n={BIG}"))).bearer_auth(SECRET).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut at = 0usize;
    while let Some(chunk) = body.next().await {
        for b in chunk.unwrap().iter() {
            assert_eq!(*b as usize, at % 251 % 256, "byte {at}");
            at += 1;
        }
    }
    assert_eq!(at, BIG);

    // 16 MiB up and back through the device's echo.
    let payload: Vec<u8> = (0..16 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let resp = client.post(url("/echo")).bearer_auth(SECRET).body(payload.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap() == payload, "echo differs");

    // A WebSocket through the tunnel to gorilla's server.
    ws_echo(&url("/ws"), &[("authorization", &format!("Bearer {SECRET}"))]).await;

    // The operator closes the session: the device sees code and reason.
    stack.internal().close_session(&session.token).await.unwrap();
    let closed = next_line(&mut lines, "closed").await;
    assert_eq!(closed, "closed 4001 closed_by_operator");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "go device exit: {status}");
    let _ = std::fs::remove_file(&key_file);
}
