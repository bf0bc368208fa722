//! Device origins (ADR 22): each device's web service at
//! `http://{id}.devices.localhost:{port}/` on the relay's device listener,
//! entered with a single-use grant from api-server and kept by a sealed
//! pass cookie that the relay checks on every request.

use std::net::SocketAddr;
use std::time::Duration;

use edgelink_e2e::signin::Browser;
use edgelink_e2e::{Device, Options, Stack, origin};
use reqwest::StatusCode;

fn options() -> Options {
    Options { dev_idp: true, device_origins: true, ..Options::default() }
}

/// A browser for device origins: its own cookie jar, `*.devices.localhost`
/// resolved to the relay's device listener.
fn origin_client(stack: &Stack, devices: &[&Device]) -> reqwest::Client {
    let addr: SocketAddr = stack.devices_addr.expect("device origins on");
    let mut b = reqwest::Client::builder()
        .cookie_store(true)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15));
    for d in devices {
        b = b.resolve(&format!("{}.devices.localhost", d.id), addr);
    }
    b.build().unwrap()
}

fn device_origin(stack: &Stack, d: &Device) -> String {
    format!("http://{}.devices.localhost:{}", d.id, stack.devices_addr.unwrap().port())
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

/// `GET /api/v1/devices/{id}/open` as `user`: the grant URL it redirects to.
async fn grant_url(stack: &Stack, user: &Browser, d: &Device, to: &str) -> String {
    let resp = user.client.get(format!("{}/api/v1/devices/{}/open?to={to}", stack.api_url, d.id)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    location(&resp)
}

/// Alice signed in, one device of hers connected and its origin entered
/// with a grant.
struct OnOrigin {
    stack: Stack,
    alice: Browser,
    device: Device,
    agent: edgelink_e2e::AgentRun,
    /// Her browser on device origins.
    web: reqwest::Client,
    /// The device's origin.
    home: String,
    /// The pass cookie the grant set, `name=value`.
    pass: String,
}

async fn alice_on_her_device_origin(options: Options) -> OnOrigin {
    let stack = Stack::start_with(options).await.unwrap();
    let alice = Browser::new(&stack.api_url);
    alice.sign_in(&stack.idp.as_ref().unwrap().issuer, "alice").await;
    let (device, agent, _) = stack.connected_device("alice@example.com").await;
    let web = origin_client(&stack, &[&device]);
    let home = device_origin(&stack, &device);
    let grant = grant_url(&stack, &alice, &device, "/").await;
    let resp = web.get(&grant).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let pass = resp.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    OnOrigin { stack, alice, device, agent, web, home, pass }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_opens_only_its_device_origin_once_and_sign_out_ends_it() {
    let stack = Stack::start_with(options()).await.unwrap();
    let issuer = stack.idp.as_ref().unwrap().issuer.clone();
    let alice = Browser::new(&stack.api_url);
    alice.sign_in(&issuer, "alice").await;
    let (device, agent, _) = stack.connected_device("alice@example.com").await;
    let (other, other_agent, _) = stack.connected_device("alice@example.com").await;
    let web = origin_client(&stack, &[&device, &other]);
    let home = device_origin(&stack, &device);

    // Without a pass: a page load is sent to api-server to get one; an API
    // call is refused.
    let resp = web.get(format!("{home}/hello?x=1")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(location(&resp), format!("{}/api/v1/devices/{}/open?to=/hello%3Fx%3D1", stack.api_url, device.id));
    assert_eq!(web.post(format!("{home}/echo")).body("x").send().await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // The grant: redeemed once, for this device only.
    let grant = grant_url(&stack, &alice, &device, "/hello").await;
    assert!(grant.starts_with(&format!("{home}/.edgelink/auth?grant=")), "{grant}");
    let resp = web.get(&grant).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/hello");
    let set = resp.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(set.starts_with("edgelink-pass=") && set.contains("HttpOnly") && !set.contains("Domain"), "{set}");
    let resp = web.get(format!("{home}/hello")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), origin::HELLO);
    // Absolute paths work: the path is the device's own.
    let resp = web.get(format!("{home}/headers")).send().await.unwrap();
    let seen: serde_json::Value = resp.json().await.unwrap();
    assert!(seen.get("cookie").is_none_or(|c| !c.as_str().unwrap_or("").contains("edgelink-pass")), "{seen}");
    // Replay: refused.
    let fresh = origin_client(&stack, &[&device, &other]);
    assert_eq!(fresh.get(&grant).send().await.unwrap().status(), StatusCode::FORBIDDEN);
    // A grant for one device does not open another's origin.
    let for_other = grant_url(&stack, &alice, &other, "/").await;
    let swapped = for_other.replace(&other.id, &device.id);
    assert_eq!(fresh.get(&swapped).send().await.unwrap().status(), StatusCode::FORBIDDEN);
    // The pass of one device does not open its sibling.
    let sibling = device_origin(&stack, &other);
    assert_eq!(web.get(format!("{sibling}/hello")).send().await.unwrap().status(), StatusCode::FOUND);

    // Bob gets 404 for alice's device, at api-server's open.
    let bob = Browser::new(&stack.api_url);
    bob.sign_in(&issuer, "bob").await;
    let resp = bob.client.get(format!("{}/api/v1/devices/{}/open", stack.api_url, device.id)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Signing out ends the device origin's pass too.
    let resp = alice.same_origin(reqwest::Method::POST, "/api/auth/logout").send().await.unwrap();
    assert!(resp.status().is_success());
    assert_eq!(web.get(format!("{home}/hello")).send().await.unwrap().status(), StatusCode::FOUND);
    agent.stop().await;
    other_agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_cookies_stay_on_their_origin_and_cross_origin_writes_are_refused() {
    let OnOrigin { stack: _stack, alice, device, agent, web, home, pass } = alice_on_her_device_origin(options()).await;

    let resp = web.get(format!("{home}/set-cookies")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookies: Vec<String> =
        resp.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    assert_eq!(cookies, ["app=1; Path=/; HttpOnly", "wide=1; Path=/"], "host-only, and never the pass");
    // Of the rest of a device's answer, only content headers pass (nor can
    // it forge the relay's error marker).
    let resp = web.get(format!("{home}/hostile-headers")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    for (name, _) in edgelink_e2e::origin::HOSTILE_HEADERS.iter().filter(|(n, _)| *n != "set-cookie") {
        assert!(resp.headers().get(*name).is_none(), "{name} passed through the device origin");
    }
    assert_eq!(resp.headers()["set-cookie"], "planted=1; Path=/");
    // The device's cookie comes back to it; the pass still works.
    let seen: serde_json::Value = web.get(format!("{home}/headers")).send().await.unwrap().json().await.unwrap();
    let cookie = seen["cookie"].as_str().unwrap_or("");
    assert!(cookie.contains("app=1") && !cookie.contains("edgelink-pass"), "{seen}");
    // A device app's cookie that is not ASCII, both ways: set host-only as
    // it is, and sent back beside the pass it hides neither the pass nor
    // itself (by heads for a GET, by the router for a POST).
    let resp = web.get(format!("{home}/set-utf8-cookie")).send().await.unwrap();
    assert_eq!(resp.headers()["set-cookie"].as_bytes(), "name=Jos\u{e9}; Path=/".as_bytes());
    let both = reqwest::header::HeaderValue::from_bytes(format!("name=Jos\u{e9}; {pass}").as_bytes()).unwrap();
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let resp = web.request(method.clone(), format!("{home}/headers")).header("cookie", both.clone());
        let resp = resp.header("origin", &home).send().await;
        let resp = resp.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{method}");
        let seen: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(seen["cookie"], "name=Jos\u{e9}", "{method}: {seen}");
    }
    // The device app learns the caller's address, scheme and host, as
    // behind any reverse proxy (a browser's own X-Forwarded-For is not
    // believed).
    let seen: serde_json::Value = web
        .get(format!("{home}/headers"))
        .header("x-forwarded-for", "6.6.6.6")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{seen}");
    assert_eq!(seen["x-forwarded-proto"], "http", "{seen}");
    assert_eq!(seen["x-forwarded-host"], home.trim_start_matches("http://"), "{seen}");

    // Unsafe requests from another origin (a sibling device's page) are
    // refused; from the device's own origin they pass.
    let evil = format!("http://{}.devices.localhost:1", uuid::Uuid::new_v4());
    let post = |origin: String| web.post(format!("{home}/echo")).header("origin", origin).body("hi").send();
    assert_eq!(post(evil.clone()).await.unwrap().status(), StatusCode::FORBIDDEN);
    let ok = post(home.clone()).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.text().await.unwrap(), "hi");
    let site = web.post(format!("{home}/echo")).header("sec-fetch-site", "same-site").body("x").send().await.unwrap();
    assert_eq!(site.status(), StatusCode::FORBIDDEN);
    // WebSocket upgrades need the device's own Origin.
    let ws = |origin: &str| {
        web.get(format!("{home}/ws"))
            .header("origin", origin)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
    };
    assert_eq!(ws(&evil).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(ws(&home).await.unwrap().status(), StatusCode::SWITCHING_PROTOCOLS);
    // Deleting the device ends its origin's pass.
    let resp = alice.same_origin(reqwest::Method::DELETE, &format!("/api/v1/devices/{}", device.id)).send().await;
    assert!(resp.unwrap().status().is_success());
    assert_eq!(web.get(format!("{home}/hello")).send().await.unwrap().status(), StatusCode::FOUND);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_does_not_hold_the_tunnel_forwards_to_the_one_that_does() {
    let stack = Stack::start_with(options()).await.unwrap();
    let alice = Browser::new(&stack.api_url);
    alice.sign_in(&stack.idp.as_ref().unwrap().issuer, "alice").await;
    let (device, agent, _) = stack.connected_device("alice@example.com").await;
    let second = stack.extra_relay().await;
    let second_addr = second.devices_addr.unwrap();
    // The pass from the first relay's listener…
    let web = origin_client(&stack, &[&device]);
    let grant = grant_url(&stack, &alice, &device, "/").await;
    let resp = web.get(&grant).send().await.unwrap();
    let pass = resp.headers().get("set-cookie").unwrap().to_str().unwrap().split(';').next().unwrap().to_owned();
    // …works at the second, which forwards to the first over the internal API.
    let host = format!("{}.devices.localhost:{}", device.id, stack.devices_addr.unwrap().port());
    let resp = reqwest::Client::new()
        .get(format!("http://{second_addr}/hello"))
        .header("host", &host)
        .header("cookie", &pass)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), origin::HELLO);

    // The device app's own Authorization (Basic auth of a router's admin
    // page) reaches it through either relay; the header that carries it
    // from relay to relay cannot be sent by a browser.
    let seen_via = |at: SocketAddr, authorization: Option<&'static str>| {
        let mut req = reqwest::Client::new()
            .get(format!("http://{at}/headers"))
            .header("host", &host)
            .header("cookie", &pass)
            .header("x-edgelink-device-authorization", "Basic Zm9yZ2Vk");
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        async move { req.send().await.unwrap().json::<serde_json::Value>().await.unwrap() }
    };
    for at in [second_addr, stack.devices_addr.unwrap()] {
        let seen = seen_via(at, Some("Basic YWRtaW46YWRtaW4=")).await;
        assert_eq!(seen["authorization"], "Basic YWRtaW46YWRtaW4=", "via {at}: {seen}");
        assert!(seen.get("x-edgelink-device-authorization").is_none(), "via {at}: {seen}");
        assert!(seen.get("cookie").is_none(), "the pass stays with the relays: {seen}");
    }
    let seen = seen_via(second_addr, None).await;
    assert!(seen.get("authorization").is_none(), "nothing to carry, nothing forged: {seen}");
    second.stop().await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_load_balancer_the_device_app_sees_the_client_it_names() {
    // The test's own connections come from 127.0.0.1: the relay trusts
    // that address as its load balancer.
    let devices = edgelink_relay::config::DeviceOriginSettings {
        url: "http://devices.localhost".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        api_url: String::new(),
        session_keys: Vec::new(),
        session_key_file: None,
        tls_cert: None,
        tls_key: None,
        cache_ttl: Duration::ZERO,
        trusted_proxies: vec![edgelink_protocol::net::Cidr::parse("127.0.0.1").unwrap()],
    };
    let relay = edgelink_relay::config::RelayConfig { devices: Some(devices), ..Default::default() };
    let on = alice_on_her_device_origin(Options { relay, ..options() }).await;
    let (web, home) = (&on.web, &on.home);
    // By heads (a GET) and by the router (a request that expects 100-continue).
    let requests = [
        web.get(format!("{home}/headers")),
        web.post(format!("{home}/headers")).header("origin", home).header("expect", "100-continue").body("x"),
    ];
    for req in requests {
        let resp = req.header("x-forwarded-for", "6.6.6.6, 198.51.100.7").send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let seen: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(seen["x-forwarded-for"], "198.51.100.7", "the nearest address the balancer names: {seen}");
    }
    // Without X-Forwarded-For, the balancer itself.
    let seen: serde_json::Value = web.get(format!("{home}/headers")).send().await.unwrap().json().await.unwrap();
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{seen}");
    on.agent.stop().await;
}
