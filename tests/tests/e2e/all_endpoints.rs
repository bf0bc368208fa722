//! Every api-server route refuses anonymous callers with 401 and the error
//! body, except a short explicit allowlist.
//!
//! Why a route added without authentication fails this test:
//! * [`edgelink_api::router`] is built from [`edgelink_api::routes::routes`]
//!   and nothing else; each entry must declare an `Access`, and the gate
//!   enforcing it wraps every handler. There is no other way to register a
//!   route.
//! * This test walks that same list (not a copy): a new `Access::Public`
//!   entry that is not in [`ALLOWLIST`] fails
//!   [`only_allowlisted_routes_are_public`]; every other entry is called
//!   without credentials (and with a forged cookie) over HTTP and must
//!   answer 401 with the error body.
//! * [`the_check_catches_an_added_public_route`] feeds the check a table with
//!   one extra public route and shows it fails.

use edgelink_api::principal::Access;
use edgelink_api::routes::routes;
use edgelink_e2e::Stack;
use edgelink_protocol::error::ErrorBody;
use reqwest::Method;

/// The routes anyone may call (SPEC §6: login, callback, health, JWKS,
/// device challenge/verify/refresh, pairing exchange; and seed 000's
/// health, node login and registration, which needs a pairing code or a
/// token that the handler checks). Keep it short.
const ALLOWLIST: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/.well-known/jwks.json"),
    ("POST", "/api/v1/auth/challenge"),
    ("POST", "/api/v1/auth/verify"),
    ("POST", "/api/v1/auth/refresh"),
    ("GET", "/api/auth/login"),
    ("GET", "/api/auth/callback"),
    ("POST", "/api/v1/pairings/exchange"),
    ("POST", "/api/v1/auth/register"),
    ("POST", "/api/v1/auth/login"),
    ("GET", "/api/v1/health"),
    // Seed 001's Socket.IO endpoint: Engine.IO's handshake is anonymous;
    // the /proxy namespace refuses a connection without a valid proxyId
    // and apiKey (tests/tests/e2e/intermediaries.rs).
    ("GET", "/socket.io/"),
    ("POST", "/socket.io/"),
];

/// Public routes of `table` that the allowlist does not name.
fn unlisted_public_routes(table: &[(String, String, Access)]) -> Vec<String> {
    table
        .iter()
        .filter(|(_, _, access)| *access == Access::Public)
        .filter(|(m, p, _)| !ALLOWLIST.iter().any(|(am, ap)| am == m && ap == p))
        .map(|(m, p, _)| format!("{m} {p}"))
        .collect()
}

fn table() -> Vec<(String, String, Access)> {
    routes().into_iter().map(|r| (r.method.to_string(), r.path.to_owned(), r.access)).collect()
}

/// `{name}` and `{*name}` segments replaced by a value.
fn concrete(path: &str) -> String {
    path.split('/').map(|seg| if seg.starts_with('{') { "x0" } else { seg }).collect::<Vec<_>>().join("/")
}

#[test]
fn only_allowlisted_routes_are_public() {
    let table = table();
    assert_eq!(unlisted_public_routes(&table), Vec::<String>::new(), "routes without authentication");
    for (m, p) in ALLOWLIST {
        assert!(table.iter().any(|(tm, tp, _)| tm == m && tp == p), "allowlisted {m} {p} is not a route any more");
    }
}

#[test]
fn the_check_catches_an_added_public_route() {
    let mut table = table();
    table.push(("POST".into(), "/api/v1/devices/{id}/oops".into(), Access::Public));
    assert_eq!(unlisted_public_routes(&table), vec!["POST /api/v1/devices/{id}/oops".to_owned()]);
}

#[tokio::test]
async fn every_other_route_answers_401_with_the_error_body_without_credentials() {
    let stack = Stack::start().await;
    let client = reqwest::Client::new();
    let device = stack.add_device("alice@example.com").await;
    let key = edgelink_auth::signing::SigningKey::load_or_generate(&stack.signing_key_file).unwrap().0;
    let issuer = edgelink_auth::token::TokenIssuer::new(&key, edgelink_protocol::claims::DEFAULT_ISSUER, 300);
    let (device_token, _) = issuer.issue(&device.id, &device.owner_id, edgelink_store::now_ms() / 1000).unwrap();
    let mut checked = 0;
    for (method, path, access) in table() {
        if access == Access::Public {
            continue;
        }
        let url = format!("{}{}", stack.api_url, concrete(&path));
        // `*` routes take every method; try a safe and an unsafe one.
        let methods = match method.as_str() {
            "*" => vec![Method::GET, Method::POST],
            m => vec![Method::from_bytes(m.as_bytes()).unwrap()],
        };
        for method in methods {
            for cookie in [None, Some("edgelink_session=forged.cookie")] {
                let mut req = client.request(method.clone(), &url).header("origin", &stack.api_url);
                if let Some(c) = cookie {
                    req = req.header("cookie", c);
                }
                let resp = req.send().await.unwrap();
                assert_eq!(resp.status(), 401, "{method} {path} with cookie {cookie:?}");
                let body: ErrorBody =
                    resp.json().await.unwrap_or_else(|e| panic!("{method} {path}: no error body: {e}"));
                assert_eq!(body.code / 1000, 401, "{method} {path}");
                assert_eq!(body.path, concrete(&path));
            }
            // A device token is a valid credential of the wrong kind on user
            // routes: 403, not 401.
            if access == Access::User {
                let resp = client
                    .request(method.clone(), &url)
                    .header("origin", &stack.api_url)
                    .bearer_auth(&device_token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 403, "{method} {path} with a device token");
            }
            let resp = client.request(method.clone(), &url).bearer_auth("garbage").send().await.unwrap();
            assert_eq!(resp.status(), 401, "{method} {path} with a garbage bearer token");
        }
        checked += 1;
    }
    assert!(checked >= 4, "the table has authenticated routes to check");
}
