//! A scripted browser signed in at api-server: cookie jar, redirects by
//! hand, the provider's login form filled in (real provider) or skipped
//! (the fake one redirects straight back).

use std::sync::Arc;
use std::time::Duration;

use reqwest::cookie::{CookieStore, Jar};

use crate::dev_idp;

/// Session cookie name in the plain-http test setup.
pub const SESSION_COOKIE: &str = "edgelink_session";

/// A browser talking to one api-server.
pub struct Browser {
    /// The client (cookies kept, redirects not followed).
    pub client: reqwest::Client,
    /// Its cookie jar.
    pub jar: Arc<Jar>,
    /// api-server's base URL (also the `Origin` it sends).
    pub api_url: String,
}

impl Browser {
    /// A fresh browser for `api_url`.
    pub fn new(api_url: &str) -> Browser {
        let jar = Arc::new(Jar::default());
        let client = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(15))
            .build()
            .expect("client");
        Browser { client, jar, api_url: api_url.trim_end_matches('/').to_owned() }
    }

    fn url(&self) -> reqwest::Url {
        reqwest::Url::parse(&self.api_url).expect("url")
    }

    /// The session cookie's value, if the jar has one.
    pub fn session_cookie(&self) -> Option<String> {
        let header = self.jar.cookies(&self.url().join("/api/auth/me").expect("url"))?;
        edgelink_auth::cookie::find(header.as_bytes(), SESSION_COOKIE).map(str::to_owned)
    }

    /// Puts `value` in the jar as the session cookie (e.g. a planted one).
    pub fn plant_session_cookie(&self, value: &str) {
        self.jar.add_cookie_str(&format!("{SESSION_COOKIE}={value}; Path=/"), &self.url());
    }

    /// `GET /api/auth/login?return_to=…`.
    pub async fn start_login(&self, return_to: Option<&str>) -> reqwest::Response {
        let mut url = self.url().join("/api/auth/login").expect("url");
        if let Some(r) = return_to {
            url.query_pairs_mut().append_pair("return_to", r);
        }
        self.client.get(url).send().await.expect("login request")
    }

    /// Signs in at the real dev provider as `user` and returns the URL the
    /// provider sent the browser back to (the callback, not yet visited).
    pub async fn authorize_at_dev_idp(&self, issuer: &str, user: &str, return_to: Option<&str>) -> String {
        let resp = self.start_login(return_to).await;
        assert_eq!(resp.status(), 302, "login: {}", resp.text().await.unwrap_or_default());
        let location = location(&resp);
        assert!(location.starts_with(issuer), "login redirects to the provider: {location}");
        dev_idp::sign_in(&self.client, issuer, &location, user).await
    }

    /// Goes through the fake provider (which redirects straight back) and
    /// returns the callback URL, not yet visited.
    pub async fn authorize_at_fake_idp(&self) -> String {
        let resp = self.start_login(None).await;
        assert_eq!(resp.status(), 302, "login: {}", resp.text().await.unwrap_or_default());
        let to_provider = location(&resp);
        let back = self.client.get(&to_provider).send().await.expect("authorize");
        location(&back)
    }

    /// Visits a URL (the callback) with this browser.
    pub async fn get(&self, url: &str) -> reqwest::Response {
        self.client.get(url).send().await.expect("request")
    }

    /// Full sign-in at the real provider; panics unless it ends signed in.
    pub async fn sign_in(&self, issuer: &str, user: &str) {
        let callback = self.authorize_at_dev_idp(issuer, user, None).await;
        let resp = self.get(&callback).await;
        assert_eq!(resp.status(), 303, "callback: {}", resp.text().await.unwrap_or_default());
    }

    /// `GET /api/auth/me`.
    pub async fn me(&self) -> reqwest::Response {
        self.client.get(format!("{}/api/auth/me", self.api_url)).send().await.expect("me")
    }

    /// Creates an API token in this browser session (`body` as
    /// `POST /api/v1/tokens` takes it); returns (id, secret).
    pub async fn api_token(&self, body: serde_json::Value) -> (String, String) {
        let resp = self.same_origin(reqwest::Method::POST, "/api/v1/tokens").json(&body).send().await.expect("tokens");
        assert_eq!(resp.status(), 201, "token not created");
        let created: serde_json::Value = resp.json().await.expect("token JSON");
        let field = |k: &str| created[k].as_str().expect("token field").to_owned();
        (field("id"), field("secret"))
    }

    /// A same-origin unsafe request, as the web UI makes it.
    pub fn same_origin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.api_url)).header("origin", &self.api_url)
    }

    /// `GET path` as the web UI makes it, its JSON answer (panics on a
    /// transport error or a body that is not JSON).
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let resp = self.same_origin(reqwest::Method::GET, path).send().await.expect("GET");
        resp.json().await.expect("a JSON answer")
    }
}

/// The `Location` of a redirect, absolute.
pub fn location(resp: &reqwest::Response) -> String {
    let loc = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no Location on {} from {}", resp.status(), resp.url()));
    resp.url().join(loc).expect("location").to_string()
}
