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
        let v = browser.get_json(&format!("/api/v1/commands/{id}?wait=5s")).await;
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
    config.commands_output_cap = 1000;
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
    assert_eq!(r["stdout_truncated"], false, "{r}");

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

    // Output past the device's cap is cut there, and the answer says so.
    let (_, sent) =
        post(&alice, &path, json!({"command": "/bin/sh", "args": ["-c", "head -c 5000 /dev/zero | tr '\\0' x"]})).await;
    let r = done(&alice, sent["command_id"].as_str().expect("id")).await;
    assert_eq!(r["stdout"].as_str().map(str::len), Some(1000), "{r}");
    assert_eq!((r["stdout_truncated"].as_bool(), r["stderr_truncated"].as_bool()), (Some(true), Some(false)), "{r}");

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

    // A program with an API token of scope command:execute: its notice is
    // sent as the token, not as the user.
    let (token_id, secret) = alice.api_token(json!({"name": "ops", "scopes": ["command:execute"]})).await;
    let resp = edgelink_e2e::http()
        .post(format!("{}{path}", stack.api_url))
        .bearer_auth(&secret)
        .json(&json!({"command": "/bin/echo", "args": ["from a program"]}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 202);
    let sent: Value = resp.json().await.expect("json");
    let r = done(&alice, sent["command_id"].as_str().expect("id")).await;
    assert_eq!(r["stdout"], "from a program\n", "{r}");
    let queue = alice.get_json(&format!("/api/v1/devices/{}/messages", device.id)).await;
    let notice = queue["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["content"]["command_id"] == sent["command_id"]))
        .cloned()
        .unwrap_or_else(|| panic!("the command's notice is listed: {queue}"));
    assert_eq!(
        (notice["sender"]["kind"].as_str(), notice["sender"]["id"].as_str()),
        (Some("token"), Some(token_id.as_str()))
    );

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

/// Waits until command `id` is running on the device.
async fn running(browser: &Browser, id: &str) {
    edgelink_e2e::wait_until("the command to start", Duration::from_secs(15), || async {
        let v = browser.get_json(&format!("/api/v1/commands/{id}")).await;
        (v["status"] == "running").then_some(())
    })
    .await;
}

/// SSH targets through the device (a real OpenSSH server on loopback): the
/// credential is stored only sealed to the device's key and cleared when
/// the command ends; the device's `commands_ssh_allow` and host-key pins
/// decide; running commands, local and over SSH, are canceled; no log line
/// of the run holds the password or the private key.
#[tokio::test]
async fn ssh_targets_run_through_the_device_with_sealed_credentials_and_running_commands_cancel() {
    use edgelink_ssh::testing::OpenSsh;
    let captured = edgelink_e2e::logs::Captured::default();
    let _logs = captured.install();
    let sshd = OpenSsh::start().await;
    let stack = Stack::start_with(Options { dev_idp: true, ..Options::default() }).await.expect("stack");
    let alice = Browser::new(&stack.api_url);
    alice.sign_in(&stack.idp.as_ref().expect("dev idp").issuer, "alice").await;
    let device = stack.add_device("alice@example.com").await;
    let mut config = stack.agent_config(&device);
    config.commands_allow = vec!["whoami".into(), "sleep *".into(), "/bin/sleep *".into()];
    config.commands_ssh_allow = vec![format!("{}@127.0.0.1:{}", OpenSsh::USER, sshd.port)];
    let mut agent = stack.spawn_agent_with(config, &device);
    agent.connected().await;
    stack.wait_session(&device.id, None).await;
    let path = format!("/api/v1/devices/{}/commands", device.id);
    let target = |extra: Value| {
        let mut t = json!({"host": "127.0.0.1", "port": sshd.port, "username": OpenSsh::USER,
            "host_key": sshd.host_fingerprint});
        if let (Some(t), Some(extra)) = (t.as_object_mut(), extra.as_object()) {
            t.extend(extra.clone());
        }
        t
    };

    // Password and key authentication, the host key pinned by the request.
    for credential in [json!({"password": OpenSsh::PASSWORD}), json!({"private_key": sshd.client_key})] {
        let (status, sent) = post(&alice, &path, json!({"command": "whoami", "target": target(credential)})).await;
        assert_eq!(status, 202, "{sent}");
        assert_eq!((sent["host"].as_str(), sent["port"].as_u64()), (Some("127.0.0.1"), Some(u64::from(sshd.port))));
        let r = done(&alice, sent["command_id"].as_str().expect("id")).await;
        assert_eq!(
            (r["status"].as_str(), r["stdout"].as_str()),
            (Some("succeeded"), Some(format!("{}\n", OpenSsh::USER).as_str())),
            "{r}\n{}",
            sshd.log()
        );
        let row = stack.store.command(&r_owner(&stack).await, r["command_id"].as_str().expect("id")).await;
        assert_eq!(
            row.expect("store").expect("row").secret_sealed,
            None,
            "the sealed credential is cleared at the end"
        );
    }

    // While it waits, the store holds only the sealed form.
    let offline = stack.add_device("alice@example.com").await;
    let (status, sent) = post(
        &alice,
        &format!("/api/v1/devices/{}/commands", offline.id),
        json!({"command": "whoami", "target": target(json!({"password": OpenSsh::PASSWORD}))}),
    )
    .await;
    assert_eq!(status, 202, "{sent}");
    let row = stack
        .store
        .command(&r_owner(&stack).await, sent["command_id"].as_str().expect("id"))
        .await
        .expect("store")
        .expect("row");
    let sealed = row.secret_sealed.expect("sealed credential stored");
    assert!(sealed.starts_with("els1.") && !sealed.contains(OpenSsh::PASSWORD), "{sealed}");
    assert!(!sent.to_string().contains("els1."), "the API never shows the sealed form");

    // The device's rules: a target it does not allow, a server with no pin,
    // a wrong password — each fails with the reason, nothing secret in it.
    let refused = [
        (json!({"host": "127.0.0.2", "password": "x"}), "commands_ssh_allow"),
        (json!({"host_key": null, "password": OpenSsh::PASSWORD}), "host key"),
        (json!({"password": "wrong-password-1"}), "authentication"),
    ];
    for (extra, why) in refused {
        let mut t = target(json!({}));
        if let (Some(t), Some(extra)) = (t.as_object_mut(), extra.as_object()) {
            t.extend(extra.clone());
            t.retain(|_, v| !v.is_null());
        }
        let (_, sent) = post(&alice, &path, json!({"command": "whoami", "target": t})).await;
        let r = done(&alice, sent["command_id"].as_str().expect("id")).await;
        assert_eq!(r["status"], "failed", "{r}");
        let error = r["error"].as_str().unwrap_or("").to_lowercase();
        assert!(error.contains(why), "{why}: {r}");
        assert!(!error.contains("wrong-password-1"));
    }

    // Bad targets are a 400 before anything is stored.
    for bad in [
        json!({"command": "whoami", "target": target(json!({}))}),
        json!({"command": "whoami", "target": target(json!({"password": "p", "private_key": "k"}))}),
        json!({"command": "whoami", "target": target(json!({"password": "p", "host_key": "MD5:aa"}))}),
        json!({"command": "whoami", "args": ["x"], "target": target(json!({"password": "p"}))}),
        json!({"command": "whoami", "target": target(json!({"password": "p", "host": ""}))}),
        json!({"command": "whoami", "target": target(json!({"password": "p", "username": "a@b"}))}),
        json!({"command": "whoami", "target": target(json!({"private_key": "k".repeat(20_000)}))}),
    ] {
        let (status, body) = post(&alice, &path, bad.clone()).await;
        assert_eq!(status, 400, "{bad} → {body}");
    }

    // Cancel a running command: on the device, and over SSH.
    for body in [
        json!({"command": "/bin/sleep", "args": ["30"], "timeout_ms": 60_000}),
        json!({"command": "sleep 30", "timeout_ms": 60_000, "target": target(json!({"password": OpenSsh::PASSWORD}))}),
    ] {
        let (_, sent) = post(&alice, &path, body).await;
        let id = sent["command_id"].as_str().expect("id").to_owned();
        running(&alice, &id).await;
        let began = std::time::Instant::now();
        let (status, c) = post(&alice, &format!("/api/v1/commands/{id}/cancel"), json!({})).await;
        assert_eq!(status, 200, "{c}");
        assert!(c["cancel_requested_at"].is_string(), "{c}");
        let r = done(&alice, &id).await;
        assert_eq!(r["status"], "canceled", "{r}");
        assert!(began.elapsed() < Duration::from_secs(20), "the cancel took {:?}", began.elapsed());
        // Bob cannot cancel alice's command.
        let bob = Browser::new(&stack.api_url);
        bob.sign_in(&stack.idp.as_ref().expect("dev idp").issuer, "bob").await;
        let (status, _) = post(&bob, &format!("/api/v1/commands/{id}/cancel"), json!({})).await;
        assert_eq!(status, 404);
    }
    agent.stop().await;

    let logs = captured.text();
    assert!(logs.contains("running a remote command over SSH"), "the capture saw the agent's log");
    for secret in [OpenSsh::PASSWORD, sshd.client_key.trim(), "wrong-password-1"] {
        assert!(!logs.contains(secret), "a credential reached the logs");
    }
}

/// alice's user id.
async fn r_owner(stack: &Stack) -> String {
    stack.store.user_by_email("alice@example.com").await.expect("store").expect("alice").id
}
