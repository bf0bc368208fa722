//! `edge-agent proxy`, seed 001's intermediary, driven by a main server
//! written to the document with python-socketio 5
//! (`tests/python/seed001_main_server.py`), running its commands on a real
//! OpenSSH server; the agent's whole log, at debug level, carries no
//! password, private key or apiKey.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use edgelink_ssh::testing::OpenSsh;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

const API_KEY: &str = "seed001-apiKey-5f0c9e";

/// The main server, its port, and its event lines.
async fn main_server(commands: Value) -> (Child, u16, tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/seed001_main_server.py");
    let mut child = Command::new("python3")
        .arg(script)
        .env("API_KEY", API_KEY)
        .env("COMMANDS", commands.to_string())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 (python-socketio and aiohttp are installed by .ci/run)");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the main server did not start")
        .expect("read")
        .expect("the main server exited (is python-socketio installed?)");
    let port = first.strip_prefix("port ").and_then(|p| p.parse().ok()).expect("port line");
    (child, port, lines)
}

fn intermediary(port: u16, api_key: &str, host_key: &str) -> Child {
    Command::new(edgelink_e2e::binary("edge-agent"))
        .arg("proxy")
        .env("SERVER_URL", format!("http://127.0.0.1:{port}"))
        .env("PROXY_ID", "proxy-lab-1")
        .env("API_KEY", api_key)
        .env("EDGELINK_PROXY_HOST_KEYS", host_key)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("edge-agent")
}

/// The process's whole output once it is stopped.
async fn stop(mut child: Child) -> String {
    let _ = child.start_kill();
    let _ = child.wait().await;
    let mut all = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut all).await;
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut all).await;
    }
    all
}

async fn next_event(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("no event from the main server within 60 s")
        .expect("read")
        .expect("the main server exited");
    serde_json::from_str(&line).expect("event line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_socketio_main_server_drives_edge_agent_proxy_over_real_ssh() {
    let sshd = OpenSsh::start().await;
    let base = json!({"serverId": 123, "host": "127.0.0.1", "port": sshd.port, "username": OpenSsh::USER});
    let with = |id: &str, extra: Value| {
        let mut c = base.clone();
        c["commandId"] = json!(id);
        for (k, v) in extra.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    };
    let wrong_password = "wrong-Pw-for-seed001-3a";
    let commands = json!([
        with(
            "cmd_1_ok",
            json!({"password": OpenSsh::PASSWORD, "command": "echo hello; echo warn >&2", "timeout": 20000})
        ),
        with("cmd_2_key", json!({"privateKey": sshd.client_key, "command": "whoami"})),
        with("cmd_3_badpw", json!({"password": wrong_password, "command": "true"})),
        with("cmd_4_slow", json!({"password": OpenSsh::PASSWORD, "command": "sleep 30", "timeout": 1000})),
        with("cmd_5_exit", json!({"password": OpenSsh::PASSWORD, "command": "exit 7"})),
        json!({"commandId": "cmd_6_invalid", "command": "true"}),
    ]);
    let (_server, port, mut events) = main_server(commands).await;
    let pin = format!("127.0.0.1:{}={}", sshd.port, sshd.host_fingerprint);
    let agent = intermediary(port, API_KEY, &pin);

    let connected = next_event(&mut events).await;
    assert_eq!(connected["connected"], "proxy-lab-1", "{connected}");
    // Both forms are sent; the document's Python example reads `auth`.
    assert_eq!(connected["via"], "auth");
    assert_eq!(connected["query_has_key"], true);

    let mut results = std::collections::HashMap::new();
    while results.len() < 6 {
        let ev = next_event(&mut events).await;
        let r = ev["result"].clone();
        results.insert(r["commandId"].as_str().expect("commandId").to_owned(), r["result"].clone());
    }
    assert_eq!(results["cmd_1_ok"], json!({"stdout": "hello\n", "stderr": "warn\n", "exitCode": 0}));
    assert_eq!(results["cmd_2_key"]["stdout"], format!("{}\n", OpenSsh::USER));
    assert_eq!(results["cmd_2_key"]["exitCode"], 0);
    assert_eq!(results["cmd_3_badpw"]["exitCode"], 1);
    assert!(results["cmd_3_badpw"]["stderr"].as_str().unwrap_or("").contains("authentication"));
    assert_eq!(results["cmd_4_slow"]["exitCode"], 1);
    assert!(results["cmd_4_slow"]["stderr"].as_str().unwrap_or("").contains("timed out after 1000 ms"));
    assert_eq!(results["cmd_5_exit"]["exitCode"], 7);
    assert_eq!(results["cmd_6_invalid"]["exitCode"], 1);
    assert!(results["cmd_6_invalid"]["stderr"].as_str().unwrap_or("").contains("invalid execute_command"));
    // Four password commands, one key command, one connection each.
    assert!(sshd.connections() <= 3, "pooled: {} connections", sshd.connections());

    // A wrong apiKey is refused by the server, and the agent says why.
    let mut refused = intermediary(port, "not-the-key-77", &pin);
    let ev = next_event(&mut events).await;
    assert_eq!(ev["refused"], "bad apiKey");
    let mut refused_log = String::new();
    let mut stderr = BufReader::new(refused.stderr.take().expect("stderr")).lines();
    let said = async {
        while let Ok(Some(line)) = stderr.next_line().await {
            refused_log.push_str(&line);
            refused_log.push('\n');
            if line.contains("refused the connection") {
                return true;
            }
        }
        false
    };
    let said = tokio::time::timeout(Duration::from_secs(20), said).await.unwrap_or(false);
    refused_log += &stop(refused).await;
    assert!(said, "the agent does not say why it was refused: {refused_log}");

    let log = stop(agent).await + &refused_log;
    assert!(log.contains("cmd_1_ok"), "the log names commands: {log}");
    let key_body = sshd.client_key.lines().nth(1).expect("key body");
    for secret in [OpenSsh::PASSWORD, wrong_password, API_KEY, "not-the-key-77", key_body] {
        assert!(!log.contains(secret), "a secret is in the intermediary's log");
    }
}
