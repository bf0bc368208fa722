//! The development OpenID provider that `make run` and the sign-in tests
//! use: a scripted browser completes the authorization code flow with PKCE
//! for alice with the public client.

use edgelink_e2e::dev_idp;

#[tokio::test]
async fn alice_signs_in_at_the_dev_provider_with_pkce() {
    let redirect = "http://127.0.0.1:9/api/auth/callback".to_owned();
    let idp = dev_idp::spawn(std::slice::from_ref(&redirect)).await;
    let client = dev_idp::browser();
    let discovery: serde_json::Value = client
        .get(format!("{}/.well-known/openid-configuration", idp.issuer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], idp.issuer.as_str());
    let (verifier, challenge) = dev_idp::pkce_pair();
    let start = reqwest::Url::parse_with_params(
        discovery["authorization_endpoint"].as_str().unwrap(),
        &[
            ("client_id", "edgelink-web"),
            ("response_type", "code"),
            ("redirect_uri", redirect.as_str()),
            ("scope", "openid email profile"),
            ("state", "st"),
            ("nonce", "nn"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ],
    )
    .unwrap();
    let back = dev_idp::sign_in(&client, &idp.issuer, start.as_str(), "alice").await;
    let back = reqwest::Url::parse(&back).unwrap();
    assert!(back.as_str().starts_with(&redirect), "{back}");
    let code = back.query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v.into_owned()).expect("code");
    assert!(back.query_pairs().any(|(k, v)| k == "state" && v == "st"));

    // A public client redeems the code with the verifier and no secret.
    let tokens: serde_json::Value = client
        .post(discovery["token_endpoint"].as_str().unwrap())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect.as_str()),
            ("client_id", "edgelink-web"),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id_token = tokens["id_token"].as_str().unwrap_or_else(|| panic!("{tokens}"));
    use base64::Engine;
    let payload = id_token.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["nonce"], "nn");
    assert_eq!(claims["aud"], "edgelink-web");
}
