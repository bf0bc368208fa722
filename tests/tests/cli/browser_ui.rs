//! The web UI in a real browser: Debian's chromium driven by playwright-core
//! (`tests/browser/pair_and_open.mjs`) signs in as alice at the development
//! provider, creates a pairing code, pairs and starts this crate's
//! `edge-agent` with it, and opens the demo service from the device list.
//! Screenshots are kept as test artifacts (path printed).
//!
//! Needs /usr/bin/chromium and `make browser-deps`; `.ci/run` installs
//! both. Outside CI a missing browser skips the test with a loud message.

use std::path::PathBuf;
use std::process::Command;

use edgelink_e2e::{Options, Stack, origin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_pairs_the_demo_agent_and_opens_it_in_a_real_browser() {
    let Some(Browser { dir, chromium, shots }) = browser("the real-browser UI test") else { return };
    let stack = Stack::start_with(Options { dev_idp: true, ..Options::default() }).await.unwrap();
    let work = std::env::temp_dir().join(format!("edgelink-browser-{}", uuid_like()));
    std::fs::create_dir_all(&work).unwrap();
    let sshd = edgelink_ssh::testing::OpenSsh::start().await;

    let out = tokio::task::block_in_place(|| {
        Command::new("node")
            .arg("pair_and_open.mjs")
            .env("SSH_PORT", sshd.port.to_string())
            .env("SSH_USER", edgelink_ssh::testing::OpenSsh::USER)
            .env("SSH_PASSWORD", edgelink_ssh::testing::OpenSsh::PASSWORD)
            .env("SSH_HOST_KEY", &sshd.host_fingerprint)
            .current_dir(&dir)
            .env("API_URL", &stack.api_url)
            .env("AGENT_BIN", edgelink_e2e::binary("edge-agent"))
            .env("WORK_DIR", &work)
            .env("ORIGIN_URL", format!("http://{}", stack.origin))
            .env("EXPECT", "Hello from the demo device")
            .env("SCREENSHOT_DIR", &shots)
            .env("CHROMIUM", &chromium)
            .output()
    })
    .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "browser script failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("device page: Hello from the demo device"), "{stdout}");
    assert!(stdout.contains("token: created, used, revoked"), "{stdout}");
    assert!(stdout.contains("device panel: chart drawn"), "{stdout}");
    assert!(stdout.contains("intermediary: registered, connected, command run"), "{stdout}");
    assert!(stdout.contains("device commands: allowed one ran, another refused, a running one canceled"), "{stdout}");
    assert!(origin::INDEX_HTML.contains("Hello from the demo device"));
    for shot in ["devices.png", "device.png", "device-panel.png", "tokens.png", "intermediaries.png"] {
        let len = std::fs::metadata(shots.join(shot)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "screenshot {shot} missing or empty");
    }
    eprintln!("screenshots: {}", shots.display());
    let _ = std::fs::remove_dir_all(&work);
}

/// Where the browser scripts, chromium and the screenshots are.
struct Browser {
    dir: PathBuf,
    chromium: String,
    shots: PathBuf,
}

/// The browser test prerequisites, or None (a loud skip, and a failure in
/// CI) when one is missing.
fn browser(what: &str) -> Option<Browser> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing = [
        (!std::path::Path::new(&chromium).exists()).then(|| format!("{chromium} (apt-get install chromium)")),
        (!dir.join("node_modules/playwright-core").exists())
            .then(|| "tests/browser/node_modules (make browser-deps)".into()),
    ];
    let missing: Vec<String> = missing.into_iter().flatten().collect();
    if !missing.is_empty() {
        assert!(std::env::var_os("CI").is_none(), "browser test prerequisites missing in CI: {missing:?}");
        eprintln!("!!! SKIPPED {what}: missing {missing:?}");
        return None;
    }
    let shots = std::env::var("EDGELINK_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-ui"));
    std::fs::create_dir_all(&shots).unwrap();
    Some(Browser { dir, chromium, shots })
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_uses_a_device_app_on_its_own_origin_bob_cannot_and_sign_out_ends_it() {
    let Some(Browser { dir, chromium, shots }) = browser("the device-origin browser test") else { return };
    let options = Options { dev_idp: true, device_origins: true, ..Options::default() };
    let stack = Stack::start_with(options).await.unwrap();
    let (device, agent, _) = stack.connected_device("alice@example.com").await;
    let origin = format!("http://{}.devices.localhost:{}", device.id, stack.devices_addr.unwrap().port());
    let out = tokio::task::block_in_place(|| {
        Command::new("node")
            .arg("device_origin.mjs")
            .current_dir(&dir)
            .env("API_URL", &stack.api_url)
            .env("DEVICE_ID", &device.id)
            .env("DEVICE_ORIGIN", &origin)
            .env("SCREENSHOT_DIR", &shots)
            .env("CHROMIUM", &chromium)
            .output()
    })
    .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "browser script failed:\n{stdout}\n{stderr}");
    for line in ["landed on the device origin", "device app: absolute paths", "bob: 404", "after sign-out"] {
        assert!(stdout.contains(line), "{line} missing:\n{stdout}");
    }
    agent.stop().await;
}
