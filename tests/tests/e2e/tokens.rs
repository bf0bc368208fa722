//! Programs with API tokens: the whole lifecycle, scopes on every route of
//! the route table, expiry, address allowlists, and that a token cannot
//! mint a broader one.

use std::time::Duration;

use edgelink_api::principal::{Access, Need};
use edgelink_e2e::signin::Browser;
use edgelink_e2e::{Options, Stack};
use edgelink_protocol::error::ErrorBody;
use reqwest::Method;
use serde_json::{Value, json};

async fn signed_in(stack: &Stack, user: &str) -> Browser {
    let browser = Browser::new(&stack.api_url);
    browser.sign_in(&stack.idp.as_ref().expect("dev idp").issuer, user).await;
    browser
}

/// Creates a token through the browser session; returns (id, secret).
async fn token(browser: &Browser, body: Value) -> (String, String) {
    browser.api_token(body).await
}

fn call(stack: &Stack, method: Method, path: &str, secret: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new().request(method, format!("{}{path}", stack.api_url)).bearer_auth(secret)
}

async fn error_of(resp: reqwest::Response) -> (u16, ErrorBody) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not an error body ({e}): {text}")))
}

#[tokio::test]
async fn a_token_is_shown_once_used_listed_and_revoked_at_once() {
    let stack = Stack::start_with(Options { dev_idp: true, ..Options::default() }).await.unwrap();
    let alice = signed_in(&stack, "alice").await;
    let (id, secret) = token(&alice, json!({"name": "ci", "scopes": ["device:read"], "expires_in_days": 90})).await;
    assert!(secret.starts_with("elk_") && secret.len() == 42, "{secret}");

    // Used like a session (no cookie, no Origin needed), as alice.
    let resp = call(&stack, Method::GET, "/api/v1/devices", &secret).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let me: Value = call(&stack, Method::GET, "/api/auth/me", &secret).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["email"], "alice@example.com");

    // Listed without its secret, with its use recorded.
    let list = alice.client.get(format!("{}/api/v1/tokens", stack.api_url)).send().await.unwrap();
    let text = list.text().await.unwrap();
    assert!(!text.contains(&secret), "the secret is shown again: {text}");
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list["tokens"][0]["id"], id.as_str());
    assert_eq!(list["tokens"][0]["scopes"], json!(["device:read"]));
    assert!(list["tokens"][0]["last_used_at"].is_string());
    assert!(list["tokens"][0]["expires_at"].is_string());

    // Revoked: the very next request is refused.
    let resp = alice.same_origin(Method::DELETE, &format!("/api/v1/tokens/{id}")).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    let (status, body) = error_of(call(&stack, Method::GET, "/api/v1/devices", &secret).send().await.unwrap()).await;
    assert_eq!((status, body.code, body.error.as_str()), (401, 401002, "token_invalid"));
    let resp = alice.same_origin(Method::DELETE, &format!("/api/v1/tokens/{id}")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    // A made-up or mistyped token is refused the same way.
    let mut typo = secret.clone().into_bytes();
    typo[8] = if typo[8] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    let (status, _) = error_of(call(&stack, Method::GET, "/api/v1/devices", &typo).send().await.unwrap()).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn an_expired_token_is_refused_with_token_expired() {
    let stack = Stack::start_with(Options { dev_idp: true, ..Options::default() }).await.unwrap();
    let alice = signed_in(&stack, "alice").await;
    let me: Value = alice.me().await.json().await.unwrap();
    // Made 31 days ago with a 30-day lifetime.
    let tokens = edgelink_tokens::ApiTokens::new(stack.store.clone(), stack.cookie_keys(), Duration::ZERO);
    let req = edgelink_tokens::CreateRequest {
        name: "old".into(),
        scopes: vec!["device:read".into()],
        expires_in_days: Some(30),
        allowed_ips: vec![],
    };
    let then = edgelink_store::now_ms() - 31 * 24 * 3600 * 1000;
    let (_, secret) =
        tokens.create(me["id"].as_str().unwrap(), &edgelink_tokens::Scopes::all(), &req, then).await.unwrap();
    let (status, body) = error_of(call(&stack, Method::GET, "/api/v1/devices", &secret).send().await.unwrap()).await;
    assert_eq!((status, body.code, body.error.as_str()), (401, 401003, "token_expired"));
}

/// Every user route of the route table with a concrete path.
fn user_routes() -> Vec<(Method, String, Need)> {
    let mut out = Vec::new();
    for r in edgelink_api::routes::routes() {
        if !matches!(r.access, Access::User | Access::UserOrDevice) {
            continue;
        }
        let path = r.path.replace("{id}", "d-123").replace("{*path}", "x");
        if r.method.as_str() == "*" {
            out.push((Method::GET, path.clone(), r.need));
            out.push((Method::POST, path, r.need));
        } else {
            out.push((r.method.clone(), path, r.need));
        }
    }
    out
}

#[tokio::test]
async fn every_route_refuses_a_token_without_its_scope() {
    let stack = Stack::start_with(Options { dev_idp: true, ..Options::default() }).await.unwrap();
    let alice = signed_in(&stack, "alice").await;
    let all = edgelink_tokens::Scope::ALL;
    let mut checked = 0;
    for (method, path, need) in user_routes() {
        let needed = match need {
            Need::Nothing => continue,
            Need::BrowserSession => {
                let (_, secret) = token(&alice, json!({"name": "any", "scopes": ["device:manage"]})).await;
                let (status, body) = error_of(call(&stack, method.clone(), &path, &secret).send().await.unwrap()).await;
                assert_eq!((status, body.error.as_str()), (403, "forbidden"), "{method} {path}");
                checked += 1;
                continue;
            }
            Need::Scope(s) => s,
            Need::ByMethod(read, write) => {
                if matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
                    read
                } else {
                    write
                }
            }
        };
        // Every other scope, without the one this route needs (nor its
        // family's manage).
        let others: Vec<&str> = all
            .iter()
            .filter(|s| !edgelink_tokens::Scopes::from_text(s.as_str()).allows(needed))
            .map(|s| s.as_str())
            .collect();
        let (id, secret) = token(&alice, json!({"name": "narrow", "scopes": others})).await;
        let (status, body) = error_of(call(&stack, method.clone(), &path, &secret).send().await.unwrap()).await;
        assert_eq!((status, body.code, body.error.as_str()), (403, 403002, "insufficient_scope"), "{method} {path}");
        assert!(body.message.contains(needed.as_str()), "{}", body.message);
        alice.same_origin(Method::DELETE, &format!("/api/v1/tokens/{id}")).send().await.unwrap();
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} routes checked");
}

#[tokio::test]
async fn a_token_cannot_mint_a_broader_token() {
    let stack = Stack::start_with(Options { dev_idp: true, ..Options::default() }).await.unwrap();
    let alice = signed_in(&stack, "alice").await;
    let (_, minter) = token(&alice, json!({"name": "minter", "scopes": ["token:manage", "device:read"]})).await;
    let resp = call(&stack, Method::POST, "/api/v1/tokens", &minter)
        .json(&json!({"name": "wider", "scopes": ["device:write"]}))
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(resp).await;
    assert_eq!((status, body.error.as_str()), (403, "insufficient_scope"));
    let resp = call(&stack, Method::POST, "/api/v1/tokens", &minter)
        .json(&json!({"name": "same", "scopes": ["device:read"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "a bearer token needs no Origin");
    for bad in [
        json!({"name": "x", "scopes": ["device:reed"]}),
        json!({"name": "x", "scopes": []}),
        json!({"name": "x", "scopes": ["device:read"], "expires_in_days": 7}),
        json!({"name": "x", "scopes": ["device:read"], "allowed_ips": ["10.0.0.0/33"]}),
    ] {
        let (status, body) =
            error_of(call(&stack, Method::POST, "/api/v1/tokens", &minter).json(&bad).send().await.unwrap()).await;
        assert_eq!((status, body.error.as_str()), (400, "bad_request"), "{bad}");
    }
}

#[tokio::test]
async fn a_token_works_only_from_its_allowlist() {
    let options = Options {
        dev_idp: true,
        api: |c| c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()],
        ..Options::default()
    };
    let stack = Stack::start_with(options).await.unwrap();
    let alice = signed_in(&stack, "alice").await;
    for (allowed, inside, outside) in [
        ("203.0.113.7", "203.0.113.7", "203.0.113.8"),
        ("198.51.100.0/24", "198.51.100.200", "198.51.101.1"),
        ("2001:db8::/32", "2001:db8:5::1", "2001:db9::1"),
    ] {
        let (_, secret) =
            token(&alice, json!({"name": "ci", "scopes": ["device:read"], "allowed_ips": [allowed]})).await;
        let from =
            |ip: &str| call(&stack, Method::GET, "/api/v1/devices", &secret).header("x-forwarded-for", ip).send();
        assert_eq!(from(inside).await.unwrap().status(), 200, "{allowed} from {inside}");
        let (status, body) = error_of(from(outside).await.unwrap()).await;
        assert_eq!(
            (status, body.code, body.error.as_str()),
            (403, 403005, "ip_not_allowed"),
            "{allowed} from {outside}"
        );
    }
}

fn small_limits(c: &mut edgelink_api::ApiConfig) {
    c.rate_limits.token_per_hour = 6;
    c.rate_limits.sync_interval = Duration::from_millis(100);
}

fn remaining(resp: &reqwest::Response) -> u32 {
    resp.headers()["x-ratelimit-remaining"].to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn every_answer_carries_the_rate_limit_and_the_limit_is_a_429_with_retry_after() {
    let options = Options { dev_idp: true, api: small_limits, ..Options::default() };
    let stack = Stack::start_with(options).await.unwrap();
    let alice = signed_in(&stack, "alice").await;
    let (_, secret) = token(&alice, json!({"name": "ci", "scopes": ["device:read"]})).await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        let resp = call(&stack, Method::GET, "/api/v1/devices", &secret).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-ratelimit-limit"], "6");
        let reset: i64 = resp.headers()["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
        let now = edgelink_store::now_ms() / 1000;
        assert!(reset > now && reset <= now + 3600, "reset {reset} now {now}");
        seen.push(remaining(&resp));
    }
    assert_eq!(seen, [5, 4, 3, 2, 1, 0]);
    let resp = call(&stack, Method::GET, "/api/v1/devices", &secret).send().await.unwrap();
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    assert_eq!(remaining(&resp), 0);
    let (status, body) = error_of(resp).await;
    assert_eq!((status, body.code, body.error.as_str()), (429, 429001, "rate_limited"));
    assert_eq!(body.retry_after, Some(retry), "retry_after in the body too");
    // Another token, and the browser session, have limits of their own.
    let (_, other) = token(&alice, json!({"name": "other", "scopes": ["device:read"]})).await;
    assert_eq!(call(&stack, Method::GET, "/api/v1/devices", &other).send().await.unwrap().status(), 200);
    let resp = alice.client.get(format!("{}/api/v1/devices", stack.api_url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-ratelimit-limit"], "20000");
}

#[tokio::test]
async fn two_api_servers_on_postgresql_share_one_limit() {
    let options = Options { db: edgelink_e2e::Db::Postgres, dev_idp: true, api: small_limits, ..Options::default() };
    let Some(stack) = Stack::start_with(options).await else {
        eprintln!("SKIPPED two_api_servers_on_postgresql_share_one_limit: EDGELINK_TEST_POSTGRES_URL is not set");
        return;
    };
    let api2 = stack.extra_api_with(small_limits).await;
    let alice = signed_in(&stack, "alice").await;
    let (id, secret) = token(&alice, json!({"name": "ci", "scopes": ["device:read"]})).await;
    // The shared count, as the instances see it after their syncs.
    let shared = |at_least: i64| {
        let (store, key) = (stack.store.clone(), format!("tok:{id}"));
        async move {
            edgelink_e2e::wait_until("the instances' counts shared", Duration::from_secs(15), || async {
                let now = edgelink_store::now_ms();
                let total = store.add_to_rate_counter(&key, now - now.rem_euclid(3_600_000), 0).await.unwrap();
                (total >= at_least).then_some(())
            })
            .await
        }
    };
    let at = |base: &str| reqwest::Client::new().get(format!("{base}/api/v1/devices")).bearer_auth(&secret).send();
    for _ in 0..4 {
        assert_eq!(at(&stack.api_url).await.unwrap().status(), 200);
    }
    shared(4).await;
    // The second instance learns the first one's 4 at its first sync.
    assert_eq!(at(&api2.url).await.unwrap().status(), 200);
    // Its flush of that request (5 in all) is the sync that taught it the total.
    shared(5).await;
    let resp = at(&api2.url).await.unwrap();
    assert_eq!((resp.status().as_u16(), remaining(&resp)), (200, 0), "6 in all, 4 of them at the first instance");
    assert_eq!(at(&api2.url).await.unwrap().status(), 429);
}

const AUDIENCE: &str = "https://edgelink.test/api";

fn with_service_clients(c: &mut edgelink_api::ApiConfig) {
    if let Some(o) = c.oidc.as_mut() {
        o.service_audience = Some(AUDIENCE.into());
    }
}

/// A client-credentials access token from the development provider.
async fn service_token(stack: &Stack, resource: &str, scope: &str) -> String {
    let issuer = &stack.idp.as_ref().expect("dev idp").issuer;
    let resp: Value = reqwest::Client::new()
        .post(format!("{issuer}/token"))
        .basic_auth("edgelink-service", Some("dev-confidential-secret"))
        .form(&[("grant_type", "client_credentials"), ("scope", scope), ("resource", resource)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    resp["access_token"].as_str().unwrap_or_else(|| panic!("no token: {resp}")).to_owned()
}

#[tokio::test]
async fn a_service_client_token_is_accepted_for_our_audience_with_its_scopes() {
    let options = Options { dev_idp: true, api: with_service_clients, ..Options::default() };
    let stack = Stack::start_with(options).await.unwrap();
    let token = service_token(&stack, AUDIENCE, "device:read pairing:create").await;

    let resp = call(&stack, Method::GET, "/api/v1/devices", &token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-ratelimit-limit"], "500", "the service client's own limit");
    let me: Value = call(&stack, Method::GET, "/api/auth/me", &token).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["name"], "service edgelink-service");
    assert_eq!(me["email_verified"], false);
    // Its scopes decide: it may pair devices (they will be its own) but
    // not delete any.
    let resp = call(&stack, Method::POST, "/api/v1/pairings", &token).send().await.unwrap();
    assert_eq!(resp.status(), 201, "no Origin needed for a bearer token");
    let (status, body) =
        error_of(call(&stack, Method::DELETE, "/api/v1/devices/d-1", &token).send().await.unwrap()).await;
    assert_eq!((status, body.error.as_str()), (403, "insufficient_scope"));

    // A token of the same provider for another audience is refused.
    let other = service_token(&stack, "https://someone-else.test/api", "device:read").await;
    let (status, body) = error_of(call(&stack, Method::GET, "/api/v1/devices", &other).send().await.unwrap()).await;
    assert_eq!((status, body.error.as_str()), (401, "token_invalid"));
    // With service clients off, even the right audience is no credential.
    let plain = Stack::start_with(Options { dev_idp: true, ..Options::default() }).await.unwrap();
    let token = service_token(&plain, AUDIENCE, "device:read").await;
    let (status, _) = error_of(call(&plain, Method::GET, "/api/v1/devices", &token).send().await.unwrap()).await;
    assert_eq!(status, 401);
}
