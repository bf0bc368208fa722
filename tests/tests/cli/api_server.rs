//! The operator's api-server commands against a live stack's database:
//! `pairing create` makes a code a device can exchange, `user sign-out`
//! ends a user's browser sessions.

use edgelink_e2e::signin::Browser;
use edgelink_e2e::{Options, Stack};

fn cli(stack: &Stack, args: &[&str]) -> (i32, String, String) {
    let key_file = stack.session_key_file();
    let env = [
        ("EDGELINK_API__DATABASE_URL", stack.database_url.as_str()),
        ("EDGELINK_API__SESSION__KEY_FILE", key_file.to_str().expect("utf-8 path")),
    ];
    let out = edgelink_e2e::run_binary("api-server", args, &env);
    let _ = std::fs::remove_file(&key_file);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_makes_pairing_codes_and_signs_users_out() {
    // No session cache, so the sign-out is seen by the very next request.
    let options = Options { dev_idp: true, api: |c| c.cache_ttl = std::time::Duration::ZERO, ..Options::default() };
    let stack = Stack::start_with(options).await.unwrap();
    let alice = Browser::new(&stack.api_url);
    alice.sign_in(&stack.idp.as_ref().unwrap().issuer, "alice").await;

    let (code, out, err) =
        tokio::task::block_in_place(|| cli(&stack, &["pairing", "create", "--owner", "alice@example.com"]));
    assert_eq!(code, 0, "{err}");
    let pairing = out.trim().to_owned();
    assert_eq!(pairing.len(), 9, "{pairing}");
    let key = edgelink_auth::agent_key::AgentKey::generate().unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/pairings/exchange", stack.api_url))
        .json(&serde_json::json!({"code": pairing, "public_key": key.public_key_pem(), "name": "from the cli"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let list: serde_json::Value =
        alice.client.get(format!("{}/api/v1/devices", stack.api_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["devices"][0]["name"], "from the cli", "the device is alice's");

    assert_eq!(alice.me().await.status(), 200);
    let (code, out, err) =
        tokio::task::block_in_place(|| cli(&stack, &["user", "sign-out", "--email", "alice@example.com"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ended 1 session"), "{out}");
    assert_eq!(alice.me().await.status(), 401);

    let (code, _, err) =
        tokio::task::block_in_place(|| cli(&stack, &["user", "sign-out", "--email", "nobody@example.com"]));
    assert_ne!(code, 0);
    assert!(err.contains("no user"), "{err}");

    // Every operator command speaks JSON when asked to.
    let (code, out, err) =
        tokio::task::block_in_place(|| cli(&stack, &["--json", "pairing", "create", "--owner", "alice@example.com"]));
    assert_eq!(code, 0, "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).expect("JSON output");
    assert_eq!(created["code"].as_str().map(str::len), Some(9), "{out}");
    let (code, out, err) =
        tokio::task::block_in_place(|| cli(&stack, &["user", "sign-out", "--email", "alice@example.com", "--json"]));
    assert_eq!(code, 0, "{err}");
    let ended: serde_json::Value = serde_json::from_str(&out).expect("JSON output");
    assert_eq!(ended["email"], "alice@example.com");
    assert_eq!(ended["ended_sessions"], 0);
}
