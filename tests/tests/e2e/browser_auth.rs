//! Browser sign-in end to end: api-server as the OIDC backend-for-frontend
//! against the real development provider (`deploy/dev-idp`), and against a
//! controllable fake provider for the ID-token negatives.

use edgelink_api::ApiConfig;
use edgelink_auth::cookie::SessionId;
use edgelink_auth::signing::SigningKey;
use edgelink_e2e::api::{self, Api, cookie_keys};
use edgelink_e2e::fake_idp::{FakeIdp, Mode};
use edgelink_e2e::signin::{Browser, SESSION_COOKIE};
use edgelink_e2e::{dev_idp, init_logs};
use edgelink_oidc::ClientAuth;
use edgelink_protocol::error::ErrorBody;
use edgelink_store::{Store, UserSession, now_ms};
use reqwest::Method;

/// The dev provider and an api-server that signs in with `client_id`.
async fn with_dev_idp(client_id: &str, secret: Option<&str>) -> (dev_idp::DevIdp, Api, Store) {
    with_dev_idp_auth(client_id, secret, ClientAuth::Basic).await
}

async fn with_dev_idp_auth(client_id: &str, secret: Option<&str>, auth: ClientAuth) -> (dev_idp::DevIdp, Api, Store) {
    init_logs();
    let store = edgelink_store::testing::sqlite().await;
    let (listener, url) = api::bind().await;
    let idp = dev_idp::spawn(&[format!("{url}/api/auth/callback")]).await;
    let mut settings = api::oidc_settings(&idp.issuer, client_id, secret);
    settings.client_auth = auth;
    let api =
        api::serve_on(listener, url, store.clone(), SigningKey::ephemeral().unwrap(), cookie_keys(&[1]), |c, _| {
            c.oidc = Some(settings)
        })
        .await
        .unwrap();
    (idp, api, store)
}

async fn error_body(resp: reqwest::Response) -> ErrorBody {
    let text = resp.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not an error body ({e}): {text}"))
}

/// A client with only the given session cookie (no jar).
async fn me_with_cookie(api_url: &str, cookie: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .get(format!("{api_url}/api/auth/me"))
        .header("cookie", format!("{SESSION_COOKIE}={cookie}"))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn alice_signs_in_with_the_public_client_and_logout_ends_the_session_server_side() {
    let (idp, api, _store) = with_dev_idp("edgelink-web", None).await;
    let browser = Browser::new(&api.url);
    assert_eq!(browser.me().await.status(), 401);

    let callback = browser.authorize_at_dev_idp(&idp.issuer, "alice", Some("/devices?tab=1")).await;
    let resp = browser.get(&callback).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(edgelink_e2e::signin::location(&resp), format!("{}/devices?tab=1", api.url));
    let set_cookie: Vec<_> =
        resp.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    assert!(
        set_cookie
            .iter()
            .any(|c| c.starts_with("edgelink_session=") && c.contains("HttpOnly") && c.contains("SameSite=Lax"))
    );

    let me: serde_json::Value = browser.me().await.json().await.unwrap();
    assert_eq!(me["email"], "alice@example.com");
    assert_eq!(me["name"], "Alice Example");
    let cookie = browser.session_cookie().expect("session cookie");

    let resp = browser.same_origin(Method::POST, "/api/auth/logout").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let out: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(out["ended_sessions"], 1);
    let end = out["end_session_url"].as_str().expect("the dev provider advertises end_session_endpoint");
    assert!(end.starts_with(&idp.issuer) && end.contains("client_id=edgelink-web"), "{end}");
    assert_eq!(browser.session_cookie(), None, "logout clears the cookie");
    // The old cookie, replayed: refused, because the session is gone server-side.
    assert_eq!(me_with_cookie(&api.url, &cookie).await, 401);
}

#[tokio::test]
async fn alice_signs_in_with_confidential_clients_by_basic_and_by_post() {
    for (client, auth) in
        [("edgelink-confidential", ClientAuth::Basic), ("edgelink-confidential-post", ClientAuth::Post)]
    {
        let (idp, api, _store) = with_dev_idp_auth(client, Some("dev-confidential-secret"), auth).await;
        let browser = Browser::new(&api.url);
        browser.sign_in(&idp.issuer, "alice").await;
        let me: serde_json::Value = browser.me().await.json().await.unwrap();
        assert_eq!(me["email"], "alice@example.com", "{client}");
    }
    // A wrong secret is refused by the provider: a clear sign-in failure,
    // no session.
    let (idp, api, store) = with_dev_idp_auth("edgelink-confidential", Some("not-the-secret"), ClientAuth::Basic).await;
    let browser = Browser::new(&api.url);
    let callback = browser.authorize_at_dev_idp(&idp.issuer, "alice", None).await;
    let resp = browser.get(&callback).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(error_body(resp).await.error, "sign_in_failed");
    assert_eq!(store.user_session_count().await.unwrap(), 0);
}

#[tokio::test]
async fn a_session_cookie_planted_before_login_is_not_the_session_after_login() {
    let (idp, api, _store) = with_dev_idp("edgelink-web", None).await;
    // The attacker signs in as bob and plants bob's cookie in alice's browser.
    let attacker = Browser::new(&api.url);
    attacker.sign_in(&idp.issuer, "bob").await;
    let planted = attacker.session_cookie().unwrap();
    let victim = Browser::new(&api.url);
    victim.plant_session_cookie(&planted);
    let me: serde_json::Value = victim.me().await.json().await.unwrap();
    assert_eq!(me["email"], "bob@example.com", "the planted cookie works before login");

    victim.sign_in(&idp.issuer, "alice").await;
    let after = victim.session_cookie().unwrap();
    assert_ne!(after, planted);
    let me: serde_json::Value = victim.me().await.json().await.unwrap();
    assert_eq!(me["email"], "alice@example.com");
    // Sign-in ended the planted session: the attacker's copy no longer works.
    assert_eq!(me_with_cookie(&api.url, &planted).await, 401);
}

#[tokio::test]
async fn an_unverified_email_never_receives_what_an_operator_provisions() {
    init_logs();
    let store = edgelink_store::testing::sqlite().await;
    let idp = FakeIdp::spawn("fake-client").await;
    // The operator makes a pairing code for alice@fake.example before she
    // ever signed in.
    let provision = |store: Store| async move {
        let ttl = std::time::Duration::from_secs(600);
        let keys = cookie_keys(&[1]);
        let code = edgelink_api::provision::create_pairing(&store, &keys, "alice@fake.example", ttl, 5).await.unwrap();
        assert_eq!(code.len(), 9);
        store.user_by_email("alice@fake.example").await.unwrap().unwrap()
    };
    let provisioned = provision(store.clone()).await;
    let sign_in = |api: Api, mode: Mode| {
        let idp = &idp;
        async move {
            idp.set_mode(mode);
            let browser = Browser::new(&api.url);
            let resp = browser.get(&browser.authorize_at_fake_idp().await).await;
            assert_eq!(resp.status(), 303, "{mode:?}");
            let me: serde_json::Value = browser.me().await.json().await.unwrap();
            me
        }
    };
    let plain = |store: &Store, assume: bool| {
        let store = store.clone();
        let settings = api::oidc_settings(&idp.issuer, "fake-client", None);
        async move {
            api::spawn(store, SigningKey::ephemeral().unwrap(), cookie_keys(&[1]), move |c, _| {
                let mut s = settings;
                s.assume_email_verified = assume;
                c.oidc = Some(s)
            })
            .await
            .unwrap()
        }
    };
    // Someone whose provider did not verify the address (or says nothing)
    // signs in with it: a user of their own, shown as unverified.
    for mode in [Mode::UnverifiedEmail, Mode::NoEmailVerified] {
        let me = sign_in(plain(&store, false).await, mode).await;
        assert_eq!(me["email"], "alice@fake.example");
        assert_eq!(me["email_verified"], false);
        assert_ne!(me["id"], provisioned.id.as_str(), "{mode:?} claimed the operator's user");
    }
    // Operator lookups still find the provisioned user only.
    assert_eq!(store.user_by_email("alice@fake.example").await.unwrap().unwrap().id, provisioned.id);
    // At a provider the operator vouches for (Entra ID), the first sign-in
    // claims it.
    let store = edgelink_store::testing::sqlite().await;
    let provisioned = provision(store.clone()).await;
    let me = sign_in(plain(&store, true).await, Mode::NoEmailVerified).await;
    assert_eq!(me["email_verified"], true);
    assert_eq!(me["id"], provisioned.id.as_str());
}

#[tokio::test]
async fn the_pending_sign_in_is_host_only_so_a_sibling_cannot_plant_one() {
    // Served over https in production: Secure cookies with prefixed names.
    init_logs();
    let idp = dev_idp::spawn(&["https://edge.example/api/auth/callback".to_owned()]).await;
    let settings = api::oidc_settings(&idp.issuer, "edgelink-web", None);
    let store = edgelink_store::testing::sqlite().await;
    let api = api::spawn(store, SigningKey::ephemeral().unwrap(), cookie_keys(&[1]), |c, _| {
        c.public_url = "https://edge.example".into();
        c.session.insecure_cookies = false;
        c.oidc = Some(settings);
    })
    .await
    .unwrap();
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let resp = no_redirects.get(format!("{}/api/auth/login", api.url)).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    // `__Host-` with Path=/ and no Domain: a browser refuses such a cookie
    // from any other host, so a sibling subdomain cannot plant its own.
    assert!(set.starts_with("__Host-edgelink_login="), "{set}");
    assert!(set.contains("; Path=/;") && set.contains("; Secure") && !set.contains("Domain"), "{set}");
    let sealed = set.split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let state = location.split(['?', '&']).find_map(|p| p.strip_prefix("state=")).unwrap().to_owned();
    // What a sibling *can* set (a Domain cookie under another name) is
    // never read as a pending sign-in.
    for planted in ["__Secure-edgelink_login", "edgelink_login"] {
        let resp = no_redirects
            .get(format!("{}/api/auth/callback?state={state}&code=attackers-code", api.url))
            .header("cookie", format!("{planted}={sealed}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{planted}");
        assert!(error_body(resp).await.message.contains("no sign-in in progress"));
    }
}

#[tokio::test]
async fn tampered_foreign_key_and_expired_cookies_are_refused_and_rotation_keeps_old_ones() {
    let (idp, api, store) = with_dev_idp("edgelink-web", None).await;
    let browser = Browser::new(&api.url);
    browser.sign_in(&idp.issuer, "alice").await;
    let cookie = browser.session_cookie().unwrap();
    assert_eq!(me_with_cookie(&api.url, &cookie).await, 200);

    // Tampered: one character of the id changed.
    let mut bytes = cookie.clone().into_bytes();
    bytes[5] = if bytes[5] == b'A' { b'B' } else { b'A' };
    let resp = reqwest::Client::new()
        .get(format!("{}/api/auth/me", api.url))
        .header("cookie", format!("{SESSION_COOKIE}={}", String::from_utf8(bytes).unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(error_body(resp).await.error, "unauthenticated");

    // An api-server that only knows a new key refuses it; one configured
    // for rotation (new key first, old key kept) accepts it.
    let key = || SigningKey::ephemeral().unwrap();
    let new_only = api::spawn(store.clone(), key(), cookie_keys(&[2]), |_, _| {}).await.unwrap();
    assert_eq!(me_with_cookie(&new_only.url, &cookie).await, 401);
    let rotated = api::spawn(store.clone(), key(), cookie_keys(&[2, 1]), |_, _| {}).await.unwrap();
    assert_eq!(me_with_cookie(&rotated.url, &cookie).await, 200);

    // Expired sessions: one idle too long, one past its absolute lifetime.
    let user = store.upsert_user_by_email("alice@example.com", "Alice").await.unwrap();
    let now = now_ms();
    let keys = cookie_keys(&[1]);
    for (idle, absolute) in [(now - 1, now + 3_600_000), (now + 3_600_000, now - 1)] {
        let id = SessionId::generate();
        store
            .create_user_session(&UserSession {
                id_hash: id.storage_hash(),
                public_id: edgelink_auth::secret::random_b64(12),
                user_id: user.id.clone(),
                created_at: now - 10_000,
                last_seen_at: now - 10_000,
                idle_expires_at: idle,
                absolute_expires_at: absolute,
                user_agent: String::new(),
                ip: String::new(),
            })
            .await
            .unwrap();
        assert_eq!(me_with_cookie(&api.url, &keys.sign(SESSION_COOKIE, &id)).await, 401);
    }
}

#[tokio::test]
async fn callback_refuses_bad_state_missing_state_replayed_codes_and_provider_errors() {
    let (idp, api, store) = with_dev_idp("edgelink-web", None).await;
    let browser = Browser::new(&api.url);
    let set = |url: &str, key: &str, value: Option<&str>| {
        let mut u = reqwest::Url::parse(url).unwrap();
        let pairs: Vec<(String, String)> =
            u.query_pairs().filter(|(k, _)| k != key).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        let mut q = u.query_pairs_mut();
        q.clear();
        for (k, v) in &pairs {
            q.append_pair(k, v);
        }
        if let Some(v) = value {
            q.append_pair(key, v);
        }
        drop(q);
        u.to_string()
    };

    let callback = browser.authorize_at_dev_idp(&idp.issuer, "alice", None).await;
    let resp = browser.get(&set(&callback, "state", Some("forged"))).await;
    assert_eq!(resp.status(), 400);
    assert!(error_body(resp).await.message.contains("state"));

    let callback = browser.authorize_at_dev_idp(&idp.issuer, "alice", None).await;
    let resp = browser.get(&set(&callback, "state", None)).await;
    assert_eq!(resp.status(), 400);
    assert!(error_body(resp).await.message.contains("missing state"));

    // Without the pending sign-in cookie (another browser): refused.
    let callback = browser.authorize_at_dev_idp(&idp.issuer, "alice", None).await;
    let resp = Browser::new(&api.url).get(&callback).await;
    assert_eq!(resp.status(), 400);
    assert!(error_body(resp).await.message.contains("no sign-in in progress"));
    assert_eq!(store.user_session_count().await.unwrap(), 0);

    // A code that worked once is refused the second time, even inside a
    // fresh sign-in of the same browser (the provider refuses it).
    let callback = browser.authorize_at_dev_idp(&idp.issuer, "alice", None).await;
    assert_eq!(browser.get(&callback).await.status(), 303);
    assert_eq!(store.user_session_count().await.unwrap(), 1);
    let fresh = browser.start_login(None).await;
    let fresh_state = reqwest::Url::parse(&edgelink_e2e::signin::location(&fresh))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let resp = browser.get(&set(&callback, "state", Some(&fresh_state))).await;
    assert_eq!(resp.status(), 401);
    let body = error_body(resp).await;
    assert_eq!(body.error, "sign_in_failed");
    assert!(body.message.contains("refused"), "{}", body.message);
    assert_eq!(store.user_session_count().await.unwrap(), 1, "no new session");

    // return_to must be local.
    for evil in ["https://evil.example", "//evil.example", "/\\evil.example"] {
        let resp = browser.start_login(Some(evil)).await;
        assert_eq!(resp.status(), 400, "{evil}");
        assert!(resp.headers().get("location").is_none());
    }

    // The provider says no (user pressed cancel): a clear page, not a 500.
    let fresh = browser.start_login(None).await;
    let state = reqwest::Url::parse(&edgelink_e2e::signin::location(&fresh))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let denied =
        format!("{}/api/auth/callback?error=access_denied&error_description=End-User+aborted&state={state}", api.url);
    let resp = browser.client.get(&denied).header("accept", "text/html").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let page = resp.text().await.unwrap();
    assert!(
        page.contains("Sign-in failed") && page.contains("access_denied") && page.contains("End-User aborted"),
        "{page}"
    );
    assert_eq!(store.user_session_count().await.unwrap(), 1);
}

#[tokio::test]
async fn id_tokens_that_fail_any_check_are_refused_and_rotated_keys_are_fetched() {
    init_logs();
    let store = edgelink_store::testing::sqlite().await;
    let idp = FakeIdp::spawn("fake-client").await;
    let settings = api::oidc_settings(&idp.issuer, "fake-client", None);
    let api =
        api::spawn(store.clone(), SigningKey::ephemeral().unwrap(), cookie_keys(&[1]), |c, _| c.oidc = Some(settings))
            .await
            .unwrap();

    for mode in [
        Mode::BadSignature,
        Mode::WrongIssuer,
        Mode::WrongAudience,
        Mode::Expired,
        Mode::AlgNone,
        Mode::Hs256WithPublicKey,
        Mode::UnknownKid,
        Mode::NonceMismatch,
        Mode::ExtraAudienceWithoutAzp,
        Mode::IssuedInFuture,
    ] {
        idp.set_mode(mode);
        let browser = Browser::new(&api.url);
        let fetches = idp.jwks_fetches();
        let resp = browser.get(&browser.authorize_at_fake_idp().await).await;
        assert_eq!(resp.status(), 401, "{mode:?}");
        let body = error_body(resp).await;
        assert_eq!(body.error, "sign_in_failed", "{mode:?}");
        assert!(body.message.contains("ID token was rejected"), "{mode:?}: {}", body.message);
        assert_eq!(browser.session_cookie(), None, "{mode:?}");
        if mode == Mode::UnknownKid {
            assert_eq!(idp.jwks_fetches(), fetches + 1, "an unknown kid refetches the JWKS once before refusing");
        }
    }
    assert_eq!(store.user_session_count().await.unwrap(), 0);

    // The same provider's good token works; so does one signed with a key
    // it published only after we cached its JWKS.
    for mode in [Mode::Good, Mode::RotatedKey] {
        idp.set_mode(mode);
        let browser = Browser::new(&api.url);
        let fetches = idp.jwks_fetches();
        let resp = browser.get(&browser.authorize_at_fake_idp().await).await;
        assert_eq!(resp.status(), 303, "{mode:?}: {}", resp.text().await.unwrap_or_default());
        let me: serde_json::Value = browser.me().await.json().await.unwrap();
        assert_eq!(me["email"], "alice@fake.example");
        if mode == Mode::RotatedKey {
            assert_eq!(idp.jwks_fetches(), fetches + 1);
        }
    }
}

#[tokio::test]
async fn cross_site_unsafe_requests_with_a_valid_cookie_are_refused() {
    let (idp, api, _store) = with_dev_idp("edgelink-web", None).await;
    let browser = Browser::new(&api.url);
    browser.sign_in(&idp.issuer, "alice").await;
    let logout = format!("{}/api/auth/logout", api.url);
    let attempts = [
        vec![("origin", "https://evil.example")],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
        vec![],
    ];
    for headers in attempts {
        let mut req = browser.client.post(&logout);
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 403, "{headers:?}");
        assert_eq!(error_body(resp).await.error, "csrf_rejected");
    }
    assert_eq!(browser.me().await.status(), 200, "still signed in");
    let resp = browser.client.post(&logout).header("sec-fetch-site", "same-origin").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(browser.me().await.status(), 401);
}

#[tokio::test]
async fn users_list_and_end_their_own_browser_sessions() {
    let (idp, api, _store) = with_dev_idp("edgelink-web", None).await;
    let laptop = Browser::new(&api.url);
    let phone = Browser::new(&api.url);
    let bob = Browser::new(&api.url);
    laptop.sign_in(&idp.issuer, "alice").await;
    phone.sign_in(&idp.issuer, "alice").await;
    bob.sign_in(&idp.issuer, "bob").await;

    let list: serde_json::Value = laptop.me().await.json().await.unwrap();
    let laptop_session = list["session_id"].as_str().unwrap().to_owned();
    let sessions: serde_json::Value =
        laptop.client.get(format!("{}/api/v1/sessions/browser", api.url)).send().await.unwrap().json().await.unwrap();
    let sessions = sessions["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2, "only alice's sessions: {sessions:?}");
    let current: Vec<_> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], laptop_session.as_str());
    let phone_session = sessions.iter().find(|s| s["current"] == false).unwrap()["id"].as_str().unwrap().to_owned();

    // Bob cannot end alice's session: 404, as if it did not exist.
    let resp =
        bob.same_origin(Method::DELETE, &format!("/api/v1/sessions/browser/{phone_session}")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(phone.me().await.status(), 200);

    // "Sign out that device".
    let resp =
        laptop.same_origin(Method::DELETE, &format!("/api/v1/sessions/browser/{phone_session}")).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(phone.me().await.status(), 401);
    assert_eq!(laptop.me().await.status(), 200);

    // logout?all=1 ends every session of the user, and only theirs.
    phone.sign_in(&idp.issuer, "alice").await;
    let out: serde_json::Value =
        laptop.same_origin(Method::POST, "/api/auth/logout?all=1").send().await.unwrap().json().await.unwrap();
    assert_eq!(out["ended_sessions"], 2);
    assert_eq!(phone.me().await.status(), 401);
    assert_eq!(laptop.me().await.status(), 401);
    assert_eq!(bob.me().await.status(), 200);
}

#[tokio::test]
async fn server_starts_with_the_provider_down_and_login_answers_503_until_it_is_up() {
    init_logs();
    let store = edgelink_store::testing::sqlite().await;
    // A port that was free a moment ago: nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let settings = api::oidc_settings(&format!("http://{dead}"), "fake-client", None);
    let api = api::spawn(store, SigningKey::ephemeral().unwrap(), cookie_keys(&[1]), |c: &mut ApiConfig, _| {
        c.oidc = Some(settings)
    })
    .await
    .unwrap();
    assert_eq!(reqwest::get(format!("{}/healthz", api.url)).await.unwrap().status(), 200);
    let resp = Browser::new(&api.url).start_login(None).await;
    assert_eq!(resp.status(), 503);
    let body = error_body(resp).await;
    assert_eq!(body.error, "unavailable");
    assert!(body.message.contains("identity provider"), "{}", body.message);

    // The provider comes up: the next login discovers it and proceeds.
    let _idp = FakeIdp::spawn_at("fake-client", dead).await;
    let browser = Browser::new(&api.url);
    let resp = browser.get(&browser.authorize_at_fake_idp().await).await;
    assert_eq!(resp.status(), 303);
}

#[tokio::test]
async fn signed_out_browsers_are_sent_to_sign_in_and_brought_back() {
    let (idp, api, _store) = with_dev_idp("edgelink-web", None).await;
    let browser = Browser::new(&api.url);
    let page = |path: &str| browser.client.get(format!("{}{path}", api.url)).header("accept", "text/html").send();
    let resp = page("/api/v1/devices/abc/http/x?y=1").await.unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()["location"], "/api/auth/login?return_to=/api/v1/devices/abc/http/x%3Fy%3D1");
    // API clients get the 401 body instead.
    assert_eq!(browser.client.get(format!("{}/", api.url)).send().await.unwrap().status(), 401);

    let resp = page("/").await.unwrap();
    let login = edgelink_e2e::signin::location(&resp);
    let to_idp = edgelink_e2e::signin::location(&browser.client.get(&login).send().await.unwrap());
    let callback = dev_idp::sign_in(&browser.client, &idp.issuer, &to_idp, "alice").await;
    let back = browser.get(&callback).await;
    assert_eq!(edgelink_e2e::signin::location(&back), format!("{}/", api.url));
    let ui = page("/").await.unwrap();
    assert_eq!(ui.status(), 200);
    assert!(ui.headers()["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    assert!(ui.text().await.unwrap().contains("<title>edgelink</title>"));
}
