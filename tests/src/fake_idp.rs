//! A controllable OpenID provider for the ID-token negative tests: it
//! answers discovery, JWKS, authorize (redirecting straight back with a
//! code) and token, and mints the ID token the test asks for: good, badly
//! signed, wrong issuer or audience, expired, `alg: none`, HS256 keyed with
//! the public key, an unknown `kid`, a rotated key, a wrong nonce.
//!
//! It stands in for a provider we do not own; the happy paths run against
//! the real one (`deploy/dev-idp`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use edgelink_auth::agent_key::AgentKey;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the next ID token looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Correct in every respect.
    Good,
    /// Signed by a key that is not the one its `kid` names.
    BadSignature,
    /// `iss` of another provider.
    WrongIssuer,
    /// `aud` of another client.
    WrongAudience,
    /// Expired an hour ago.
    Expired,
    /// `alg: none`, no signature.
    AlgNone,
    /// HS256 with the provider's public key as the MAC key.
    Hs256WithPublicKey,
    /// A `kid` that never appears in the JWKS.
    UnknownKid,
    /// A new key, published in the JWKS only from now on (rotation).
    RotatedKey,
    /// A nonce other than the one sent.
    NonceMismatch,
    /// Two audiences and no `azp`.
    ExtraAudienceWithoutAzp,
    /// `iat` an hour in the future.
    IssuedInFuture,
    /// Correct, but `email_verified` is false (a provider with self-service
    /// addresses).
    UnverifiedEmail,
    /// Correct, with no `email_verified` claim at all (Entra ID).
    NoEmailVerified,
}

struct Key {
    key: AgentKey,
    kid: String,
}

impl Key {
    fn new(kid: &str) -> Key {
        Key { key: AgentKey::generate().expect("key"), kid: kid.to_owned() }
    }

    fn jwk(&self) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": self.kid,
               "x": URL_SAFE_NO_PAD.encode(self.key.public_key_raw())})
    }

    fn sign(&self, input: &str) -> String {
        let sig = STANDARD.decode(self.key.sign_b64(input.as_bytes())).expect("b64");
        URL_SAFE_NO_PAD.encode(sig)
    }
}

struct Shared {
    issuer: String,
    client_id: String,
    mode: Mutex<Mode>,
    keys: Mutex<Vec<Key>>,
    codes: Mutex<HashMap<String, String>>,
    jwks_fetches: AtomicUsize,
    rotations: AtomicUsize,
}

/// A running fake provider; stopped on drop.
pub struct FakeIdp {
    /// Its issuer URL.
    pub issuer: String,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl FakeIdp {
    /// Starts it for `client_id` on a free port.
    pub async fn spawn(client_id: &str) -> FakeIdp {
        Self::spawn_at(client_id, "127.0.0.1:0".parse().expect("addr")).await
    }

    /// Starts it for `client_id` on `addr`.
    pub async fn spawn_at(client_id: &str, addr: std::net::SocketAddr) -> FakeIdp {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        let shared = Arc::new(Shared {
            issuer: issuer.clone(),
            client_id: client_id.to_owned(),
            mode: Mutex::new(Mode::Good),
            keys: Mutex::new(vec![Key::new("k1")]),
            codes: Mutex::new(HashMap::new()),
            jwks_fetches: AtomicUsize::new(0),
            rotations: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(shared.clone());
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(async move { token.cancelled().await }).await;
        });
        FakeIdp { issuer, shared, shutdown }
    }

    /// Sets what the next ID tokens look like.
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().expect("lock") = mode;
    }

    /// How often the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }
}

async fn discovery(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({
        "issuer": s.issuer,
        "authorization_endpoint": format!("{}/authorize", s.issuer),
        "token_endpoint": format!("{}/token", s.issuer),
        "jwks_uri": format!("{}/jwks", s.issuer),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["EdDSA", "RS256", "HS256", "none"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic"],
    }))
}

async fn jwks(State(s): State<Arc<Shared>>) -> Json<Value> {
    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let keys: Vec<Value> = s.keys.lock().expect("lock").iter().map(Key::jwk).collect();
    Json(json!({ "keys": keys }))
}

async fn authorize(State(s): State<Arc<Shared>>, Query(q): Query<HashMap<String, String>>) -> impl IntoResponse {
    let code = edgelink_auth::secret::random_b64(16);
    s.codes.lock().expect("lock").insert(code.clone(), q.get("nonce").cloned().unwrap_or_default());
    let mut back = reqwest::Url::parse(q.get("redirect_uri").map(String::as_str).unwrap_or("http://invalid/"))
        .expect("redirect_uri");
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", q.get("state").map(String::as_str).unwrap_or(""));
    Redirect::to(back.as_str())
}

async fn token(State(s): State<Arc<Shared>>, Form(f): Form<HashMap<String, String>>) -> impl IntoResponse {
    let nonce = match f.get("code").and_then(|c| s.codes.lock().expect("lock").remove(c)) {
        Some(n) => n,
        None => {
            return (axum::http::StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_grant"}))).into_response();
        }
    };
    let mode = *s.mode.lock().expect("lock");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    let mut claims = json!({
        "iss": s.issuer, "sub": "fake-alice", "aud": s.client_id, "iat": now, "exp": now + 300,
        "nonce": nonce, "email": "alice@fake.example", "email_verified": true, "name": "Alice Fake",
    });
    match mode {
        Mode::WrongIssuer => claims["iss"] = json!("https://other-idp.example"),
        Mode::WrongAudience => claims["aud"] = json!("someone-else"),
        Mode::Expired => {
            claims["iat"] = json!(now - 7200);
            claims["exp"] = json!(now - 3600);
        }
        Mode::NonceMismatch => claims["nonce"] = json!("not-the-nonce"),
        Mode::UnverifiedEmail => claims["email_verified"] = json!(false),
        Mode::NoEmailVerified => {
            claims.as_object_mut().map(|c| c.remove("email_verified"));
        }
        Mode::ExtraAudienceWithoutAzp => claims["aud"] = json!([s.client_id, "another-client"]),
        Mode::IssuedInFuture => {
            claims["iat"] = json!(now + 3600);
            claims["exp"] = json!(now + 7200);
        }
        _ => {}
    }
    let id_token = mint(&s, mode, &claims);
    Json(json!({"access_token": "fake-access", "token_type": "Bearer", "expires_in": 300, "id_token": id_token}))
        .into_response()
}

fn mint(s: &Shared, mode: Mode, claims: &Value) -> String {
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"));
    let payload = b64(claims);
    let mut keys = s.keys.lock().expect("lock");
    match mode {
        Mode::AlgNone => format!("{}.{payload}.", b64(&json!({"alg": "none", "typ": "JWT"}))),
        Mode::Hs256WithPublicKey => {
            use hmac::Mac;
            let header = b64(&json!({"alg": "HS256", "typ": "JWT", "kid": keys[0].kid}));
            let input = format!("{header}.{payload}");
            let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&keys[0].key.public_key_raw()).expect("hmac");
            mac.update(input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
        }
        Mode::BadSignature => {
            let header = b64(&json!({"alg": "EdDSA", "typ": "JWT", "kid": keys[0].kid}));
            let input = format!("{header}.{payload}");
            let impostor = Key::new(&keys[0].kid);
            format!("{input}.{}", impostor.sign(&input))
        }
        Mode::UnknownKid => {
            let ghost = Key::new("never-published");
            let header = b64(&json!({"alg": "EdDSA", "typ": "JWT", "kid": ghost.kid}));
            let input = format!("{header}.{payload}");
            format!("{input}.{}", ghost.sign(&input))
        }
        Mode::RotatedKey => {
            let n = s.rotations.fetch_add(1, Ordering::SeqCst);
            keys.push(Key::new(&format!("rotated-{n}")));
            let key = keys.last().expect("key");
            let header = b64(&json!({"alg": "EdDSA", "typ": "JWT", "kid": key.kid}));
            let input = format!("{header}.{payload}");
            format!("{input}.{}", key.sign(&input))
        }
        _ => {
            let header = b64(&json!({"alg": "EdDSA", "typ": "JWT", "kid": keys[0].kid}));
            let input = format!("{header}.{payload}");
            format!("{input}.{}", keys[0].sign(&input))
        }
    }
}
