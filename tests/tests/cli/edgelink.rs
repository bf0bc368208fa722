//! The `edgelink` client command against a live stack, with an API token
//! made in a browser session: devices, sessions, pairing codes, tokens,
//! tables and `--json`, and the exit code of a refused token.

use edgelink_e2e::signin::Browser;
use edgelink_e2e::{Options, Stack};

fn edgelink(stack: &Stack, token: &str, args: &[&str]) -> (i32, String, String) {
    edgelink_e2e::run_binary(
        "edgelink",
        args,
        &[("EDGELINK_SERVER", stack.api_url.as_str()), ("EDGELINK_TOKEN", token)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_command_manages_devices_sessions_codes_and_tokens() {
    let stack = Stack::start_with(Options { dev_idp: true, ..Options::default() }).await.unwrap();
    let alice = Browser::new(&stack.api_url);
    alice.sign_in(&stack.idp.as_ref().unwrap().issuer, "alice").await;
    let scopes = ["device:manage", "session:manage", "pairing:create", "token:manage"];
    let (_, token) = alice.api_token(serde_json::json!({"name": "cli", "scopes": scopes})).await;
    let (device, agent, _session) = stack.connected_device("alice@example.com").await;
    let run = |args: &[&str]| tokio::task::block_in_place(|| edgelink(&stack, &token, args));

    let (code, out, err) = run(&["devices", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ID") && out.contains(&device.id) && out.contains("online"), "{out}");
    let (code, out, _) = run(&["--json", "devices", "show", &device.id]);
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(shown["id"], device.id.as_str());
    let (code, out, _) = run(&["devices", "rename", &device.id, "front door"]);
    assert_eq!((code, out.trim()), (0, format!("renamed {} to front door", device.id).as_str()));

    let (code, out, _) = run(&["sessions", "list"]);
    assert!(code == 0 && out.contains(&device.id), "{out}");
    let (code, out, err) = run(&["sessions", "close", &device.id]);
    assert_eq!(code, 0, "{out}{err}");

    let (code, out, _) = run(&["pairings", "create"]);
    assert_eq!(code, 0);
    assert!(out.contains("edge-agent pair --server"), "{out}");

    let (code, out, _) =
        run(&["tokens", "create", "--name", "ro", "--scope", "device:read", "--expires-in-days", "30"]);
    assert_eq!(code, 0);
    let secret = out.lines().next().unwrap().to_owned();
    assert!(secret.starts_with("elk_"), "{out}");
    let (code, out, _) = run(&["--json", "tokens", "list"]);
    assert_eq!(code, 0);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ro = list["tokens"].as_array().unwrap().iter().find(|t| t["name"] == "ro").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The narrower token may read but not delete: exit 3, the reason said.
    let (code, _, err) = tokio::task::block_in_place(|| edgelink(&stack, &secret, &["devices", "delete", &device.id]));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("insufficient_scope") && err.contains("device:delete"), "{err}");
    let (code, out, _) = run(&["tokens", "revoke", &ro]);
    assert_eq!((code, out.trim()), (0, format!("revoked {ro}").as_str()));
    let (code, _, err) = tokio::task::block_in_place(|| edgelink(&stack, &secret, &["devices", "list"]));
    assert_eq!(code, 3, "{err}");

    let (code, out, _) = run(&["devices", "delete", &device.id]);
    assert_eq!((code, out.trim()), (0, format!("deleted {}", device.id).as_str()));
    let (code, _, err) = tokio::task::block_in_place(|| edgelink(&stack, "", &["devices", "list"]));
    assert_eq!(code, 3);
    assert!(err.contains("EDGELINK_TOKEN"), "{err}");
    agent.stop().await;
}
