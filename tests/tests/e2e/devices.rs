//! A signed-in user's devices through api-server: pairing, listing,
//! reaching the local web service (HTTP and WebSocket) via the relay that
//! holds the tunnel, sessions, deletion, and strict tenancy.

use std::time::Duration;

use edgelink_agent::Status;
use edgelink_api::principal::Access;
use edgelink_auth::agent_key::AgentKey;
use edgelink_e2e::signin::Browser;
use edgelink_e2e::{Device, Options, Stack, wait_for, ws_echo, ws_refused};
use edgelink_protocol::error::ErrorBody;
use reqwest::Method;

async fn signed_in(stack: &Stack, user: &str) -> Browser {
    let browser = Browser::new(&stack.api_url);
    browser.sign_in(&stack.idp.as_ref().expect("dev idp").issuer, user).await;
    browser
}

/// Pairs a new device for `browser`'s user through the real flow; returns
/// it as the harness knows devices.
async fn pair(stack: &Stack, browser: &Browser, name: &str) -> Device {
    let code: serde_json::Value =
        browser.same_origin(Method::POST, "/api/v1/pairings").send().await.unwrap().json().await.unwrap();
    let key = AgentKey::generate().unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/pairings/exchange", stack.api_url))
        .json(&serde_json::json!({"code": code["code"], "public_key": key.public_key_pem(), "name": name,
                                  "type": "camera", "capabilities": ["http"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let body: serde_json::Value = resp.json().await.unwrap();
    let me: serde_json::Value = browser.me().await.json().await.unwrap();
    Device {
        id: body["device_id"].as_str().unwrap().to_owned(),
        owner_id: me["id"].as_str().unwrap().to_owned(),
        key_pem: key.private_key_pem(),
    }
}

fn url(stack: &Stack, device: &Device, rest: &str) -> String {
    format!("{}/api/v1/devices/{}{rest}", stack.api_url, device.id)
}

async fn error_body(resp: reqwest::Response) -> ErrorBody {
    resp.json().await.unwrap()
}

/// Sends `req` to the test origin's `/headers` with a caller's
/// `Authorization` and a forged relay-to-relay carrier of it, and checks
/// that neither (nor the session cookie) reached the device; returns the
/// headers the device saw.
async fn credentials_stay_behind(req: reqwest::RequestBuilder) -> serde_json::Value {
    let req = req
        .header("authorization", "Basic YWxpY2U6c2VjcmV0")
        .header("x-edgelink-device-authorization", "Basic Zm9yZ2Vk");
    let seen: serde_json::Value = req.send().await.unwrap().json().await.unwrap();
    assert!(seen.get("cookie").is_none(), "{seen}");
    assert!(seen.get("authorization").is_none(), "{seen}");
    assert!(seen.get("x-edgelink-device-authorization").is_none(), "relay to relay only: {seen}");
    seen
}

#[tokio::test]
async fn alice_pairs_a_device_and_reaches_its_web_service_through_api_server() {
    let stack = Stack::start_with(Options { dev_idp: true, ..Options::default() }).await.unwrap();
    let alice = signed_in(&stack, "alice").await;
    let device = pair(&stack, &alice, "lab camera").await;

    // Offline first: listed as offline, and its web service is a 502.
    let list: serde_json::Value =
        alice.client.get(format!("{}/api/v1/devices", stack.api_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["total"], 1);
    assert_eq!(list["devices"][0]["status"], "offline");
    let resp = alice.client.get(format!("{}/api/v1/devices", stack.api_url)).send().await.unwrap();
    assert_eq!(resp.headers()["cache-control"], "private, no-store", "user data is never cached");
    let resp = alice.client.get(url(&stack, &device, "/http/hello")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(error_body(resp).await.error, "device_unavailable");

    let mut agent = stack.spawn_agent(&device);
    agent.connected().await;
    let session = stack.wait_session(&device.id, None).await;
    let got: serde_json::Value = alice.client.get(url(&stack, &device, "")).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["status"], "online");
    assert_eq!(got["session"]["id"], session.token.as_str());
    assert_eq!(got["capabilities"], serde_json::json!(["http"]));

    // GET with a query string; the caller's credentials never reach the device.
    let resp = alice.client.get(url(&stack, &device, "/http/hello")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-security-policy"].to_str().unwrap().starts_with("sandbox"));
    assert!(resp.text().await.unwrap().contains("hello"));
    let seen = credentials_stay_behind(alice.client.get(url(&stack, &device, "/http/headers?x=1&y=%2F"))).await;
    assert_eq!(seen["x-forwarded-prefix"], format!("/api/v1/devices/{}/http", device.id));
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");

    // A device cannot pass its answer off as the relay's own error.
    let resp = alice.client.get(url(&stack, &device, "/http/spoof-relay-error")).send().await.unwrap();
    assert!(resp.headers().get("x-edgelink-relay-error").is_none());
    assert_eq!(resp.text().await.unwrap(), "device says 404");

    // A streamed POST body both ways (4 MiB).
    let payload = vec![7u8; 4 << 20];
    let echoed = alice
        .same_origin(Method::POST, &format!("/api/v1/devices/{}/http/echo", device.id))
        .body(payload.clone())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload);
    // A request with a body takes api-server's router path: the same
    // headers stay behind there.
    let post = alice.same_origin(Method::POST, &format!("/api/v1/devices/{}/http/headers", device.id));
    credentials_stay_behind(post.body("x")).await;

    // Another application's cookie that is not ASCII (UTF-8, set on a
    // shared parent domain, say) does not sign alice out, on either path.
    use reqwest::cookie::CookieStore as _;
    let api = reqwest::Url::parse(&stack.api_url).unwrap();
    alice.jar.add_cookie_str("lang=espa\u{f1}ol; Path=/", &api);
    let sent = alice.jar.cookies(&api).unwrap();
    assert!(sent.as_bytes().windows(2).any(|w| w == "\u{f1}".as_bytes()), "the jar sends it: {sent:?}");
    assert_eq!(alice.client.get(url(&stack, &device, "/http/hello")).send().await.unwrap().status(), 200);
    let resp = alice.same_origin(Method::POST, &format!("/api/v1/devices/{}/http/echo", device.id)).body("x");
    assert_eq!(resp.send().await.unwrap().status(), 200);
    assert_eq!(alice.me().await.status(), 200);

    // Control paths are not reachable, in any spelling.
    for p in ["/http/.edgelink/v1/info", "/http/%2Eedgelink/v1/info", "/http//.edgelink/v1/info"] {
        let resp = alice.client.get(url(&stack, &device, p)).send().await.unwrap();
        assert_eq!(resp.status(), 403, "{p}");
    }

    // WebSocket through the same route, with the session cookie.
    let cookie = format!("edgelink_session={}", alice.session_cookie().unwrap());
    ws_echo(&url(&stack, &device, "/http/ws"), &[("cookie", &cookie), ("origin", &stack.api_url)]).await;
    // A page on another site cannot open it with the user's cookie (nor can
    // a handshake without Origin), whatever the route.
    for origin in [Some("https://evil.example"), Some("null"), None] {
        let mut headers = vec![("cookie", cookie.as_str())];
        headers.extend(origin.map(|o| ("origin", o)));
        for path in ["/http/ws", ""] {
            let (status, body) = ws_refused(&url(&stack, &device, path), &headers).await;
            assert_eq!(status, 403, "{origin:?} {path}");
            assert!(body.contains("csrf_rejected"), "{body}");
        }
    }

    // A device's answer cannot change api-server's origin's browser state,
    // neither in a plain answer nor in a 101.
    let resp = alice.client.get(url(&stack, &device, "/http/hostile-headers")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    for (name, _) in edgelink_e2e::origin::HOSTILE_HEADERS.iter().filter(|(n, _)| *n != "cache-control") {
        assert!(resp.headers().get(*name).is_none(), "{name} passed through");
    }
    assert_eq!(resp.headers()["cache-control"], "private, no-store");
    let answer =
        ws_echo(&url(&stack, &device, "/http/ws-hostile"), &[("cookie", &cookie), ("origin", &stack.api_url)]).await;
    for (name, _) in edgelink_e2e::origin::HOSTILE_HEADERS.iter().filter(|(n, _)| *n != "cache-control") {
        assert!(answer.get(*name).is_none(), "{name} passed through a 101");
    }
    assert_eq!(answer["cache-control"], "private, no-store");
    // Its redirects stay on its own pages.
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let redirect = |to: &str| {
        no_redirects
            .get(format!(
                "{}?to={}",
                url(&stack, &device, "/http/redirect"),
                edgelink_protocol::paths::encode_segment(to)
            ))
            .header("cookie", &cookie)
            .send()
    };
    let resp = redirect("/login").await.unwrap();
    assert_eq!(resp.headers()["location"].to_str().unwrap(), format!("/api/v1/devices/{}/http/login", device.id));
    let resp = redirect("https://evil.example/phish").await.unwrap();
    assert!(resp.headers().get("location").is_none(), "an open redirect on api-server's origin");

    // Rename; the session is visible and can be closed (the agent comes back).
    let renamed: serde_json::Value = alice
        .same_origin(Method::PATCH, &format!("/api/v1/devices/{}", device.id))
        .json(&serde_json::json!({"name": "front door", "metadata": {"floor": 1}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(renamed["name"], "front door");
    assert_eq!(renamed["metadata"]["floor"], 1);
    let s: serde_json::Value =
        alice.client.get(url(&stack, &device, "/session")).send().await.unwrap().json().await.unwrap();
    assert_eq!(s["id"], session.token.as_str());
    let resp =
        alice.same_origin(Method::POST, &format!("/api/v1/devices/{}/session/close", device.id)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let again = stack.wait_session(&device.id, Some(&session.token)).await;
    assert_ne!(again.token, session.token);

    // Delete while the tunnel is up: the tunnel closes and the agent's
    // next dial is refused, so it stops.
    let resp = alice.same_origin(Method::DELETE, &format!("/api/v1/devices/{}", device.id)).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    wait_for(&mut agent.status, |s| matches!(s, Status::Stopped(_))).await;
    stack.wait_no_session(&device.id, Duration::from_secs(5)).await;
    assert_eq!(alice.client.get(url(&stack, &device, "")).send().await.unwrap().status(), 404);
    let list: serde_json::Value =
        alice.client.get(format!("{}/api/v1/devices", stack.api_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["total"], 0);
}

#[tokio::test]
async fn a_slow_device_is_a_504_after_the_configured_timeout() {
    let options = Options { dev_idp: true, api: |c| c.device_timeout = Duration::from_secs(1), ..Options::default() };
    let stack = Stack::start_with(options).await.unwrap();
    let alice = signed_in(&stack, "alice").await;
    let device = pair(&stack, &alice, "slow").await;
    let mut agent = stack.spawn_agent(&device);
    agent.connected().await;
    stack.wait_session(&device.id, None).await;
    let resp = alice.client.get(url(&stack, &device, "/http/slow")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(error_body(resp).await.error, "device_timeout");
    agent.stop().await;
}

#[tokio::test]
async fn relay_errors_reach_users_as_api_servers_own_without_internal_paths() {
    // The relay gives up first: its 504 names its internal forward path.
    let mut options = Options { dev_idp: true, ..Options::default() };
    options.relay.forward_timeout = Duration::from_secs(1);
    let stack = Stack::start_with(options).await.unwrap();
    let alice = signed_in(&stack, "alice").await;
    let device = pair(&stack, &alice, "slow").await;
    let mut agent = stack.spawn_agent(&device);
    agent.connected().await;
    stack.wait_session(&device.id, None).await;
    let resp = alice.client.get(url(&stack, &device, "/http/slow")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    let body = error_body(resp).await;
    assert_eq!(body.error, "device_timeout");
    assert_eq!(body.path, format!("/api/v1/devices/{}/http/slow", device.id));
    assert!(!serde_json::to_string(&body).unwrap().contains("internal"), "{body:?}");
    agent.stop().await;
}

/// `{id}` routes of the route table, with a concrete path for `id`.
fn device_routes(id: &str) -> Vec<(Method, String)> {
    let mut out = Vec::new();
    for r in edgelink_api::routes::routes() {
        if r.access != Access::User || !r.path.contains("/devices/{id}") {
            continue;
        }
        let path = r.path.replace("{id}", id).replace("{*path}", "hello");
        match r.method.as_str() {
            "*" => {
                out.push((Method::GET, path.clone()));
                out.push((Method::POST, path));
            }
            m => out.push((Method::from_bytes(m.as_bytes()).unwrap(), path)),
        }
    }
    out
}

#[tokio::test]
async fn bob_gets_404_for_alices_device_on_every_device_route() {
    let stack = Stack::start_with(Options { dev_idp: true, ..Options::default() }).await.unwrap();
    let alice = signed_in(&stack, "alice").await;
    let bob = signed_in(&stack, "bob").await;
    let device = pair(&stack, &alice, "alice's").await;
    let mut agent = stack.spawn_agent(&device);
    agent.connected().await;
    stack.wait_session(&device.id, None).await;

    let routes = device_routes(&device.id);
    assert!(routes.len() >= 8, "{routes:?}");
    for (method, path) in &routes {
        let body =
            if *method == Method::PATCH { serde_json::json!({"name": "mine now"}) } else { serde_json::json!({}) };
        let resp = bob.same_origin(method.clone(), path).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 404, "bob: {method} {path}");
        let err = error_body(resp).await;
        assert_eq!(err.error, "device_not_found", "bob: {method} {path}");
        // A device that does not exist at all answers the same.
        let ghost = path.replace(&device.id, "00000000-0000-0000-0000-000000000000");
        let resp = bob.same_origin(method.clone(), &ghost).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 404, "ghost: {method} {ghost}");
    }
    // Bob's list is empty; alice's device is untouched and still online.
    let list: serde_json::Value =
        bob.client.get(format!("{}/api/v1/devices", stack.api_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["total"], 0);
    let got: serde_json::Value = alice.client.get(url(&stack, &device, "")).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["name"], "alice's");
    assert_eq!(got["status"], "online");
    agent.stop().await;
}

#[tokio::test]
async fn device_listing_filters_and_pages() {
    let stack = Stack::start_with(Options { dev_idp: true, ..Options::default() }).await.unwrap();
    let alice = signed_in(&stack, "alice").await;
    let a = pair(&stack, &alice, "a").await;
    pair(&stack, &alice, "b").await;
    let mut agent = stack.spawn_agent(&a);
    agent.connected().await;
    stack.wait_session(&a.id, None).await;
    let get = |q: &'static str| {
        let client = alice.client.clone();
        let base = stack.api_url.clone();
        async move {
            let resp = client.get(format!("{base}/api/v1/devices{q}")).send().await.unwrap();
            (resp.status().as_u16(), resp.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (_, v) = get("?status=online").await;
    assert_eq!((v["total"].as_i64(), v["devices"][0]["name"].as_str()), (Some(1), Some("a")));
    let (_, v) = get("?status=offline").await;
    assert_eq!(v["devices"][0]["name"], "b");
    let (_, v) = get("?capability=http&type=camera&limit=1&offset=1").await;
    assert_eq!((v["total"].as_i64(), v["devices"].as_array().unwrap().len()), (Some(2), 1));
    let (_, v) = get("?capability=ssh").await;
    assert_eq!(v["total"], 0);
    let (status, v) = get("?status=sleepy").await;
    assert_eq!((status, v["error"].as_str()), (400, Some("bad_request")));
    let (status, _) = get("?limit=1000").await;
    assert_eq!(status, 400);
    agent.stop().await;
}

#[tokio::test]
async fn a_device_that_moves_to_another_relay_is_found_again_at_once() {
    let stack = Stack::start_with(Options { dev_idp: true, ..Options::default() }).await.unwrap();
    let relay2 = stack.extra_relay().await;
    let alice = signed_in(&stack, "alice").await;
    let device = pair(&stack, &alice, "mover").await;
    let mut agent = stack.spawn_agent(&device);
    agent.connected().await;
    let first = stack.wait_session(&device.id, None).await;
    // This request puts the device's route (relay 1) in api-server's cache.
    let resp = alice.client.get(url(&stack, &device, "/http/hello")).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    // The device reconnects to relay 2 well within the cache's lifetime.
    agent.stop().await;
    let mut cfg = stack.agent_config(&device);
    cfg.tunnel_url = format!("ws://{}/tunnel", relay2.tunnel_addr);
    let mut moved = stack.spawn_agent_with(cfg, &device);
    moved.connected().await;
    let moved_to = stack.wait_session_row(&device, Some(&first.token)).await;
    assert_ne!(moved_to.relay_id, stack.store.get_session(&first.token).await.unwrap().unwrap().relay_id);
    // A small body of known length is resent whole.
    let payload = vec![b'x'; 20_000];
    let resp = alice
        .same_origin(Method::POST, &format!("/api/v1/devices/{}/http/echo", device.id))
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the stale route is noticed and the request resent");
    assert!(resp.bytes().await.unwrap() == payload, "the resent request kept its body");
    let resp = alice.client.get(url(&stack, &device, "/http/hello")).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), edgelink_e2e::origin::HELLO);

    // Back to relay 1: a streamed (chunked) body cannot be sent twice, so
    // it is refused with a clear error instead of arriving empty.
    moved.stop().await;
    let mut back = stack.spawn_agent(&device);
    back.connected().await;
    let back_at = stack.wait_session_row(&device, Some(&moved_to.id)).await;
    let chunks = futures::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 1000])));
    let resp = alice
        .same_origin(Method::POST, &format!("/api/v1/devices/{}/http/count", device.id))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert!(error_body(resp).await.message.contains("retry"));
    let resp = alice
        .same_origin(Method::POST, &format!("/api/v1/devices/{}/http/count", device.id))
        .body(vec![b'y'; 4000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "4000");

    // To relay 2 once more: a request without a body (forwarded by heads,
    // ADR 30) finds the stale route and is sent again at once.
    back.stop().await;
    let mut cfg = stack.agent_config(&device);
    cfg.tunnel_url = format!("ws://{}/tunnel", relay2.tunnel_addr);
    let mut again = stack.spawn_agent_with(cfg, &device);
    again.connected().await;
    stack.wait_session_row(&device, Some(&back_at.id)).await;
    let resp = alice.client.get(url(&stack, &device, "/http/hello")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the stale route is noticed and the request sent again");
    assert_eq!(resp.text().await.unwrap(), edgelink_e2e::origin::HELLO);
    again.stop().await;
    relay2.stop().await;
}

/// What two answers must share: status, headers (but those that differ by
/// time or count), and for an error its code, message and path.
async fn answer_of(resp: reqwest::Response) -> (u16, Vec<(String, String)>, serde_json::Value) {
    let status = resp.status().as_u16();
    let varying = ["date", "content-length", "connection", "transfer-encoding", "x-ratelimit-remaining"];
    let mut headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .filter(|(n, _)| !varying.contains(&n.as_str()))
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    headers.sort();
    let bytes = resp.bytes().await.unwrap();
    let mut body =
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(format!("{} bytes", bytes.len())));
    if let Some(b) = body.as_object_mut() {
        b.remove("timestamp");
    }
    (status, headers, body)
}

#[tokio::test]
async fn a_bodiless_request_gets_the_same_answer_by_heads_as_through_the_router() {
    // api-server forwards a device request without a body by heads (its
    // front, ADR 30) and one with a body through its router: the two must
    // not be told apart by what they answer.
    let stack = Stack::start_with(Options { dev_idp: true, ..Options::default() }).await.unwrap();
    let alice = signed_in(&stack, "alice").await;
    let bob = signed_in(&stack, "bob").await;
    let device = pair(&stack, &alice, "twin").await;
    let mut agent = stack.spawn_agent(&device);
    agent.connected().await;
    stack.wait_session(&device.id, None).await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let cookie = |b: &Browser| format!("edgelink_session={}", b.session_cookie().unwrap());
    let (alice_cookie, bob_cookie) = (cookie(&alice), cookie(&bob));
    let to_login = format!("/http/redirect?to={}", edgelink_protocol::paths::encode_segment("/login"));
    let cases: Vec<(&str, Method, String, Option<&str>, u16)> = vec![
        ("a page", Method::GET, "/http/hello".into(), Some(&alice_cookie), 200),
        ("hostile headers", Method::GET, "/http/hostile-headers".into(), Some(&alice_cookie), 200),
        ("a redirect", Method::GET, to_login, Some(&alice_cookie), 302),
        ("no credentials", Method::GET, "/http/hello".into(), None, 401),
        ("another user's device", Method::GET, "/http/hello".into(), Some(&bob_cookie), 404),
        ("a control path", Method::GET, "/http/.edgelink/v1/info".into(), Some(&alice_cookie), 403),
        ("a cross-site unsafe request", Method::DELETE, "/http/hello".into(), Some(&alice_cookie), 403),
        ("the device's root", Method::GET, "/http".into(), Some(&alice_cookie), 200),
    ];
    for (what, method, rest, cookie, status) in cases {
        let send = |body: Option<&'static str>| {
            let mut req = client.request(method.clone(), url(&stack, &device, &rest));
            if let Some(c) = cookie {
                req = req.header("cookie", c);
            }
            if let Some(b) = body {
                req = req.body(b);
            }
            req.send()
        };
        let by_heads = answer_of(send(None).await.unwrap()).await;
        let routed = answer_of(send(Some("x")).await.unwrap()).await;
        assert_eq!(by_heads.0, status, "{what}: {by_heads:?}");
        assert_eq!(by_heads, routed, "{what}");
    }

    // The device gone: the relay's refusal becomes api-server's own error.
    agent.stop().await;
    stack.wait_no_session(&device.id, Duration::from_secs(5)).await;
    // (The first request after it finds the cached route stale.)
    let resp = client.get(url(&stack, &device, "/http/hello")).header("cookie", &alice_cookie).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let by_heads = answer_of(
        client.get(url(&stack, &device, "/http/hello")).header("cookie", &alice_cookie).send().await.unwrap(),
    )
    .await;
    let routed = answer_of(
        client.get(url(&stack, &device, "/http/hello")).header("cookie", &alice_cookie).body("x").send().await.unwrap(),
    )
    .await;
    assert_eq!(by_heads.0, 502, "{by_heads:?}");
    assert_eq!(by_heads, routed);
}
