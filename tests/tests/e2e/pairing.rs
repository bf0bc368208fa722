//! Pairing: codes made by a signed-in user (real dev provider), exchanged
//! by devices: exactly once, with clear errors, rate limited.

use edgelink_auth::agent_key::AgentKey;
use edgelink_e2e::signin::Browser;
use edgelink_e2e::{Options, Stack};
use edgelink_protocol::error::ErrorBody;
use edgelink_store::now_ms;
use reqwest::Method;

async fn alice(stack: &Stack) -> Browser {
    let browser = Browser::new(&stack.api_url);
    browser.sign_in(&stack.idp.as_ref().expect("dev idp").issuer, "alice").await;
    browser
}

async fn new_code(browser: &Browser) -> serde_json::Value {
    let resp = browser.same_origin(Method::POST, "/api/v1/pairings").send().await.unwrap();
    assert_eq!(resp.status(), 201);
    resp.json().await.unwrap()
}

fn exchange_body(code: &str, name: &str) -> serde_json::Value {
    let key = AgentKey::generate().unwrap();
    serde_json::json!({"code": code, "public_key": key.public_key_pem(), "name": name, "type": "camera",
                       "capabilities": ["http"], "metadata": {"site": "lab"},
                       // A newer agent's field: ignored, not refused.
                       "endpoint": "http://10.0.0.5:8080"})
}

async fn exchange(stack: &Stack, body: &serde_json::Value) -> reqwest::Response {
    reqwest::Client::new().post(format!("{}/api/v1/pairings/exchange", stack.api_url)).json(body).send().await.unwrap()
}

#[tokio::test]
async fn fifty_concurrent_exchanges_of_one_code_pair_exactly_one_device() {
    let options = Options { dev_idp: true, api: |c| c.pairing_exchange_per_minute = 1000, ..Options::default() };
    let stack = Stack::start_with(options).await.unwrap();
    let browser = alice(&stack).await;
    let created = new_code(&browser).await;
    let code = created["code"].as_str().unwrap().to_owned();
    assert!(created["command"].as_str().unwrap().contains(&format!("--code {code}")));

    let bodies: Vec<_> = (0..50).map(|i| exchange_body(&code.to_lowercase(), &format!("dev-{i}"))).collect();
    let results = futures::future::join_all(bodies.iter().map(|b| exchange(&stack, b))).await;
    let mut created = 0;
    for resp in results {
        match resp.status().as_u16() {
            201 => {
                created += 1;
                let body: serde_json::Value = resp.json().await.unwrap();
                assert_eq!(body["tunnel_url"], stack.tunnel_url());
                assert_eq!(body["api_url"], stack.api_url);
            }
            409 => assert_eq!(resp.json::<ErrorBody>().await.unwrap().error, "pairing_code_used"),
            other => panic!("unexpected {other}: {}", resp.text().await.unwrap()),
        }
    }
    assert_eq!(created, 1);
    let me: serde_json::Value = browser.me().await.json().await.unwrap();
    assert_eq!(stack.store.list_devices(me["id"].as_str().unwrap()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn expired_used_unknown_and_malformed_codes_get_clear_errors() {
    let stack = Stack::start_with(Options { dev_idp: true, ..Options::default() }).await.unwrap();
    let browser = alice(&stack).await;
    let me: serde_json::Value = browser.me().await.json().await.unwrap();

    // A bad key is refused before the code is touched: it still works after.
    let code = new_code(&browser).await["code"].as_str().unwrap().to_owned();
    let mut bad = exchange_body(&code, "cam");
    bad["public_key"] = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".into();
    let resp = exchange(&stack, &bad).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<ErrorBody>().await.unwrap().error, "bad_request");
    assert_eq!(exchange(&stack, &exchange_body(&code, "cam")).await.status(), 201);
    let resp = exchange(&stack, &exchange_body(&code, "cam")).await;
    assert_eq!(resp.status(), 409);
    assert!(resp.json::<ErrorBody>().await.unwrap().message.contains("already used"));

    // Expired: a code whose time ran out.
    let expired = "ABCD-EFGH";
    let now = now_ms();
    let hash = edgelink_api::pairing::digests(&stack.cookie_keys(), &expired.replace('-', "")).remove(0);
    stack.store.create_pairing(me["id"].as_str().unwrap(), &hash, now - 1_200_000, now - 600_000, 5).await.unwrap();
    let resp = exchange(&stack, &exchange_body(expired, "cam")).await;
    assert_eq!(resp.status(), 400);
    let body = resp.json::<ErrorBody>().await.unwrap();
    assert_eq!(body.error, "pairing_code_expired");
    assert!(body.message.contains("expired"));

    let resp = exchange(&stack, &exchange_body("ZZZZ-ZZZZ", "cam")).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<ErrorBody>().await.unwrap().error, "pairing_code_invalid");
    let resp = exchange(&stack, &exchange_body("not a code", "cam")).await;
    assert_eq!(resp.json::<ErrorBody>().await.unwrap().error, "pairing_code_invalid");
    let resp = exchange(&stack, &serde_json::json!({"code": "ABCD-EFGH"})).await;
    assert_eq!(resp.status(), 400, "missing fields");

    // At most five live codes per user (used and expired ones do not count).
    for _ in 0..5 {
        new_code(&browser).await;
    }
    let resp = browser.same_origin(Method::POST, "/api/v1/pairings").send().await.unwrap();
    assert_eq!(resp.status(), 429);
}

#[tokio::test]
async fn an_exchange_flood_from_one_address_is_rate_limited() {
    let stack = Stack::start().await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let resp = exchange(&stack, &serde_json::json!({"code": "ZZZZ-ZZZZ", "public_key": "x", "name": "n"})).await;
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 {
            assert!(resp.headers().contains_key("retry-after"));
            assert_eq!(resp.json::<ErrorBody>().await.unwrap().error, "rate_limited");
        }
    }
    assert_eq!(&statuses[..10], &[400; 10], "{statuses:?}");
    assert_eq!(&statuses[10..], &[429, 429]);
}

#[tokio::test]
async fn behind_a_trusted_load_balancer_each_client_address_has_its_own_limit() {
    let options = Options { api: |c| c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()], ..Options::default() };
    let stack = Stack::start_with(options).await.unwrap();
    let body = serde_json::json!({"code": "ZZZZ-ZZZZ", "public_key": "x", "name": "n"});
    let send = |xff: &'static str| {
        reqwest::Client::new()
            .post(format!("{}/api/v1/pairings/exchange", stack.api_url))
            .header("x-forwarded-for", xff)
            .json(&body)
            .send()
    };
    for _ in 0..10 {
        assert_eq!(send("203.0.113.1").await.unwrap().status(), 400);
    }
    assert_eq!(send("203.0.113.1").await.unwrap().status(), 429, "the same client is limited");
    assert_eq!(send("203.0.113.2").await.unwrap().status(), 400, "another client behind the same proxy is not");
    // A client cannot escape by prepending its own header value: the
    // nearest untrusted hop counts.
    assert_eq!(send("198.51.100.7, 203.0.113.1").await.unwrap().status(), 429);
    // IPv6 clients count per /64: one host holds all of it.
    for _ in 0..10 {
        assert_eq!(send("2001:db8:1:2::1").await.unwrap().status(), 400);
    }
    assert_eq!(send("2001:db8:1:2:ffff:ffff:ffff:ffff").await.unwrap().status(), 429, "same /64");
    assert_eq!(send("2001:db8:1:3::1").await.unwrap().status(), 400, "another /64");
}

#[tokio::test]
async fn wrong_codes_from_everywhere_spend_one_global_budget() {
    let options = Options {
        dev_idp: true,
        api: |c| {
            c.pairing_exchange_per_minute = 1000;
            c.pairing_failures_per_hour = 3;
        },
        ..Options::default()
    };
    let stack = Stack::start_with(options).await.unwrap();
    let browser = alice(&stack).await;
    let good = new_code(&browser).await["code"].as_str().unwrap().to_owned();
    // Guesses (as from many addresses: the budget is not per address).
    for guess in ["ZZZZ-ZZZ2", "ZZZZ-ZZZ3", "ZZZZ-ZZZ4"] {
        let resp = exchange(&stack, &exchange_body(guess, "guess")).await;
        assert_eq!(resp.json::<ErrorBody>().await.unwrap().error, "pairing_code_invalid");
    }
    // Spent: even a right code waits, so guessing gains nothing.
    let resp = exchange(&stack, &exchange_body(&good, "cam")).await;
    assert_eq!(resp.status(), 429);
    let wait: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(wait > 60, "{wait}");
    assert_eq!(resp.json::<ErrorBody>().await.unwrap().error, "rate_limited");
}
