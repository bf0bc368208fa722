//! Seed 000's node API: its Python client flow (aiohttp + cryptography,
//! RSA-2048, PSS with MAX_LENGTH salt, hex signatures) against api-server,
//! changed only to carry a pairing code in the registration's metadata;
//! and the rules of registration the document leaves open.

use std::path::PathBuf;
use std::process::Command;

use edgelink_e2e::{Stack, http};
use serde_json::{Value, json};

fn python_ready() -> bool {
    let probe = Command::new("python3").args(["-c", "import aiohttp, cryptography"]).output();
    let ready = matches!(probe, Ok(ref o) if o.status.success());
    if !ready {
        assert!(std::env::var_os("CI").is_none(), "python3 with aiohttp and cryptography is required in CI");
        eprintln!("!!! SKIPPED the seed-000 client test: pip install aiohttp cryptography");
    }
    ready
}

async fn code(stack: &Stack, owner: &str) -> String {
    edgelink_api::provision::create_pairing(
        &stack.store,
        &stack.cookie_keys(),
        owner,
        std::time::Duration::from_secs(600),
        10,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_client_flow_runs_unchanged_but_for_the_pairing_code() {
    if !python_ready() {
        return;
    }
    let stack = Stack::start().await;
    let (a, b) = (code(&stack, "alice@example.com").await, code(&stack, "alice@example.com").await);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/seed000_client.py");
    let out = tokio::task::block_in_place(|| {
        Command::new("python3")
            .arg(&script)
            .env("API_URL", &stack.api_url)
            .env("CODE_A", &a)
            .env("CODE_B", &b)
            .output()
            .expect("python3")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "seed client failed:\n{stdout}\n{stderr}");
    for step in [
        "register",
        "login+verify",
        "discover",
        "update status",
        "heartbeat",
        "send",
        "receive pending",
        "mark read",
        "metrics",
        "health",
        "refresh",
    ] {
        assert!(stdout.lines().any(|l| l.starts_with(&format!("ok {step}"))), "step {step} missing:\n{stdout}");
    }
    // The nodes are alice's devices, named by their node ids.
    let alice = stack.store.user_by_email("alice@example.com").await.unwrap().unwrap();
    let devices = stack.store.list_devices(&alice.id).await.unwrap();
    let mut nodes: Vec<_> = devices.iter().filter_map(|d| d.node_id.clone()).collect();
    nodes.sort();
    assert_eq!(nodes, ["node-001", "node-002"]);
    let a = devices.iter().find(|d| d.node_id.as_deref() == Some("node-001")).unwrap();
    assert_eq!((a.device_type.as_str(), a.region.as_deref()), ("gateway", Some("eu-west-1")));
    assert_eq!(a.metadata.0["version"], "2.0.1", "status update merged the metadata");
    assert!(a.metadata.0.get("pairing_code").is_none(), "the pairing code is never kept");
}

async fn register(stack: &Stack, body: Value, bearer: Option<&str>) -> (u16, Value) {
    let mut req = http().post(format!("{}/api/v1/auth/register", stack.api_url)).json(&body);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

fn node(id: &str, code: Option<&str>) -> Value {
    let key = edgelink_auth::agent_key::AgentKey::generate().unwrap();
    let mut metadata = json!({"region": "eu-west-1"});
    if let Some(c) = code {
        metadata["pairing_code"] = json!(c);
    }
    json!({"node_id": id, "name": id, "type": "gateway", "capabilities": ["x"],
           "public_key": key.public_key_pem(), "endpoint": "https://n.example", "metadata": metadata})
}

#[tokio::test]
async fn registration_needs_a_code_or_a_token_and_node_ids_belong_to_one_owner() {
    // More registrations than one address may make a minute by default.
    fn roomy(c: &mut edgelink_api::ApiConfig) {
        c.pairing_exchange_per_minute = 100;
    }
    let options = edgelink_e2e::Options { dev_idp: true, api: roomy, ..Default::default() };
    let stack = Stack::start_with(options).await.unwrap();
    // Nothing to prove ownership: refused, nothing created.
    let (s, v) = register(&stack, node("n-1", None), None).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("token_missing")), "{v}");
    let (s, v) = register(&stack, node("n-1", Some("AAAA-AAAA")), None).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("pairing_code_invalid")), "{v}");
    for bad in ["bad id!", "0b6a6b5e-2f7c-4a59-9d0e-6f1d2d6c9b1a"] {
        let (s, _) = register(&stack, node(bad, Some(&code(&stack, "alice@example.com").await)), None).await;
        assert_eq!(s, 400, "{bad}");
    }
    // With alice's code: created; again with a new code: her node is
    // re-registered (same device, new key), not duplicated.
    let (s, first) = register(&stack, node("n-1", Some(&code(&stack, "alice@example.com").await)), None).await;
    assert_eq!(s, 201, "{first}");
    let (s, again) = register(&stack, node("n-1", Some(&code(&stack, "alice@example.com").await)), None).await;
    assert_eq!(s, 201, "{again}");
    assert_eq!(first["device_id"], again["device_id"]);
    assert_eq!((first["status"].as_str(), again["status"].as_str()), (Some("registered"), Some("updated")));
    // Bob cannot take alice's node id; his code stays usable.
    let bobs_code = code(&stack, "bob@example.com").await;
    let (s, v) = register(&stack, node("n-1", Some(&bobs_code)), None).await;
    assert_eq!((s, v["error"].as_str()), (409, Some("node_id_taken")), "{v}");
    let (s, _) = register(&stack, node("n-2", Some(&bobs_code)), None).await;
    assert_eq!(s, 201);
    // A program of alice's with pairing:create registers without a code;
    // one without that scope cannot.
    let alice = edgelink_e2e::signin::Browser::new(&stack.api_url);
    alice.sign_in(&stack.idp.as_ref().unwrap().issuer, "alice").await;
    let (_, can) = alice.api_token(json!({"name": "fleet", "scopes": ["pairing:create"]})).await;
    let (_, cannot) = alice.api_token(json!({"name": "reader", "scopes": ["device:read"]})).await;
    let (s, v) = register(&stack, node("n-3", None), Some(&cannot)).await;
    assert_eq!((s, v["error"].as_str()), (403, Some("insufficient_scope")), "{v}");
    let (s, v) = register(&stack, node("n-3", None), Some(&can)).await;
    assert_eq!((s, v["status"].as_str()), (201, Some("registered")), "{v}");
    let (s, v) = register(&stack, node("n-3", None), Some(&can)).await;
    assert_eq!((s, v["status"].as_str()), (201, Some("updated")), "{v}");
    // A login for an unknown node is the same answer as for an unknown device.
    let resp =
        http().post(format!("{}/api/v1/auth/login", stack.api_url)).json(&json!({"node_id": "nope"})).send().await;
    assert_eq!(resp.unwrap().status(), 404);
}
