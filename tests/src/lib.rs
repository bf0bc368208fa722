//! The end-to-end harness: a whole edgelink stack in one process, every
//! listener on port 0, against a real database (a fresh SQLite file, or a
//! fresh PostgreSQL database when `EDGELINK_TEST_POSTGRES_URL` is set and
//! the test asks for it), a real origin web service and real agents.
//!
//! Logs go to stderr only when `TEST_LOG` is set.

pub mod api;
pub mod dev_idp;
pub mod fake_idp;
pub mod logs;
pub mod origin;
pub mod signin;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use edgelink_agent::{AgentConfig, Status};
use edgelink_api::ApiConfig;
use edgelink_auth::agent_key::AgentKey;
use edgelink_auth::cookie::CookieKeys;
use edgelink_auth::signing::SigningKey;
use edgelink_internal_api::{Client, SessionSummary};
use edgelink_relay::RelayConfig;
use edgelink_store::Store;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The internal secret every test stack uses.
pub const SECRET: &str = "test-internal-secret-0123456789";

/// Installs the log subscriber once, if `TEST_LOG` is set.
pub fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(
                    std::env::var("TEST_LOG").unwrap_or_else(|_| "debug".into()),
                ))
                .with_test_writer()
                .try_init();
        }
    });
}

/// Which database a stack runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// A fresh SQLite file.
    Sqlite,
    /// A fresh PostgreSQL database (needs `EDGELINK_TEST_POSTGRES_URL`).
    Postgres,
}

/// A running remote-proxy.
pub struct RelayRun {
    /// Tunnel port address.
    pub tunnel_addr: SocketAddr,
    /// Internal API address.
    pub internal_addr: SocketAddr,
    /// Device-origin listener address, when serving device origins.
    pub devices_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), edgelink_relay::RelayError>>,
}

impl RelayRun {
    /// Stops it and waits until it has shut down.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// A running agent.
pub struct AgentRun {
    /// Its status as it changes.
    pub status: watch::Receiver<Status>,
    shutdown: CancellationToken,
    /// The agent task; its result says why it stopped.
    pub task: tokio::task::JoinHandle<Result<(), edgelink_agent::AgentError>>,
}

impl AgentRun {
    /// Waits until the agent reports `Connected` (at most 10 s).
    pub async fn connected(&mut self) {
        wait_for(&mut self.status, |s| *s == Status::Connected).await;
    }

    /// Stops it gracefully.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Opens a WebSocket at `url` (`http://` is turned into `ws://`) with
/// `headers`, checks the upgrade and that text and binary messages come
/// back unchanged (the test origin's `/ws` echoes), then closes it.
pub async fn ws_echo(url: &str, headers: &[(&str, &str)]) -> tokio_tungstenite::tungstenite::http::HeaderMap {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.replacen("http://", "ws://", 1).into_client_request().expect("ws url");
    for (k, v) in headers {
        req.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::header::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            v.parse().expect("header value"),
        );
    }
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.expect("websocket upgrade");
    assert_eq!(resp.status(), 101);
    let answer = resp.headers().clone();
    let messages =
        [Message::text("hello 0"), Message::text("hello 1"), Message::Binary(bytes::Bytes::from_static(&[1, 2, 3]))];
    for m in messages {
        ws.send(m.clone()).await.expect("send");
        let reply = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("echo in time");
        assert_eq!(reply.expect("a message").expect("not an error"), m);
    }
    let _ = ws.close(None).await;
    answer
}

/// Attempts a WebSocket upgrade that is expected to be refused; returns the
/// refusal's status and body.
pub async fn ws_refused(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use tokio_tungstenite::tungstenite::Error;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.replacen("http://", "ws://", 1).into_client_request().expect("ws url");
    for (k, v) in headers {
        req.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::header::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            v.parse().expect("header value"),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => panic!("the upgrade to {url} was accepted"),
        Err(Error::Http(resp)) => {
            let body = resp.body().as_deref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            (resp.status().as_u16(), body)
        }
        Err(e) => panic!("upgrade to {url} failed without an HTTP answer: {e}"),
    }
}

/// Waits (at most 10 s) until the watched status satisfies `pred`.
pub async fn wait_for(rx: &mut watch::Receiver<Status>, pred: impl Fn(&Status) -> bool) {
    let ok = matches!(tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| pred(s))).await, Ok(Ok(_)));
    assert!(ok, "agent status never matched; last: {:?}", *rx.borrow());
}

/// A device registered in the store, with its key.
pub struct Device {
    /// Device id.
    pub id: String,
    /// Owner id.
    pub owner_id: String,
    /// Private key PEM (reload with [`Device::key`]).
    pub key_pem: String,
}

impl Device {
    /// A fresh copy of the key.
    pub fn key(&self) -> AgentKey {
        AgentKey::from_pem(&self.key_pem).expect("key")
    }
}

/// Knobs of a test stack.
#[derive(Clone)]
pub struct Options {
    /// Database kind.
    pub db: Db,
    /// Relay config on top of the harness defaults.
    pub relay: RelayConfig,
    /// Lifetime of device access tokens.
    pub access_token_ttl: Duration,
    /// Start the development OpenID provider and sign in with it
    /// (public client `edgelink-web`).
    pub dev_idp: bool,
    /// Last adjustments to api-server's config.
    pub api: fn(&mut ApiConfig),
    /// Serve device origins (`http://{id}.devices.localhost:{port}`) on a
    /// third relay listener.
    pub device_origins: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            db: Db::Sqlite,
            relay: RelayConfig {
                ping_interval: Duration::from_millis(300),
                idle_timeout: Duration::from_millis(1500),
                forward_timeout: Duration::from_secs(5),
                header_timeout: Duration::from_secs(2),
                shutdown_grace: Duration::from_secs(3),
                ..RelayConfig::default()
            },
            access_token_ttl: ApiConfig::default().access_token_ttl,
            dev_idp: false,
            api: |_| {},
            device_origins: false,
        }
    }
}

/// api-server, remote-proxy and an origin, on port 0.
pub struct Stack {
    /// The store both servers share.
    pub store: Store,
    /// Its URL.
    pub database_url: String,
    /// api-server's base URL.
    pub api_url: String,
    /// The running relay (None while stopped).
    pub relay: Option<RelayRun>,
    /// Relay config in use.
    pub relay_config: RelayConfig,
    /// The origin web service devices forward to.
    pub origin: SocketAddr,
    /// Path of the token signing key file (load it to mint test tokens).
    pub signing_key_file: PathBuf,
    /// The development provider, when [`Options::dev_idp`] asked for it.
    pub idp: Option<dev_idp::DevIdp>,
    /// The device-origin listener's address, when [`Options::device_origins`].
    pub devices_addr: Option<SocketAddr>,
    api: Option<api::Api>,
    cookie_key: Vec<u8>,
    dir: PathBuf,
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(r) = &self.relay {
            r.shutdown.cancel();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Stack {
    /// A stack on SQLite with the default options.
    pub async fn start() -> Stack {
        Self::start_with(Options::default()).await.expect("stack")
    }

    /// A stack with `options`; None when PostgreSQL was asked for but is
    /// not configured.
    pub async fn start_with(options: Options) -> Option<Stack> {
        init_logs();
        let database_url = edgelink_store::testing::fresh_url(options.db == Db::Postgres).await?;
        let store = Store::connect(&database_url).await.expect("store");
        let dir = std::env::temp_dir().join(format!("edgelink-e2e-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let signing_key_file = dir.join("signing.pem");
        let (key, _) = SigningKey::load_or_generate(&signing_key_file).expect("signing key");

        let (api_listener, api_url) = api::bind().await;
        let idp = match options.dev_idp {
            true => Some(dev_idp::spawn(&[format!("{api_url}/api/auth/callback")]).await),
            false => None,
        };

        let origin = origin::spawn().await;
        let cookie_key = uuid::Uuid::new_v4().as_bytes().repeat(2);
        let devices_addr = match options.device_origins {
            true => Some(TcpListener::bind("127.0.0.1:0").await.expect("bind devices").local_addr().expect("addr")),
            false => None,
        };
        // Load balancers the test trusts, if it set any.
        let trusted_proxies = options.relay.devices.as_ref().map(|d| d.trusted_proxies.clone()).unwrap_or_default();
        let devices = devices_addr.map(|addr| {
            use base64::Engine;
            edgelink_relay::config::DeviceOriginSettings {
                url: format!("http://devices.localhost:{}", addr.port()),
                listen: addr,
                api_url: api_url.clone(),
                session_keys: vec![base64::engine::general_purpose::STANDARD.encode(&cookie_key)],
                session_key_file: None,
                tls_cert: None,
                tls_key: None,
                // Every request asks the database: sign-out shows at once.
                cache_ttl: Duration::ZERO,
                trusted_proxies,
            }
        });
        let relay_config = RelayConfig {
            devices,
            internal_secret: Some(SecretString::from(SECRET)),
            database_url: database_url.clone(),
            jwks_url: format!("{api_url}/.well-known/jwks.json"),
            instance_id: Some(format!("relay-{}", uuid::Uuid::new_v4().simple())),
            ..options.relay
        };
        let mut stack = Stack {
            store,
            database_url,
            api_url: api_url.clone(),
            relay: None,
            relay_config,
            origin,
            signing_key_file,
            api: None,
            cookie_key,
            idp,
            devices_addr,
            dir,
        };
        stack.start_relay(None).await;
        // api-server starts after the relay so it can tell pairing devices
        // the relay's tunnel URL.
        let access_token_ttl = options.access_token_ttl;
        let shared = stack.shared_api_settings();
        let issuer = stack.idp.as_ref().map(|i| i.issuer.clone());
        let tweak = options.api;
        let api_run = api::serve_on(
            api_listener,
            api_url,
            stack.store.clone(),
            key,
            CookieKeys::new(vec![stack.cookie_key.clone()]).expect("keys"),
            move |c, _| {
                shared(c);
                c.access_token_ttl = access_token_ttl;
                if let Some(issuer) = issuer {
                    c.oidc = Some(api::oidc_settings(&issuer, "edgelink-web", None));
                }
                tweak(c);
            },
        )
        .await
        .expect("api-server");
        stack.api = Some(api_run);
        Some(stack)
    }

    /// Starts remote-proxy; with `addrs`, on those exact addresses (a
    /// restart), else on port 0.
    pub async fn start_relay(&mut self, addrs: Option<(SocketAddr, SocketAddr)>) {
        let (t, i) =
            addrs.unwrap_or_else(|| (SocketAddr::from(([127, 0, 0, 1], 0)), SocketAddr::from(([127, 0, 0, 1], 0))));
        let tunnel = bind_retry(t).await;
        let internal = bind_retry(i).await;
        let devices = match self.devices_addr {
            Some(addr) => Some(bind_retry(addr).await),
            None => None,
        };
        let tunnel_addr = tunnel.local_addr().expect("addr");
        let internal_addr = internal.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let store = self.store.clone();
        let task = tokio::spawn(edgelink_relay::run_with_devices(
            self.relay_config.clone(),
            store,
            tunnel,
            internal,
            devices,
            shutdown.clone(),
        ));
        self.relay = Some(RelayRun { tunnel_addr, internal_addr, devices_addr: self.devices_addr, shutdown, task });
    }

    /// Starts another remote-proxy instance (its own instance id) on the
    /// same database, on port 0; it runs until the returned handle stops.
    pub async fn extra_relay(&self) -> RelayRun {
        let tunnel = bind_retry(SocketAddr::from(([127, 0, 0, 1], 0))).await;
        let internal = bind_retry(SocketAddr::from(([127, 0, 0, 1], 0))).await;
        let tunnel_addr = tunnel.local_addr().expect("addr");
        let internal_addr = internal.local_addr().expect("addr");
        let mut config = RelayConfig {
            instance_id: Some(format!("relay-{}", uuid::Uuid::new_v4().simple())),
            ..self.relay_config.clone()
        };
        // Its own device listener, serving the same device origins.
        let devices = match config.devices.as_mut() {
            Some(d) => {
                let l = bind_retry(SocketAddr::from(([127, 0, 0, 1], 0))).await;
                d.listen = l.local_addr().expect("addr");
                Some(l)
            }
            None => None,
        };
        let devices_addr = devices.as_ref().map(|l| l.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(edgelink_relay::run_with_devices(
            config,
            self.store.clone(),
            tunnel,
            internal,
            devices,
            shutdown.clone(),
        ));
        RelayRun { tunnel_addr, internal_addr, devices_addr, shutdown, task }
    }

    /// What every api-server of this stack shares: the database, the
    /// relay's tunnel URL for pairing devices, the relay secret.
    fn shared_api_settings(&self) -> impl FnOnce(&mut ApiConfig) + Send + 'static {
        let db_url = self.database_url.clone();
        let tunnel_url = self.tunnel_url();
        let devices_url = self.relay_config.devices.as_ref().map(|d| d.url.clone());
        move |c| {
            c.devices_url = devices_url;
            c.database_url = db_url;
            c.agent_tunnel_url = tunnel_url;
            c.relay_internal_secret = Some(SecretString::from(SECRET));
        }
    }

    /// Another api-server on the same database with the same signing and
    /// cookie keys (a second instance behind a load balancer).
    pub async fn extra_api(&self) -> api::Api {
        self.extra_api_with(|_| {}).await
    }

    /// [`Stack::extra_api`] with `tweak` applied last (as `Options::api`).
    pub async fn extra_api_with(&self, tweak: fn(&mut ApiConfig)) -> api::Api {
        let (key, _) = SigningKey::load_or_generate(&self.signing_key_file).expect("signing key");
        let shared = self.shared_api_settings();
        api::spawn(
            self.store.clone(),
            key,
            CookieKeys::new(vec![self.cookie_key.clone()]).expect("keys"),
            move |c, _| {
                shared(c);
                tweak(c);
            },
        )
        .await
        .expect("api-server")
    }

    /// Stops remote-proxy; returns its addresses for a restart.
    pub async fn stop_relay(&mut self) -> (SocketAddr, SocketAddr) {
        let r = self.relay.take().expect("relay running");
        let addrs = (r.tunnel_addr, r.internal_addr);
        r.stop().await;
        addrs
    }

    fn relay(&self) -> &RelayRun {
        self.relay.as_ref().expect("relay running")
    }

    /// `ws://…/tunnel` of the running relay.
    pub fn tunnel_url(&self) -> String {
        format!("ws://{}/tunnel", self.relay().tunnel_addr)
    }

    /// Base URL of the internal API.
    pub fn internal_url(&self) -> String {
        format!("http://{}", self.relay().internal_addr)
    }

    /// An internal API client with the right secret.
    pub fn internal(&self) -> Client {
        Client::new(&self.internal_url(), SecretString::from(SECRET)).expect("client")
    }

    /// Registers a device owned by `owner_email` with a fresh Ed25519 key.
    pub async fn add_device(&self, owner_email: &str) -> Device {
        let key = AgentKey::generate().expect("key");
        let spec = edgelink_api::provision::DeviceSpec {
            owner_email: owner_email.into(),
            name: "test device".into(),
            device_type: "gateway".into(),
            public_key_pem: key.public_key_pem(),
        };
        let d = edgelink_api::provision::add_device(&self.store, &spec).await.expect("add device");
        Device { id: d.id, owner_id: d.owner_id, key_pem: key.private_key_pem() }
    }

    /// A new device of `owner_email` with a running, connected agent and
    /// its live session: the start of most tests.
    pub async fn connected_device(&self, owner_email: &str) -> (Device, AgentRun, SessionSummary) {
        let device = self.add_device(owner_email).await;
        let mut agent = self.spawn_agent(&device);
        agent.connected().await;
        let session = self.wait_session(&device.id, None).await;
        (device, agent, session)
    }

    /// Agent config for `device` against this stack, fast timings.
    pub fn agent_config(&self, device: &Device) -> AgentConfig {
        AgentConfig {
            api_url: self.api_url.clone(),
            tunnel_url: self.tunnel_url(),
            device_id: Some(device.id.clone()),
            local_service: format!("http://{}", self.origin),
            ping_interval: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(1500),
            heartbeat_interval: Duration::from_millis(500),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_millis(400),
            request_timeout: Duration::from_secs(5),
            ..AgentConfig::default()
        }
    }

    /// Starts an agent for `device`.
    pub fn spawn_agent(&self, device: &Device) -> AgentRun {
        self.spawn_agent_with(self.agent_config(device), device)
    }

    /// Starts an agent with an explicit config.
    pub fn spawn_agent_with(&self, config: AgentConfig, device: &Device) -> AgentRun {
        let (tx, rx) = watch::channel(Status::Connecting);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(edgelink_agent::run::run(config, device.key(), tx, shutdown.clone()));
        AgentRun { status: rx, shutdown, task }
    }

    /// Waits (at most 10 s) until `device` has a live session whose id is
    /// not `not`; returns it.
    pub async fn wait_session(&self, device_id: &str, not: Option<&str>) -> SessionSummary {
        let client = self.internal();
        wait_until(&format!("a session for device {device_id}"), Duration::from_secs(10), || async {
            let list = client.list_sessions().await.ok()?;
            list.sessions.into_iter().find(|s| s.device_id == device_id && Some(s.token.as_str()) != not)
        })
        .await
    }

    /// Waits (at most 10 s) until the shared registry in the store has an
    /// open session of `device` other than `not`, on any relay; returns it.
    pub async fn wait_session_row(&self, device: &Device, not: Option<&str>) -> edgelink_store::TunnelSession {
        wait_until(&format!("an open session row for device {}", device.id), Duration::from_secs(10), || async {
            let s = self.store.open_session_for_device(&device.owner_id, &device.id).await.expect("store")?;
            (Some(s.id.as_str()) != not).then_some(s)
        })
        .await
    }

    /// Waits (at most `within`) until `device` has no live session.
    pub async fn wait_no_session(&self, device_id: &str, within: Duration) -> Duration {
        let client = self.internal();
        let start = tokio::time::Instant::now();
        wait_until(&format!("no live session of {device_id}"), within, || async {
            let list = client.list_sessions().await.expect("list");
            (!list.sessions.iter().any(|s| s.device_id == device_id)).then_some(())
        })
        .await;
        start.elapsed()
    }

    /// Waits (at most 5 s) until the store records session `id` as closed;
    /// the registry forgets a session just before the store is updated.
    pub async fn wait_closed_in_store(&self, id: &str) -> edgelink_store::TunnelSession {
        wait_until(&format!("session {id} recorded as closed"), Duration::from_secs(5), || async {
            self.store.get_session(id).await.expect("store").filter(|s| s.disconnected_at.is_some())
        })
        .await
    }

    /// This stack's session key ring (as its api-servers have it).
    pub fn cookie_keys(&self) -> CookieKeys {
        CookieKeys::new(vec![self.cookie_key.clone()]).expect("keys")
    }

    /// A file holding this stack's session key (base64), for the operator
    /// commands that must share the servers' key ring.
    pub fn session_key_file(&self) -> PathBuf {
        use base64::Engine;
        let path = std::env::temp_dir().join(format!("edgelink-test-{}.key", uuid::Uuid::new_v4().simple()));
        let text = base64::engine::general_purpose::STANDARD.encode(&self.cookie_key);
        std::fs::write(&path, text).expect("write the session key file");
        path
    }

    /// A raw forward URL for `session` and `path`.
    pub fn forward_url(&self, session: &str, path: &str) -> String {
        self.internal().forward_url(session, path)
    }
}

/// Polls `check` every 20 ms until it gives a value; panics naming `what`
/// when `within` passes first. The one way tests wait for something that
/// happens in the background.
pub async fn wait_until<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "waited {within:?} for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn bind_retry(addr: SocketAddr) -> TcpListener {
    // A restart rebinds the old port; the old socket may linger briefly.
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("could not bind {addr}");
}

/// An HTTP client for tests (no proxy, no redirects).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// The path of one of the workspace's binaries (`api-server`,
/// `remote-proxy`, `edge-agent`) in the target directory this test runs
/// from. `cargo test --workspace` (what `make test` runs) builds them
/// before any test starts.
pub fn binary(name: &str) -> PathBuf {
    // A test executable lives in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    let path = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} is missing: build it first (cargo build -p {name}, or make test)", path.display());
    path
}

/// Runs one of the workspace's binaries to completion (with `env` set);
/// returns its exit code, stdout and stderr.
pub fn run_binary(name: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = std::process::Command::new(binary(name))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("run {name}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`), or 0 off Linux.
pub fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
