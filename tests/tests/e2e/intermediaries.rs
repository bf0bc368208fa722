//! Seed 001's main-server side on api-server: intermediaries registered by
//! a user connect to the Socket.IO namespace `/proxy` — a python-socketio
//! client written to the document (auth payload, and the query form) and
//! edgelink's own `edge-agent proxy` — and run commands sent through the
//! REST API; a bad apiKey is refused; a group command whose intermediary
//! drops mid-command moves to another member, which runs it on a real
//! OpenSSH server. Everything api-server, the relay and edge-agent log
//! meanwhile, at debug level, is scanned for the password, the keys and
//! the apiKeys.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use edgelink_e2e::logs::Captured;
use edgelink_e2e::signin::Browser;
use edgelink_e2e::{Options, Stack};
use edgelink_ssh::testing::OpenSsh;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

type Lines = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

fn python_intermediary(api_url: &str, proxy_id: &str, key: &str, mode: &str, creds: &str) -> (Child, Lines) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/seed001_intermediary.py");
    let mut child = Command::new("python3")
        .arg(script)
        .env("SERVER_URL", format!("{api_url}/proxy"))
        .env("PROXY_ID", proxy_id)
        .env("API_KEY", key)
        .env("MODE", mode)
        .env("CREDENTIALS", creds)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 (python-socketio is installed by .ci/run)");
    let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    (child, lines)
}

async fn next(lines: &mut Lines) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("no event from the intermediary script within 30 s")
        .expect("read")
        .expect("the intermediary script exited");
    serde_json::from_str(&line).expect("json line")
}

async fn register(alice: &Browser, name: &str, group: &str) -> (String, String) {
    let resp = alice
        .same_origin(reqwest::Method::POST, "/api/v1/proxies")
        .json(&json!({"name": name, "group": group}))
        .send()
        .await
        .expect("register");
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.expect("json");
    let key = v["api_key"].as_str().expect("api_key").to_owned();
    assert!(key.starts_with("elp_"));
    // Seed 001's names carry the same values.
    assert_eq!((v["apiKey"].as_str(), v["proxyId"].as_str()), (Some(key.as_str()), v["id"].as_str()));
    (v["id"].as_str().expect("id").to_owned(), key)
}

async fn command(alice: &Browser, path: &str, body: Value) -> String {
    let resp = alice.same_origin(reqwest::Method::POST, path).json(&body).send().await.expect("command");
    assert_eq!(resp.status(), 202);
    let v: Value = resp.json().await.expect("json");
    v["command_id"].as_str().expect("command_id").to_owned()
}

async fn result(alice: &Browser, id: &str) -> Value {
    let resp = alice
        .same_origin(reqwest::Method::GET, &format!("/api/v1/commands/{id}?wait=30s"))
        .send()
        .await
        .expect("get command");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

async fn connected(alice: &Browser, id: &str) -> bool {
    let v = alice.get_json("/api/v1/proxies").await;
    v["proxies"].as_array().is_some_and(|a| a.iter().any(|p| p["id"] == id && p["connected"] == true))
}

#[tokio::test]
async fn intermediaries_connect_per_the_document_run_commands_and_fail_over() {
    let captured = Captured::default();
    let _logs = captured.install();
    let stack = Stack::start_with(Options { dev_idp: true, ..Options::default() }).await.expect("stack");
    let alice = Browser::new(&stack.api_url);
    alice.sign_in(&stack.idp.as_ref().expect("dev idp").issuer, "alice").await;
    // Bad registrations are 400s.
    for bad in
        [json!({"name": ""}), json!({"name": "x".repeat(101)}), json!({"name": "n", "allowed_ips": ["not-an-ip"]})]
    {
        let resp = alice.same_origin(reqwest::Method::POST, "/api/v1/proxies").json(&bad).send().await.expect("post");
        assert_eq!(resp.status(), 400, "{bad}");
    }
    let (py_id, py_key) = register(&alice, "python", "lab").await;
    let (agent_id, agent_key) = register(&alice, "edge-agent", "lab").await;
    let sshd = OpenSsh::start().await;
    let ssh = json!({"host": "127.0.0.1", "port": sshd.port, "username": OpenSsh::USER,
        "password": OpenSsh::PASSWORD, "host_key": sshd.host_fingerprint});

    // A wrong key is refused with a message, never connected.
    let (_bad, mut bad) = python_intermediary(&stack.api_url, &py_id, "elp_wrong", "answer", "auth");
    let ev = next(&mut bad).await;
    let message = ev["connect_error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("authentication failed") && !message.contains("elp_wrong"), "{ev}");

    // The document's Python example (auth payload): execute → result →
    // command_result_received {success: true}.
    let (py, mut events) = python_intermediary(&stack.api_url, &py_id, &py_key, "answer", "auth");
    assert_eq!(next(&mut events).await["connected"], true);
    // Bad commands are 400s, before anything is stored or sent.
    for (field, value) in [("port", json!(0)), ("timeout_ms", json!(0)), ("host", json!("")), ("command", json!(" "))] {
        let mut body = ssh.clone();
        body["command"] = json!("true");
        body[field] = value;
        let resp = alice
            .same_origin(reqwest::Method::POST, &format!("/api/v1/proxies/{py_id}/commands"))
            .json(&body)
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), 400, "{field}");
    }
    let mut body = ssh.clone();
    body["command"] = json!("uptime");
    let id = command(&alice, &format!("/api/v1/proxies/{py_id}/commands"), body).await;
    assert!(id.starts_with("cmd_"), "{id}");
    let ev = next(&mut events).await;
    assert_eq!(ev["execute_command"]["commandId"], id.as_str());
    assert_eq!(ev["execute_command"]["command"], "uptime");
    assert_eq!(ev["execute_command"]["port"], sshd.port);
    assert!(ev["execute_command"]["serverId"].is_u64(), "{ev}");
    assert_eq!(ev["has_password"], true);
    assert_eq!(next(&mut events).await["command_result_received"], json!({"success": true}));
    let done = result(&alice, &id).await;
    assert_eq!((done["status"].as_str(), done["stdout"].as_str()), (Some("succeeded"), Some("ran uptime")), "{done}");
    assert_eq!(done["ran_on"], py_id.as_str());
    drop(py);

    // The document's query form, an intermediary that takes a group
    // command and never answers; edgelink's own intermediary joins the
    // group; the first one dies: the command moves and runs over SSH.
    let (mut holder, mut held) = python_intermediary(&stack.api_url, &py_id, &py_key, "hold", "query");
    assert_eq!(next(&mut held).await["connected"], true);
    edgelink_e2e::wait_until("the holder listed as connected", Duration::from_secs(10), || async {
        (connected(&alice, &py_id).await).then_some(())
    })
    .await;
    let mut body = ssh.clone();
    body["command"] = json!("echo failed-over");
    let id = command(&alice, "/api/v1/proxy-groups/lab/commands", body).await;
    assert_eq!(next(&mut held).await["execute_command"]["commandId"], id.as_str());
    let mut agent = Command::new(edgelink_e2e::binary("edge-agent"))
        .arg("proxy")
        .env("SERVER_URL", &stack.api_url)
        .env("PROXY_ID", &agent_id)
        .env("API_KEY", &agent_key)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("edge-agent proxy");
    edgelink_e2e::wait_until("edge-agent proxy connected", Duration::from_secs(20), || async {
        (connected(&alice, &agent_id).await).then_some(())
    })
    .await;
    holder.start_kill().expect("kill the holder");
    let done = result(&alice, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["stdout"], "failed-over\n");
    assert_eq!(done["ran_on"], agent_id.as_str());

    // A command for one intermediary that drops before answering fails
    // cleanly.
    let (mut holder, mut held) = python_intermediary(&stack.api_url, &py_id, &py_key, "hold", "query");
    assert_eq!(next(&mut held).await["connected"], true);
    let mut body = ssh.clone();
    body["command"] = json!("true");
    let id = command(&alice, &format!("/api/v1/proxies/{py_id}/commands"), body).await;
    assert_eq!(next(&mut held).await["execute_command"]["commandId"], id.as_str());
    holder.start_kill().expect("kill the holder");
    let done = result(&alice, &id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert!(done["error"].as_str().unwrap_or("").contains("disconnected before answering"), "{done}");

    // Another user sees none of it.
    let bob = Browser::new(&stack.api_url);
    bob.sign_in(&stack.idp.as_ref().expect("dev idp").issuer, "bob").await;
    let resp = bob.same_origin(reqwest::Method::GET, &format!("/api/v1/commands/{id}")).send().await.expect("get");
    assert_eq!(resp.status(), 404);
    let resp = bob
        .same_origin(reqwest::Method::POST, &format!("/api/v1/proxies/{py_id}/commands"))
        .json(&ssh)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 404, "another user's intermediary is not found, whatever the body");

    // No secret in any log line of the run.
    let _ = agent.start_kill();
    let _ = agent.wait().await;
    let mut agent_log = String::new();
    if let Some(mut e) = agent.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = e.read_to_string(&mut agent_log).await;
    }
    let server_log = captured.text();
    assert!(server_log.contains("intermediary registered"), "the capture saw api-server's log");
    assert!(server_log.contains("command submitted"), "the capture saw events other tests' threads reach first");
    assert!(agent_log.contains("executing"), "the capture saw edge-agent's log");
    for (what, secret) in [
        ("password", OpenSsh::PASSWORD),
        ("apiKey", py_key.as_str()),
        ("apiKey", agent_key.as_str()),
        ("apiKey", "elp_wrong"),
    ] {
        assert!(!server_log.contains(secret), "api-server logged a {what}");
        assert!(!agent_log.contains(secret), "edge-agent logged a {what}");
    }
}

/// Socket.IO handshakes count against a per-address limit (the device-auth
/// rate), so a stranger cannot make api-server look up intermediary keys
/// without bound; requests of an open Engine.IO session do not count.
#[tokio::test]
async fn socket_io_handshakes_are_rate_limited_per_address() {
    let options = Options { api: |c| c.device_auth_per_minute = 3, ..Options::default() };
    let stack = Stack::start_with(options).await.expect("stack");
    let client = edgelink_e2e::http();
    let handshake = format!("{}/socket.io/?EIO=4&transport=polling", stack.api_url);
    for _ in 0..3 {
        let resp = client.get(&handshake).send().await.expect("handshake");
        assert_eq!(resp.status(), 200);
    }
    let resp = client.get(&handshake).send().await.expect("handshake");
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    // A poll of an (unknown) session is not a handshake: not counted, and
    // answered by Engine.IO itself.
    let resp = client.get(format!("{handshake}&sid=nosuchsession")).send().await.expect("poll");
    assert_ne!(resp.status(), 429);
}

/// Seed 001's JavaScript example as written (socket.io-client 4, query
/// credentials, default transports: long-polling first, then the upgrade
/// to WebSocket) connects, runs a command and gets its acknowledgement; a
/// wrong key gets a connect_error.
#[tokio::test]
async fn the_documents_javascript_intermediary_connects_over_polling_and_upgrades() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        dir.join("node_modules/socket.io-client").exists(),
        "tests/browser/node_modules/socket.io-client is missing: run `make browser-deps`"
    );
    let stack = Stack::start_with(Options { dev_idp: true, ..Options::default() }).await.expect("stack");
    let alice = Browser::new(&stack.api_url);
    alice.sign_in(&stack.idp.as_ref().expect("dev idp").issuer, "alice").await;
    let (id, key) = register(&alice, "node", "").await;
    let node = |key: &str| {
        let mut child = Command::new("node")
            .arg(dir.join("seed001_intermediary.mjs"))
            .env("SERVER_URL", &stack.api_url)
            .env("PROXY_ID", &id)
            .env("API_KEY", key)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        (child, lines)
    };

    let (_bad, mut refused) = node("elp_wrong");
    let ev = next(&mut refused).await;
    let message = ev["connect_error"].as_str().unwrap_or("");
    assert!(message.contains("authentication failed") && !message.contains("elp_wrong"), "{ev}");

    let (_js, mut events) = node(&key);
    assert_eq!(next(&mut events).await["connected"], true);
    let mut upgraded = next(&mut events).await;
    assert_eq!(upgraded["upgraded"].take(), "websocket", "the client moved from polling to WebSocket");
    let body = json!({"host": "10.0.0.5", "username": "ops", "password": "pw", "command": "uptime"});
    let cmd = command(&alice, &format!("/api/v1/proxies/{id}/commands"), body).await;
    let ev = next(&mut events).await;
    assert_eq!(ev["execute_command"]["commandId"], cmd.as_str());
    assert_eq!((ev["execute_command"]["host"].as_str(), ev["has_password"].as_bool()), (Some("10.0.0.5"), Some(true)));
    assert_eq!(next(&mut events).await["command_result_received"], json!({"success": true}));
    let done = result(&alice, &cmd).await;
    assert_eq!((done["status"].as_str(), done["stdout"].as_str()), (Some("succeeded"), Some("ran uptime")), "{done}");
}
