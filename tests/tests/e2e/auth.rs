//! Device authentication at api-server and token checks at the tunnel.

use edgelink_agent::credentials::AuthClient;
use edgelink_auth::agent_key::AgentKey;
use edgelink_auth::signing::SigningKey;
use edgelink_auth::token::TokenIssuer;
use edgelink_e2e::{Stack, http};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn post(stack: &Stack, path: &str, body: Value) -> (u16, Value) {
    let resp = http().post(format!("{}{}", stack.api_url, path)).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn challenge(stack: &Stack, device_id: &str) -> String {
    let (status, body) = post(stack, "/api/v1/auth/challenge", json!({ "device_id": device_id })).await;
    assert_eq!(status, 200, "{body}");
    body["challenge"].as_str().unwrap().to_owned()
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_error: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], want_error, "{body}");
    assert_eq!(body["code"].as_u64().unwrap() / 1000, want_status as u64, "{body}");
    assert!(body["message"].is_string() && body["timestamp"].is_string() && body["path"].is_string());
}

#[tokio::test]
async fn verify_refuses_wrong_signature_reused_and_expired_challenges_and_unknown_devices() {
    let stack = Stack::start().await;
    let device = stack.add_device("alice@example.com").await;
    let key = device.key();

    let (s, b) = post(&stack, "/api/v1/auth/challenge", json!({ "device_id": "no-such-device" })).await;
    assert_error(s, &b, 404, "device_not_found");
    let (s, b) = post(&stack, "/api/v1/auth/challenge", json!({ "nope": 1 })).await;
    assert_error(s, &b, 400, "bad_request");

    // Wrong key.
    let c = challenge(&stack, &device.id).await;
    let other = AgentKey::generate().unwrap();
    let (s, b) = post(
        &stack,
        "/api/v1/auth/verify",
        json!({ "device_id": device.id, "challenge": c, "signature": other.sign_b64(c.as_bytes()) }),
    )
    .await;
    assert_error(s, &b, 401, "signature_invalid");

    // Right key: works once, then the challenge is spent.
    let sig = key.sign_b64(c.as_bytes());
    let req = json!({ "device_id": device.id, "challenge": c, "signature": sig });
    let (s, b) = post(&stack, "/api/v1/auth/verify", req.clone()).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["token_type"], "Bearer");
    assert!(b["refresh_token"].as_str().unwrap().starts_with("elr_"));
    let (s, b) = post(&stack, "/api/v1/auth/verify", req).await;
    assert_error(s, &b, 401, "challenge_invalid");

    // A challenge issued to another device.
    let other_device = stack.add_device("alice@example.com").await;
    let c2 = challenge(&stack, &other_device.id).await;
    let (s, b) = post(
        &stack,
        "/api/v1/auth/verify",
        json!({ "device_id": device.id, "challenge": c2, "signature": key.sign_b64(c2.as_bytes()) }),
    )
    .await;
    assert_error(s, &b, 401, "challenge_invalid");

    // Expired: stored with an expiry in the past.
    let now = edgelink_store::now_ms();
    let stale = edgelink_protocol::challenge::build(&device.id, "stale-nonce");
    stack.store.insert_challenge(&device.id, &stale, now - 120_000, now - 60_000).await.unwrap();
    let (s, b) = post(
        &stack,
        "/api/v1/auth/verify",
        json!({ "device_id": device.id, "challenge": stale, "signature": key.sign_b64(stale.as_bytes()) }),
    )
    .await;
    assert_error(s, &b, 401, "challenge_invalid");

    // Revoked.
    assert!(stack.store.revoke_device(&device.owner_id, &device.id).await.unwrap());
    let (s, b) = post(&stack, "/api/v1/auth/challenge", json!({ "device_id": device.id })).await;
    assert_error(s, &b, 403, "device_revoked");
}

#[tokio::test]
async fn reused_refresh_token_revokes_the_family() {
    let stack = Stack::start().await;
    let device = stack.add_device("alice@example.com").await;
    let auth = AuthClient::new(http(), &stack.api_url, &device.id);
    let first = auth.authenticate(&device.key()).await.unwrap();
    let first_refresh = secrecy::ExposeSecret::expose_secret(&first.refresh).to_owned();

    let (s, second) = post(&stack, "/api/v1/auth/refresh", json!({ "refresh_token": first_refresh })).await;
    assert_eq!(s, 200, "{second}");
    let second_refresh = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second_refresh, first_refresh);

    let (s, b) = post(&stack, "/api/v1/auth/refresh", json!({ "refresh_token": first_refresh })).await;
    assert_error(s, &b, 401, "refresh_token_reused");
    // The whole family is gone: the token issued by the rotation too.
    let (s, b) = post(&stack, "/api/v1/auth/refresh", json!({ "refresh_token": second_refresh })).await;
    assert_error(s, &b, 401, "refresh_token_invalid");
    let (s, b) = post(&stack, "/api/v1/auth/refresh", json!({ "refresh_token": "elr_unknown" })).await;
    assert_error(s, &b, 401, "refresh_token_invalid");
}

#[tokio::test]
async fn a_reused_refresh_token_also_closes_the_devices_live_tunnel() {
    let stack = Stack::start().await;
    let device = stack.add_device("alice@example.com").await;
    let auth = AuthClient::new(http(), &stack.api_url, &device.id);
    let tokens = auth.authenticate(&device.key()).await.unwrap();
    let access = secrecy::ExposeSecret::expose_secret(&tokens.access).to_owned();
    let stolen = secrecy::ExposeSecret::expose_secret(&tokens.refresh).to_owned();
    let tls = edgelink_agent::tls::client_config(None).unwrap();
    let config = edgelink_tunnel::TunnelConfig::default();
    let timeout = std::time::Duration::from_secs(5);
    let session = edgelink_tunnel::dial(&stack.tunnel_url(), &access, tls, timeout, &config, |_| {}).await.unwrap();
    stack.wait_session(&device.id, None).await;
    // One holder rotates the token, the other presents the old one.
    let (s, _) = post(&stack, "/api/v1/auth/refresh", json!({ "refresh_token": stolen })).await;
    assert_eq!(s, 200);
    let (s, b) = post(&stack, "/api/v1/auth/refresh", json!({ "refresh_token": stolen })).await;
    assert_error(s, &b, 401, "refresh_token_reused");
    stack.wait_no_session(&device.id, std::time::Duration::from_secs(5)).await;
    let _ = session.ended.await;
}

#[tokio::test]
async fn jwks_and_health_are_public() {
    let stack = Stack::start().await;
    let jwks: Value =
        http().get(format!("{}/.well-known/jwks.json", stack.api_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    assert!(jwks["keys"][0].get("d").is_none(), "private part published");
    let resp = http().get(format!("{}/healthz", stack.api_url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http().get(format!("{}/readyz", stack.api_url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// Dials the tunnel with `auth` as the Authorization header; returns the
/// refusal's status and body (panics if the upgrade succeeds).
async fn dial_refused(stack: &Stack, auth: Option<String>) -> (u16, Value) {
    let mut req = stack.tunnel_url().into_client_request().unwrap();
    if let Some(a) = auth {
        req.headers_mut().insert("authorization", a.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => panic!("upgrade should have been refused"),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_ref().map(|b| serde_json::from_slice(b).unwrap()).unwrap_or(Value::Null);
            (resp.status().as_u16(), body)
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn now_secs() -> i64 {
    edgelink_store::now_ms() / 1000
}

#[tokio::test]
async fn tunnel_refuses_bad_expired_foreign_and_revoked_tokens_before_the_upgrade() {
    let stack = Stack::start().await;
    let device = stack.add_device("alice@example.com").await;
    let (key, _) = SigningKey::load_or_generate(&stack.signing_key_file).unwrap();
    let issuer = TokenIssuer::new(&key, edgelink_protocol::claims::DEFAULT_ISSUER, 300);

    let (s, b) = dial_refused(&stack, None).await;
    assert_error(s, &b, 401, "token_missing");
    let (s, b) = dial_refused(&stack, Some("Bearer not-a-jwt".into())).await;
    assert_error(s, &b, 401, "token_invalid");

    let (expired, _) = issuer.issue(&device.id, &device.owner_id, now_secs() - 3600).unwrap();
    let (s, b) = dial_refused(&stack, Some(format!("Bearer {expired}"))).await;
    assert_error(s, &b, 401, "token_expired");

    let foreign_key = SigningKey::ephemeral().unwrap();
    let (foreign, _) = TokenIssuer::new(&foreign_key, edgelink_protocol::claims::DEFAULT_ISSUER, 300)
        .issue(&device.id, &device.owner_id, now_secs())
        .unwrap();
    let (s, b) = dial_refused(&stack, Some(format!("Bearer {foreign}"))).await;
    assert_error(s, &b, 401, "signature_invalid");

    let (wrong_owner, _) = issuer.issue(&device.id, "someone-else", now_secs()).unwrap();
    let (s, b) = dial_refused(&stack, Some(format!("Bearer {wrong_owner}"))).await;
    assert_error(s, &b, 401, "token_invalid");

    let (unknown, _) = issuer.issue("no-such-device", &device.owner_id, now_secs()).unwrap();
    let (s, b) = dial_refused(&stack, Some(format!("Bearer {unknown}"))).await;
    assert_error(s, &b, 403, "device_revoked");

    let (good, _) = issuer.issue(&device.id, &device.owner_id, now_secs()).unwrap();
    stack.store.revoke_device(&device.owner_id, &device.id).await.unwrap();
    let (s, b) = dial_refused(&stack, Some(format!("Bearer {good}"))).await;
    assert_error(s, &b, 403, "device_revoked");

    // Nothing was registered by any of these.
    assert_eq!(stack.internal().list_sessions().await.unwrap().total, 0);
    assert!(stack.store.open_session_for_device(&device.owner_id, &device.id).await.unwrap().is_none());
}

/// A device written against the original spec: an RSA key, and Python's
/// `cryptography` signing with PSS.MAX_LENGTH.
#[tokio::test]
async fn rsa_pss_max_salt_signature_from_python_cryptography_verifies() {
    let probe = std::process::Command::new("python3").args(["-c", "import cryptography"]).output();
    if !matches!(probe, Ok(ref o) if o.status.success()) {
        eprintln!("SKIPPED rsa_pss_max_salt…: python3 with the 'cryptography' package is not installed");
        return;
    }
    let stack = Stack::start().await;
    let dir = std::env::temp_dir().join(format!("edgelink-rsa-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = r#"
import sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa, padding
d = sys.argv[1]
if sys.argv[2] == "gen":
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    open(d + "/key.pem", "wb").write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    sys.stdout.write(k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode())
else:
    k = serialization.load_pem_private_key(open(d + "/key.pem", "rb").read(), password=None)
    sig = k.sign(sys.argv[3].encode("utf-8"), padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH), hashes.SHA256())
    sys.stdout.write(sig.hex())
"#;
    let py = |args: &[&str]| {
        let out = std::process::Command::new("python3").arg("-c").arg(script).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let dir_s = dir.to_str().unwrap();
    let public_pem = py(&[dir_s, "gen"]);
    let spec = edgelink_api::provision::DeviceSpec {
        owner_email: "legacy@example.com".into(),
        name: "rsa device".into(),
        device_type: "gateway".into(),
        public_key_pem: public_pem,
    };
    let d = edgelink_api::provision::add_device(&stack.store, &spec).await.unwrap();
    assert_eq!(d.key_algorithm, "rsa-pss-sha256");
    // The old client calls the field node_id, and sends fields this server
    // does not know (they are ignored, not refused).
    let (s, b) =
        post(&stack, "/api/v1/auth/challenge", json!({ "node_id": d.id, "endpoint": "http://10.0.0.5" })).await;
    assert_eq!(s, 200, "{b}");
    let c = b["challenge"].as_str().unwrap().to_owned();
    let sig_hex = py(&[dir_s, "sign", &c]);
    let (s, b) = post(
        &stack,
        "/api/v1/auth/verify",
        json!({ "node_id": d.id, "challenge": c, "signature": sig_hex, "agent": {"v": 2} }),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["access_token"].is_string());
    let _ = std::fs::remove_dir_all(&dir);
}
