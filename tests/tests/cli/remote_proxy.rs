//! `remote-proxy sessions list|show|close` against a running relay, as an
//! operator would run it.

use std::process::Command;

use edgelink_agent::Status;
use edgelink_e2e::{SECRET, Stack, wait_for};

fn cli(stack: &Stack, args: &[&str]) -> (i32, String, String) {
    let url = stack.internal_url();
    let args = [&["sessions", "--internal-url", url.as_str()], args].concat();
    edgelink_e2e::run_binary("remote-proxy", &args, &[("EDGELINK_RELAY__INTERNAL_SECRET", SECRET)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_lists_shows_and_closes_a_session() {
    let stack = Stack::start().await;
    let (device, mut agent, session) = stack.connected_device("alice@example.com").await;

    let (code, out, err) = tokio::task::block_in_place(|| cli(&stack, &["list"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&session.token) && out.contains(&device.id), "{out}");
    assert!(out.contains("1 session(s)"), "{out}");

    let (code, out, err) = tokio::task::block_in_place(|| cli(&stack, &["show", &session.token]));
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["device_id"], device.id.as_str());

    let (code, out, err) = tokio::task::block_in_place(|| cli(&stack, &["close", &session.token]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&session.token), "{out}");
    // The agent reconnects with backoff and gets a new session.
    wait_for(&mut agent.status, |s| matches!(s, Status::Backoff(_))).await;
    let again = stack.wait_session(&device.id, Some(&session.token)).await;
    assert_ne!(again.token, session.token);

    let (code, _, err) = tokio::task::block_in_place(|| cli(&stack, &["show", &session.token]));
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");
    agent.stop().await;
}

#[test]
fn missing_secret_is_a_clear_error() {
    let out = Command::new(edgelink_e2e::binary("remote-proxy"))
        .args(["sessions", "--internal-url", "http://127.0.0.1:9", "list"])
        .env_remove("EDGELINK_RELAY__INTERNAL_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("internal secret is required"));
}

#[test]
fn serve_without_a_secret_exits_64_with_a_message() {
    let out = Command::new(edgelink_e2e::binary("remote-proxy"))
        .arg("serve")
        .env_remove("EDGELINK_RELAY__INTERNAL_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("internal_secret is required"));
}
