//! Pooled SSH connections and running one command on a channel of one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use russh::client::{self, AuthResult};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Sig};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{Credential, Error, Limits, Outcome, Target, normalize_fingerprint};

/// Commands running at once on one connection; OpenSSH's default
/// `MaxSessions` is 10. Further commands for the same server wait.
pub const CHANNELS_PER_CONNECTION: usize = 8;

/// How the pool connects and how long it keeps connections.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// An unused connection is closed after this long.
    pub idle: Duration,
    /// SSH keepalives on idle connections; three unanswered end one.
    pub keepalive: Duration,
    /// Pinned host keys by `host:port` (or `host` for any port): the
    /// fingerprints accepted when a request pins none.
    pub pins: HashMap<String, Vec<String>>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig { idle: Duration::from_secs(60), keepalive: Duration::from_secs(15), pins: HashMap::new() }
    }
}

/// A pool of SSH connections; cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    config: PoolConfig,
    ssh: Arc<client::Config>,
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
    opened: std::sync::atomic::AtomicU64,
}

/// What a connection is shared by: the same server, account, credential
/// and pinned key. Credentials are only in it as a digest.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    host: String,
    port: u16,
    username: String,
    credential: [u8; 32],
    pins: Vec<String>,
}

/// One pooled connection (or none yet) and its channel budget.
struct Slot {
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    channels: Semaphore,
    last_used: Mutex<Instant>,
}

struct Conn {
    handle: client::Handle<Checker>,
}

/// Accepts the server's host key only when its fingerprint is pinned, and
/// remembers the fingerprint for the error.
struct Checker {
    pins: Vec<String>,
    seen: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        // Certificates would need a trusted CA: not supported, refused.
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let ok = self.pins.iter().any(|p| p == &fingerprint);
        *lock(&self.seen) = Some(fingerprint);
        Ok(ok)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pool {
    /// A pool with `config`. Inside a tokio runtime it also starts the task
    /// that closes idle connections (it ends with the last clone).
    pub fn new(config: PoolConfig) -> Pool {
        let ssh = client::Config {
            keepalive_interval: Some(config.keepalive),
            keepalive_max: 3,
            nodelay: true,
            ..client::Config::default()
        };
        let inner = Arc::new(Inner {
            config,
            ssh: Arc::new(ssh),
            slots: Mutex::new(HashMap::new()),
            opened: std::sync::atomic::AtomicU64::new(0),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(sweep(Arc::downgrade(&inner)));
        }
        Pool { inner }
    }

    /// SSH connections this pool has opened so far.
    pub fn connections_opened(&self) -> u64 {
        self.inner.opened.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs `command` on `target` within `limits`. A command that ran is
    /// an [`Outcome`] whatever its exit status; an error means it did not
    /// run (or the session broke under it).
    pub async fn run(&self, target: &Target, command: &str, limits: Limits) -> Result<Outcome, Error> {
        self.run_cancellable(target, command, limits, &CancellationToken::new()).await
    }

    /// [`Pool::run`], and when `cancel` fires the command is killed (or,
    /// if it has not started, never started): the outcome says `canceled`.
    pub async fn run_cancellable(
        &self,
        target: &Target,
        command: &str,
        limits: Limits,
        cancel: &CancellationToken,
    ) -> Result<Outcome, Error> {
        if target.host.is_empty() || target.port == 0 {
            return Err(Error::Invalid("the SSH host and port are required"));
        }
        if target.username.is_empty() {
            return Err(Error::Invalid("the SSH username is required"));
        }
        if command.trim().is_empty() {
            return Err(Error::Invalid("the command is empty"));
        }
        let pins = self.pins_for(target)?;
        let deadline = Instant::now() + limits.timeout;
        let addr = format!("{}:{}", target.host, target.port);
        let timeout = || Error::Timeout { addr: addr.clone(), timeout: limits.timeout };
        let key = Key {
            host: target.host.clone(),
            port: target.port,
            username: target.username.clone(),
            credential: digest(&target.credential),
            pins: pins.clone(),
        };
        let slot = Arc::clone(lock(&self.inner.slots).entry(key).or_insert_with(|| {
            Arc::new(Slot {
                conn: tokio::sync::Mutex::new(None),
                channels: Semaphore::new(CHANNELS_PER_CONNECTION),
                last_used: Mutex::new(Instant::now()),
            })
        }));
        let _channel = tokio::time::timeout_at(deadline, slot.channels.acquire())
            .await
            .map_err(|_| timeout())?
            .map_err(|_| Error::Session { addr: addr.clone(), reason: "pool closed".into() })?;
        *lock(&slot.last_used) = Instant::now();
        // A pooled connection that turns out dead (the server restarted,
        // the network dropped it) before the command started is replaced
        // once; a command that started is never sent twice.
        let mut retried = false;
        loop {
            let (conn, reused) = {
                let mut current = tokio::time::timeout_at(deadline, slot.conn.lock()).await.map_err(|_| timeout())?;
                match current.as_ref() {
                    Some(c) if !c.handle.is_closed() => (Arc::clone(c), true),
                    _ => {
                        let fresh = tokio::time::timeout_at(deadline, self.connect(target, &addr, pins.clone()))
                            .await
                            .map_err(|_| timeout())??;
                        let fresh = Arc::new(fresh);
                        *current = Some(Arc::clone(&fresh));
                        (fresh, false)
                    }
                }
            };
            let mut pause = Duration::from_millis(5);
            let channel = loop {
                match tokio::time::timeout_at(deadline, conn.handle.channel_open_session()).await {
                    Err(_) => return Err(timeout()),
                    Ok(Ok(channel)) => break Ok(channel),
                    // A live connection whose server refuses another session
                    // for now (OpenSSH counts sessions until both ends have
                    // closed them, against MaxSessions): wait and ask again.
                    Ok(Err(russh::Error::ChannelOpenFailure(why))) if !conn.handle.is_closed() => {
                        tracing::debug!(%addr, ?why, "ssh server refused a session; retrying");
                        if Instant::now() + pause >= deadline {
                            return Err(timeout());
                        }
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(200));
                    }
                    Ok(Err(e)) => break Err(Run::NotStarted(e.to_string())),
                }
            };
            if cancel.is_cancelled() {
                return Ok(Outcome { canceled: true, ..Outcome::default() });
            }
            let ran = match channel {
                Ok(channel) => execute(channel, command, limits, deadline, cancel, &addr).await,
                Err(e) => Err(e),
            };
            *lock(&slot.last_used) = Instant::now();
            match ran {
                Ok(outcome) => return Ok(outcome),
                Err(Run::Failed(e)) => return Err(e),
                Err(Run::NotStarted(reason)) => {
                    forget(&slot, &conn).await;
                    if reused && !retried {
                        tracing::debug!(%addr, %reason, "pooled ssh connection unusable; reconnecting");
                        retried = true;
                        continue;
                    }
                    return Err(Error::Session { addr, reason });
                }
            }
        }
    }

    /// The fingerprints accepted for `target`: the request's pin, else the
    /// configuration's for `host:port` or `host`.
    fn pins_for(&self, target: &Target) -> Result<Vec<String>, Error> {
        if let Some(pin) = &target.host_key {
            let pin = normalize_fingerprint(pin)
                .ok_or(Error::Invalid("the host key must be an OpenSSH SHA256 fingerprint (SHA256:…)"))?;
            return Ok(vec![pin]);
        }
        let pins = &self.inner.config.pins;
        let found = pins.get(&format!("{}:{}", target.host, target.port)).or_else(|| pins.get(&target.host));
        Ok(found.map(|p| p.iter().filter_map(|f| normalize_fingerprint(f)).collect()).unwrap_or_default())
    }

    async fn connect(&self, target: &Target, addr: &str, pins: Vec<String>) -> Result<Conn, Error> {
        let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| Error::Connect { addr: addr.to_owned(), reason: e.to_string() })?;
        let _ = tcp.set_nodelay(true);
        let seen = Arc::new(Mutex::new(None));
        let checker = Checker { pins: pins.clone(), seen: Arc::clone(&seen) };
        let mut handle = client::connect_stream(Arc::clone(&self.inner.ssh), tcp, checker).await.map_err(|e| {
            match lock(&seen).take() {
                Some(fingerprint) if !pins.contains(&fingerprint) => Error::HostKey {
                    addr: addr.to_owned(),
                    fingerprint,
                    why: if pins.is_empty() {
                        "no host key is pinned for this server (pin one in the request or the configuration)"
                    } else {
                        "it is not the pinned key"
                    },
                },
                _ => Error::Session { addr: addr.to_owned(), reason: e.to_string() },
            }
        })?;
        self.inner.opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let session = |e: russh::Error| Error::Session { addr: addr.to_owned(), reason: e.to_string() };
        let result = match &target.credential {
            Credential::Password(p) => {
                handle.authenticate_password(&target.username, p.expose_secret()).await.map_err(session)?
            }
            Credential::PrivateKey { key, passphrase } => {
                let key =
                    russh::keys::decode_secret_key(key.expose_secret(), passphrase.as_ref().map(|p| p.expose_secret()))
                        .map_err(|e| Error::Key(e.to_string()))?;
                let key = PrivateKeyWithHashAlg::new(Arc::new(key), None);
                handle.authenticate_publickey(&target.username, key).await.map_err(session)?
            }
        };
        match result {
            AuthResult::Success => Ok(Conn { handle }),
            AuthResult::Failure { .. } => {
                let _ = handle.disconnect(russh::Disconnect::ByApplication, "", "").await;
                Err(Error::Auth { addr: addr.to_owned(), user: target.username.clone() })
            }
        }
    }
}

/// Drops `conn` from `slot` if it is still the slot's connection.
async fn forget(slot: &Slot, conn: &Arc<Conn>) {
    let mut current = slot.conn.lock().await;
    if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
        *current = None;
    }
}

fn digest(credential: &Credential) -> [u8; 32] {
    let mut h = Sha256::new();
    match credential {
        Credential::Password(p) => {
            h.update(b"password\0");
            h.update(p.expose_secret().as_bytes());
        }
        Credential::PrivateKey { key, passphrase } => {
            h.update(b"key\0");
            h.update(key.expose_secret().as_bytes());
            h.update(b"\0");
            if let Some(p) = passphrase {
                h.update(p.expose_secret().as_bytes());
            }
        }
    }
    h.finalize().into()
}

/// Output kept up to a cap; the rest is counted as dropped.
#[derive(Default)]
struct Capped {
    kept: Vec<u8>,
    truncated: bool,
}

impl Capped {
    fn push(&mut self, data: &[u8], cap: usize) {
        let room = cap.saturating_sub(self.kept.len());
        if data.len() > room {
            self.truncated = true;
        }
        self.kept.extend_from_slice(&data[..data.len().min(room)]);
    }
}

/// Why a command has no outcome: it never started (safe to send again on
/// another connection), or it failed after it may have started.
enum Run {
    NotStarted(String),
    Failed(Error),
}

async fn execute(
    mut channel: russh::Channel<client::Msg>,
    command: &str,
    limits: Limits,
    deadline: Instant,
    cancel: &CancellationToken,
    addr: &str,
) -> Result<Outcome, Run> {
    let failed = |reason: &str| Run::Failed(Error::Session { addr: addr.to_owned(), reason: reason.to_owned() });
    channel.exec(true, command).await.map_err(|e| Run::NotStarted(e.to_string()))?;
    let (mut out, mut err) = (Capped::default(), Capped::default());
    let mut outcome = Outcome::default();
    let mut started = false;
    loop {
        let msg = tokio::select! {
            msg = channel.wait() => msg,
            () = tokio::time::sleep_until(deadline) => {
                outcome.timed_out = true;
                // The process gets KILL (OpenSSH delivers it to an exec
                // without a terminal) and the channel is closed.
                let _ = channel.signal(Sig::KILL).await;
                let _ = channel.close().await;
                outcome.signal.get_or_insert_with(|| "KILL".to_owned());
                break;
            }
            () = cancel.cancelled() => {
                outcome.canceled = true;
                let _ = channel.signal(Sig::KILL).await;
                let _ = channel.close().await;
                outcome.signal.get_or_insert_with(|| "KILL".to_owned());
                break;
            }
        };
        match msg {
            Some(ChannelMsg::Success) => started = true,
            Some(ChannelMsg::Failure) if !started => return Err(failed("the server refused to run the command")),
            Some(ChannelMsg::Data { data }) => out.push(&data, limits.output_cap),
            Some(ChannelMsg::ExtendedData { data, ext: 1 }) => err.push(&data, limits.output_cap),
            Some(ChannelMsg::ExitStatus { exit_status }) => outcome.exit_code = Some(exit_status),
            Some(ChannelMsg::ExitSignal { signal_name, .. }) => outcome.signal = Some(signal_name_of(&signal_name)),
            Some(ChannelMsg::Close) | None => break,
            Some(_) => {}
        }
    }
    if !outcome.timed_out && !outcome.canceled && outcome.exit_code.is_none() && outcome.signal.is_none() {
        // The channel ended without the command's end: the connection
        // broke under it.
        return Err(if started || !out.kept.is_empty() || !err.kept.is_empty() {
            failed("the connection ended before the command did")
        } else {
            Run::NotStarted("the connection ended before the command started".into())
        });
    }
    outcome.stdout = String::from_utf8_lossy(&out.kept).into_owned();
    outcome.stderr = String::from_utf8_lossy(&err.kept).into_owned();
    outcome.stdout_truncated = out.truncated;
    outcome.stderr_truncated = err.truncated;
    Ok(outcome)
}

fn signal_name_of(sig: &Sig) -> String {
    match sig {
        Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    }
}

/// Closes connections unused for longer than the pool's idle time, until
/// the pool is dropped.
async fn sweep(pool: Weak<Inner>) {
    loop {
        let every = match pool.upgrade() {
            Some(inner) => (inner.config.idle / 2).max(Duration::from_millis(100)),
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(inner) = pool.upgrade() else { return };
        let now = Instant::now();
        let mut closing = Vec::new();
        lock(&inner.slots).retain(|_, slot| {
            let idle = now.duration_since(*lock(&slot.last_used)) >= inner.config.idle;
            let unused = slot.channels.available_permits() == CHANNELS_PER_CONNECTION;
            if !(idle && unused) {
                return true;
            }
            match slot.conn.try_lock() {
                Ok(mut conn) => {
                    closing.extend(conn.take());
                    false
                }
                Err(_) => true,
            }
        });
        for conn in closing {
            let _ = conn.handle.disconnect(russh::Disconnect::ByApplication, "idle", "").await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_beyond_the_cap_is_dropped_and_flagged() {
        let mut c = Capped::default();
        c.push(b"hello ", 8);
        assert!(!c.truncated);
        c.push(b"world", 8);
        assert_eq!(c.kept, b"hello wo");
        assert!(c.truncated);
    }

    #[test]
    fn connections_are_shared_only_with_the_same_credential() {
        let a = digest(&Credential::Password("one".into()));
        assert_eq!(a, digest(&Credential::Password("one".into())));
        assert_ne!(a, digest(&Credential::Password("two".into())));
        assert_ne!(a, digest(&Credential::PrivateKey { key: "one".into(), passphrase: None }));
    }

    #[tokio::test]
    async fn unpinned_servers_and_bad_requests_are_refused_before_connecting() {
        let pool = Pool::new(PoolConfig::default());
        let mut t = Target {
            host: "127.0.0.1".into(),
            port: 22,
            username: "u".into(),
            credential: Credential::Password("p".into()),
            host_key: Some("md5:nope".into()),
        };
        assert!(matches!(pool.run(&t, "true", Limits::default()).await, Err(Error::Invalid(_))));
        t.host_key = None;
        assert!(matches!(pool.run(&t, "  ", Limits::default()).await, Err(Error::Invalid(_))));
        assert_eq!(pool.connections_opened(), 0);
    }
}
