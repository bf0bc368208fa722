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
