//! TLS on the tunnel port: a device trusting a private CA dials wss://.

use edgelink_e2e::{Options, SECRET, Stack, http, origin};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

#[tokio::test]
async fn agent_dials_wss_with_a_private_ca() {
    let dir = std::env::temp_dir().join(format!("edgelink-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
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
