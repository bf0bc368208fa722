//! Device telemetry: a heartbeat over the tunnel (the agent's real host
//! values) and one over REST (a device without the agent) both show in the
//! metrics API, for their owner only.

use std::time::Duration;

use edgelink_agent::credentials::AuthClient;
use edgelink_e2e::signin::Browser;
use edgelink_e2e::{Options, Stack, http, wait_until};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

fn fast_flush(c: &mut edgelink_api::ApiConfig) {
    c.telemetry_flush_interval = Duration::from_millis(200);
}

async fn metrics(browser: &Browser, api: &str, device: &str) -> (u16, Value) {
    let resp = browser.client.get(format!("{api}/api/v1/devices/{device}/metrics?step=1m")).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn heartbeats_over_the_tunnel_and_over_rest_show_in_the_metrics_api() {
    let mut options = Options { dev_idp: true, api: fast_flush, ..Options::default() };
    options.relay.telemetry_flush_interval = Duration::from_millis(200);
    let stack = Stack::start_with(options).await.unwrap();
    let alice = Browser::new(&stack.api_url);
    alice.sign_in(&stack.idp.as_ref().unwrap().issuer, "alice").await;

    // Over the tunnel: the agent's first heartbeat, with this host's values.
    let (agent_device, agent, _) = stack.connected_device("alice@example.com").await;
    let point = wait_until("a tunnel heartbeat in the metrics API", Duration::from_secs(10), || async {
        let (_, m) = metrics(&alice, &stack.api_url, &agent_device.id).await;
        m["points"].as_array().and_then(|p| p.last().cloned())
    })
    .await;
    assert!(point["memory_total_bytes"].as_u64().unwrap_or(0) > 0, "{point}");
    assert!(point["disk_total_bytes"].as_u64().unwrap_or(0) > 0, "{point}");
    assert!(point["at"].as_i64().is_some());

    // Over REST, with the device's own access token.
    let plain = stack.add_device("alice@example.com").await;
    let tokens = AuthClient::new(http(), &stack.api_url, &plain.id).authenticate(&plain.key()).await.unwrap();
    let access = tokens.access.expose_secret().to_owned();
    let beat = |id: &str, body: Value| {
        http().post(format!("{}/api/v1/devices/{id}/heartbeat", stack.api_url)).bearer_auth(&access).json(&body).send()
    };
    let resp =
        beat(&plain.id, json!({"cpu_percent": 42.0, "custom": {"temp_c": 40.5}, "endpoint": "ignored"})).await.unwrap();
    assert_eq!(resp.status(), 200);
    let ack: Value = resp.json().await.unwrap();
    assert_eq!(ack["interval_secs"], 30);
    let point = wait_until("a REST heartbeat in the metrics API", Duration::from_secs(10), || async {
        let (_, m) = metrics(&alice, &stack.api_url, &plain.id).await;
        m["points"].as_array().and_then(|p| p.last().cloned())
    })
    .await;
    assert_eq!((point["cpu_percent"].as_f64(), point["custom"]["temp_c"].as_f64()), (Some(42.0), Some(40.5)));
    // A device speaks only for itself; broken bodies are refused.
    assert_eq!(beat(&agent_device.id, json!({})).await.unwrap().status(), 403);
    assert_eq!(beat(&plain.id, json!({"load_1m": -1})).await.unwrap().status(), 400);
    // Another user sees nothing of it.
    let bob = Browser::new(&stack.api_url);
    bob.sign_in(&stack.idp.as_ref().unwrap().issuer, "bob").await;
    assert_eq!(metrics(&bob, &stack.api_url, &plain.id).await.0, 404);
    let (status, _) = {
        let resp = alice
            .client
            .get(format!("{}/api/v1/devices/{}/metrics?step=5m", stack.api_url, plain.id))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), ())
    };
    assert_eq!(status, 400);

    // Discovery with a device token: the owner's devices, never another's.
    let bobs = stack.add_device("bob@example.com").await;
    let seen: Value = http()
        .get(format!("{}/api/v1/devices?load_below=1000", stack.api_url))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = seen["devices"].as_array().unwrap().iter().filter_map(|d| d["id"].as_str()).collect();
    assert!(ids.contains(&agent_device.id.as_str()), "{seen}");
    assert!(!ids.contains(&bobs.id.as_str()), "{seen}");
    let all: Value = http()
        .get(format!("{}/api/v1/devices", stack.api_url))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["total"], 2, "alice's two devices: {all}");
    agent.stop().await;
}
