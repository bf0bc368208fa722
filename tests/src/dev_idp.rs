//! The development OpenID provider (`deploy/dev-idp`, npm `oidc-provider`)
//! as a child process on port 0, and a scripted browser that signs in at
//! it: follows redirects by hand, keeps cookies, fills the login form.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};

/// A running provider; killed on drop.
pub struct DevIdp {
    /// Its issuer URL.
    pub issuer: String,
    child: tokio::process::Child,
}

impl Drop for DevIdp {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// `deploy/dev-idp` in this checkout.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/dev-idp")
}

/// Starts the provider allowing `redirect_uris`. Panics with a hint when
/// node or the npm packages are missing (`make dev-idp` installs them).
pub async fn spawn(redirect_uris: &[String]) -> DevIdp {
    let dir = dir();
    assert!(
        dir.join("node_modules/oidc-provider").exists(),
        "deploy/dev-idp/node_modules is missing: run `make dev-idp` (npm ci)"
    );
    let mut child = tokio::process::Command::new("node")
        .arg("server.mjs")
        .current_dir(&dir)
        .env("PORT", "0")
        .env("REDIRECT_URIS", redirect_uris.join(","))
        .stdout(Stdio::piped())
        .stderr(match std::fs::File::create(std::env::temp_dir().join("edgelink-dev-idp.log")) {
            Ok(f) => Stdio::from(f),
            Err(_) => Stdio::null(),
        })
        .kill_on_drop(true)
        .spawn()
        .expect("start node (is Node.js installed?)");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let issuer = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(issuer) = line.strip_prefix("READY ") {
                return issuer.trim().to_owned();
            }
        }
        panic!("dev-idp exited before it was ready");
    })
    .await
    .expect("dev-idp did not start within 20 s");
    // The provider logs to stdout; keep draining it, or its next write
    // fails with EPIPE and node exits.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    DevIdp { issuer, child }
}

/// A PKCE verifier and its S256 challenge.
pub fn pkce_pair() -> (String, String) {
    let verifier = edgelink_auth::secret::random_b64(32);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// A browser-like client: a cookie jar, no automatic redirects.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else {
        format!("{}{}", base.trim_end_matches('/'), location)
    }
}

/// The hidden inputs of the first form (name, value).
fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        Some(tag[start..start + tag[start..].find('"')?].to_owned())
    };
    html.split("<input")
        .skip(1)
        .filter_map(|rest| rest.split('>').next())
        .filter(|tag| tag.contains("type=\"hidden\""))
        .filter_map(|tag| Some((attr(tag, "name")?, attr(tag, "value").unwrap_or_default())))
        .collect()
}

fn form_action(html: &str) -> Option<String> {
    let form = &html[html.find("<form")?..];
    let action = &form[form.find("action=\"")? + 8..];
    Some(action[..action.find('"')?].replace("&amp;", "&"))
}

/// Starting at `start` (an authorization URL), follows redirects, signs in
/// as `user` on the login form and confirms consent, until a redirect
/// leaves the provider; returns that final URL (the client's callback).
pub async fn sign_in(client: &reqwest::Client, issuer: &str, start: &str, user: &str) -> String {
    let mut url = start.to_owned();
    let mut form: Option<Vec<(String, String)>> = None;
    for _ in 0..20 {
        let req = match form.take() {
            Some(fields) => client.post(&url).form(&fields),
            None => client.get(&url),
        };
        let resp = req.send().await.expect("provider request");
        if resp.status().is_redirection() {
            let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).expect("location").to_owned();
            let next = absolute(issuer, &location);
            if !next.starts_with(issuer) {
                return next;
            }
            url = next;
            continue;
        }
        let status = resp.status();
        let html = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "provider answered {status}: {html}");
        let action = form_action(&html).unwrap_or_else(|| panic!("no form on provider page: {html}"));
        url = absolute(issuer, &action);
        let mut fields = hidden_inputs(&html);
        if html.contains("name=\"login\"") {
            fields.push(("login".to_owned(), user.to_owned()));
            fields.push(("password".to_owned(), "any".to_owned()));
        }
        form = Some(fields);
    }
    panic!("sign-in did not finish within 20 steps");
}
