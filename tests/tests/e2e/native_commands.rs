//! Native commands: run by the device's own agent over its tunnel, only
//! what its `commands_allow` admits, killed at the timeout; a device that
//! is offline until the command's TTL gets it `expired`; a pending command
//! can be canceled; another owner's device is 404; a user cannot forge the
//! command notice through the messages API.

use std::time::Duration;

use edgelink_e2e::signin::Browser;
use edgelink_e2e::{Options, Stack};
use reqwest::Method;
use serde_json::{Value, json};

async fn post(browser: &Browser, path: &str, body: Value) -> (u16, Value) {
    let resp = browser.same_origin(Method::POST, path).json(&body).send().await.expect("post");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn done(browser: &Browser, id: &str) -> Value {
    for _ in 0..10 {
        let v: Value = browser
            .same_origin(Method::GET, &format!("/api/v1/commands/{id}?wait=5s"))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if !matches!(v["status"].as_str(), Some("pending" | "running")) {
            return v;
        }
    }
    panic!("command {id} never ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_allowed_commands_only_and_offline_devices_expire_them() {
    let stack = Stack::start_with(Options { dev_idp: true, ..Options::default() }).await.expect("stack");
    let alice = Browser::new(&stack.api_url);
    alice.sign_in(&stack.idp.as_ref().expect("dev idp").issuer, "alice").await;
    let device = stack.add_device("alice@example.com").await;
    let mut config = stack.agent_config(&device);
    config.commands_allow = vec!["/bin/echo *".into(), "/bin/sleep *".into(), "/bin/sh -c *".into()];
    config.commands_env_allow = vec!["GREETING".into()];
    let mut agent = stack.spawn_agent_with(config, &device);
    agent.connected().await;
    // Registered, so that api-server's notice reaches it (otherwise the
    // agent would take the command at its next poll).
    stack.wait_session(&device.id, None).await;
    let path = format!("/api/v1/devices/{}/commands", device.id);

    // Allowed: runs, with its output and exit status.
    let (status, sent) = post(&alice, &path, json!({"command": "/bin/echo", "args": ["hello", "device"]})).await;
    assert_eq!(status, 202, "{sent}");
    assert_eq!(sent["status"], "pending");
    let r = done(&alice, sent["command_id"].as_str().expect("id")).await;
    assert_eq!(
        (r["status"].as_str(), r["stdout"].as_str(), r["exit_code"].as_i64()),
        (Some("succeeded"), Some("hello device\n"), Some(0)),
        "{r}"
    );
    assert_eq!(r["device_id"], device.id.as_str());

    // Allowed environment passes; a non-zero exit is `failed` with its code.
    let (_, sent) = post(
        &alice,
        &path,
        json!({"command": "/bin/sh", "args": ["-c", "echo $GREETING; exit 3"],
        "env": {"GREETING": "hi"}}),
    )
    .await;
    let r = done(&alice, sent["command_id"].as_str().expect("id")).await;
    assert_eq!(
        (r["status"].as_str(), r["stdout"].as_str(), r["exit_code"].as_i64()),
        (Some("failed"), Some("hi\n"), Some(3)),
        "{r}"
    );

    // Not on the allowlist: never runs.
    let (_, sent) = post(&alice, &path, json!({"command": "/bin/cat", "args": ["/etc/passwd"]})).await;
    let r = done(&alice, sent["command_id"].as_str().expect("id")).await;
    assert_eq!(r["status"], "failed");
    assert!(r["error"].as_str().unwrap_or("").contains("allowlist"), "{r}");
    assert!(r["stdout"].as_str().unwrap_or("").is_empty());

    // The timeout kills it.
    let (_, sent) = post(&alice, &path, json!({"command": "/bin/sleep", "args": ["30"], "timeout_ms": 500})).await;
    let r = done(&alice, sent["command_id"].as_str().expect("id")).await;
    assert_eq!(r["status"], "failed");
    assert!(r["error"].as_str().unwrap_or("").contains("timed out"), "{r}");

    // Bad input is a 400 naming the rule, and nothing is stored or sent.
    for bad in [
        json!({"command": ""}),
        json!({"command": "/bin/echo", "timeout_ms": 0}),
        json!({"command": "/bin/echo", "timeout_ms": 600_001}),
        json!({"command": "/bin/echo", "ttl": 0}),
        json!({"command": "/bin/echo", "env": {"BAD NAME": "x"}}),
        json!({"command": "/bin/echo", "args": vec!["a"; 65]}),
        json!({"command": "x".repeat(5000)}),
        json!({"args": ["no command"]}),
    ] {
        let (status, body) = post(&alice, &path, bad.clone()).await;
        assert_eq!(status, 400, "{bad} → {body}");
    }

    // Another owner's device: 404, as everywhere.
    let bob = Browser::new(&stack.api_url);
    bob.sign_in(&stack.idp.as_ref().expect("dev idp").issuer, "bob").await;
    let (status, _) = post(&bob, &path, json!({"command": "/bin/echo", "args": ["x"]})).await;
    assert_eq!(status, 404);

    // Nobody can queue the notice themselves.
    let (status, body) = post(
        &alice,
        "/api/v1/messages",
        json!({"to": [device.id], "type": "edgelink.command",
        "content": {"command_id": "cmd_1_forged"}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // An offline device: canceled before it connects, or expired at its TTL.
    let offline = stack.add_device("alice@example.com").await;
    let offline_path = format!("/api/v1/devices/{}/commands", offline.id);
    let (_, sent) = post(&alice, &offline_path, json!({"command": "/bin/echo", "args": ["never"], "ttl": 600})).await;
    let id = sent["command_id"].as_str().expect("id").to_owned();
    let (status, c) = post(&alice, &format!("/api/v1/commands/{id}/cancel"), json!({})).await;
    assert_eq!((status, c["status"].as_str()), (200, Some("canceled")), "{c}");
    let (_, sent) = post(&alice, &offline_path, json!({"command": "/bin/echo", "args": ["late"], "ttl": 1})).await;
    let id = sent["command_id"].as_str().expect("id").to_owned();
    let r = edgelink_e2e::wait_until("the command to expire", Duration::from_secs(15), || async {
        let v = done(&alice, &id).await;
        (v["status"] == "expired").then_some(v)
    })
    .await;
    assert!(r["error"].as_str().unwrap_or("").contains("expired"), "{r}");
    // Canceling an ended command is a conflict.
    let (status, _) = post(&alice, &format!("/api/v1/commands/{id}/cancel"), json!({})).await;
    assert_eq!(status, 409);
    agent.stop().await;
}
