//! The same tunnel path on PostgreSQL (the store tests cover the queries;
//! this covers the wiring).

use edgelink_e2e::{Db, Options, SECRET, Stack, http, origin};

#[tokio::test]
async fn forwarding_and_registry_work_on_postgres() {
    let Some(stack) = Stack::start_with(Options { db: Db::Postgres, ..Options::default() }).await else {
        eprintln!("SKIPPED forwarding_and_registry_work_on_postgres: EDGELINK_TEST_POSTGRES_URL is not set");
        return;
    };
    let (device, agent, session) = stack.connected_device("alice@example.com").await;
    let stored = stack.store.open_session_for_device(&device.owner_id, &device.id).await.unwrap().unwrap();
    assert_eq!(stored.id, session.token);
    let resp = http().get(stack.forward_url(&session.token, "/hello")).bearer_auth(SECRET).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), origin::HELLO);
    agent.stop().await;
    stack.wait_no_session(&device.id, std::time::Duration::from_secs(3)).await;
}

/// Two remote-proxy instances and two api-server instances on one
/// PostgreSQL: devices spread over both relays are reachable through either
/// api-server, because each api-server looks up the relay that holds the
/// device in the shared session registry.
#[tokio::test]
async fn devices_on_two_relays_are_reachable_through_either_api_server() {
    let options = Options { db: Db::Postgres, dev_idp: true, ..Options::default() };
    let Some(stack) = Stack::start_with(options).await else {
        eprintln!(
            "SKIPPED devices_on_two_relays_are_reachable_through_either_api_server: EDGELINK_TEST_POSTGRES_URL is not set"
        );
        return;
    };
    let relay2 = stack.extra_relay().await;
    let api2 = stack.extra_api().await;
    let alice = edgelink_e2e::signin::Browser::new(&stack.api_url);
    alice.sign_in(&stack.idp.as_ref().unwrap().issuer, "alice").await;
    let me: serde_json::Value = alice.me().await.json().await.unwrap();
    let owner = me["id"].as_str().unwrap();

    // One device on each relay.
    let on_first = stack.add_device("alice@example.com").await;
    let on_second = stack.add_device("alice@example.com").await;
    assert_eq!(on_first.owner_id, owner);
    let mut a = stack.spawn_agent(&on_first);
    let mut cfg = stack.agent_config(&on_second);
    cfg.tunnel_url = format!("ws://{}/tunnel", relay2.tunnel_addr);
    let mut b = stack.spawn_agent_with(cfg, &on_second);
    a.connected().await;
    b.connected().await;
    let s1 = stack.wait_session_row(&on_first, None).await;
    let s2 = stack.wait_session_row(&on_second, None).await;
    assert_ne!(s1.relay_id, s2.relay_id, "the devices are on different relays");

    // The browser's cookie works at both api-servers (shared keys and store).
    for api in [stack.api_url.as_str(), api2.url.as_str()] {
        for device in [&on_first, &on_second] {
            let resp = alice.client.get(format!("{api}/api/v1/devices/{}/http/hello", device.id)).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{api} → {}", device.id);
            assert_eq!(resp.text().await.unwrap(), origin::HELLO);
        }
        let list: serde_json::Value =
            alice.client.get(format!("{api}/api/v1/devices?status=online")).send().await.unwrap().json().await.unwrap();
        assert_eq!(list["total"], 2, "{api}");
    }
    a.stop().await;
    b.stop().await;
    relay2.stop().await;
}
