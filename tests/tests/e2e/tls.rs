//! TLS on the tunnel port (a device trusting a private CA dials wss://)
//! and on the internal API (api-server's clients trust a private CA).

use std::path::PathBuf;

use edgelink_e2e::{Options, SECRET, Stack, http, origin};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use secrecy::SecretString;

/// A private CA and a certificate for 127.0.0.1/localhost it signed:
/// (cert file, key file, CA file) in `dir`.
fn private_ca(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let (cert_file, key_file, ca_file) = (dir.join("cert.pem"), dir.join("key.pem"), dir.join("ca.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    std::fs::write(&ca_file, ca.pem()).unwrap();
    (cert_file, key_file, ca_file)
}

#[tokio::test]
async fn agent_dials_wss_with_a_private_ca() {
    let dir = std::env::temp_dir().join(format!("edgelink-tls-{}", uuid::Uuid::new_v4()));
    let (cert_file, key_file, ca_file) = private_ca(&dir);
    let mut options = Options::default();
    options.relay.tls_cert = Some(cert_file);
    options.relay.tls_key = Some(key_file);
    let stack = Stack::start_with(options).await.unwrap();
    let device = stack.add_device("alice@example.com").await;

    // Without the CA the device refuses the relay's certificate.
    let mut untrusting = stack.agent_config(&device);
    untrusting.tunnel_url = stack.tunnel_url().replace("ws://", "wss://");
    let mut agent = stack.spawn_agent_with(untrusting.clone(), &device);
    edgelink_e2e::wait_for(&mut agent.status, |s| matches!(s, edgelink_agent::Status::Backoff(_))).await;
    agent.stop().await;
    assert_eq!(stack.internal().list_sessions().await.unwrap().total, 0);

    let mut cfg = untrusting;
    cfg.ca_file = Some(ca_file);
    let mut agent = stack.spawn_agent_with(cfg, &device);
    agent.connected().await;
    let session = stack.wait_session(&device.id, None).await;
    let resp = http().get(stack.forward_url(&session.token, "/hello")).bearer_auth(SECRET).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), origin::HELLO);
    agent.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_internal_api_serves_tls_and_api_servers_clients_trust_a_private_ca() {
    let dir = std::env::temp_dir().join(format!("edgelink-tls-{}", uuid::Uuid::new_v4()));
    let (cert_file, key_file, ca_file) = private_ca(&dir);
    let mut options = Options::default();
    options.relay.internal_tls_cert = Some(cert_file);
    options.relay.internal_tls_key = Some(key_file);
    let stack = Stack::start_with(options).await.unwrap();
    let device = stack.add_device("alice@example.com").await;
    let mut agent = stack.spawn_agent(&device);
    agent.connected().await;
    let row = stack.wait_session_row(&device, None).await;
    assert!(row.relay_url.starts_with("https://"), "{}", row.relay_url);

    // The secret never crosses in the clear: plain http is not served.
    let plain = row.relay_url.replace("https://", "http://");
    assert!(http().get(format!("{plain}/internal/sessions")).bearer_auth(SECRET).send().await.is_err());
    // Without the CA the certificate is refused; with it, both of
    // api-server's clients work.
    let untrusting = edgelink_internal_api::Client::new(&row.relay_url, SecretString::from(SECRET)).unwrap();
    assert!(untrusting.list_sessions().await.is_err());
    let tls = edgelink_hop::tls::client_config(Some(&ca_file)).unwrap();
    let client =
        edgelink_internal_api::Client::with_tls(&row.relay_url, SecretString::from(SECRET), Some(tls.clone())).unwrap();
    assert_eq!(client.list_sessions().await.unwrap().total, 1);
    let forwarder = edgelink_internal_api::forward::Forwarder::new(
        SecretString::from(SECRET),
        std::time::Duration::from_secs(5),
        tls,
    );
    let req = http::Request::new(edgelink_internal_api::forward::BoxBody::default());
    let resp =
        forwarder.forward(&row.relay_url, &device.id, "/hello", req, edgelink_hop::Pending::default()).await.unwrap();
    assert_eq!(resp.status(), 200);
    agent.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
