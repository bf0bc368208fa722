//! A real OpenSSH server for tests (feature `testing`): Debian's `sshd`
//! in inetd mode (`sshd -i`), one process per connection accepted on a
//! loopback port chosen by the kernel, with a throwaway host key, a
//! throwaway client key and a throwaway account
//! ([`OpenSsh::USER`], created on first use; the tests run as root, as CI
//! does). [`OpenSsh::restart`] ends every running server process, as a
//! restart of the daemon does, while the port keeps accepting.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::{Credential, Target};

/// A running OpenSSH server on 127.0.0.1.
pub struct OpenSsh {
    /// The port it accepts on.
    pub port: u16,
    /// Its host key's fingerprint (`SHA256:…`).
    pub host_fingerprint: String,
    /// An Ed25519 private key (OpenSSH format) the account accepts.
    pub client_key: String,
    dir: PathBuf,
    children: Arc<Mutex<Vec<Child>>>,
    accepted: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Creates the test account once per process and sets its password.
fn ensure_user() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let exists = |u: &str| Command::new("id").arg("-u").arg(u).output().is_ok_and(|o| o.status.success());
        if !exists(OpenSsh::USER) {
            // Another test process may create it at the same moment.
            let _ = Command::new("useradd").args(["--create-home", "--shell", "/bin/sh", OpenSsh::USER]).output();
            assert!(
                exists(OpenSsh::USER),
                "cannot create the test account {} (the SSH tests run as root, as CI does)",
                OpenSsh::USER
            );
        }
        let mut chpasswd = Command::new("chpasswd").stdin(Stdio::piped()).spawn().expect("chpasswd");
        {
            use std::io::Write;
            let mut stdin = chpasswd.stdin.take().expect("chpasswd stdin");
            writeln!(stdin, "{}:{}", OpenSsh::USER, OpenSsh::PASSWORD).expect("chpasswd input");
        }
        assert!(chpasswd.wait().is_ok_and(|s| s.success()), "chpasswd failed");
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
    });
}

impl OpenSsh {
    /// The throwaway account.
    pub const USER: &'static str = "edgelink-ssh-test";
    /// Its password.
    pub const PASSWORD: &'static str = "edgelink-ssh-test-Pw-7c1e";

    /// Starts a server: keys, config, and the accepting task.
    pub async fn start() -> OpenSsh {
        ensure_user();
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "edgelink-sshd-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("sshd dir");
        let keygen = |file: &Path| {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "edgelink-test", "-f"])
                .arg(file))
        };
        keygen(&dir.join("host_key"));
        keygen(&dir.join("client_key"));
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).expect("authorized_keys");
        let listed = run(Command::new("ssh-keygen").args(["-l", "-E", "sha256", "-f"]).arg(dir.join("host_key.pub")));
        let host_fingerprint = listed.split_whitespace().nth(1).expect("fingerprint").to_owned();
        let client_key = std::fs::read_to_string(dir.join("client_key")).expect("client key");
        std::fs::write(
            dir.join("sshd_config"),
            format!(
                "HostKey {d}/host_key\nPidFile none\nUsePAM no\nPasswordAuthentication yes\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPermitRootLogin no\n\
                 AllowUsers {u}\nMaxSessions 10\nUseDNS no\nLogLevel VERBOSE\n",
                d = dir.display(),
                u = Self::USER
            ),
        )
        .expect("sshd_config");
        // The account reads its authorized_keys through this directory.
        use std::os::unix::fs::PermissionsExt;
        for f in ["", "authorized_keys"] {
            let _ = std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o755));
        }

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let children: Arc<Mutex<Vec<Child>>> = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicU64::new(0));
        let (kids, count, d) = (Arc::clone(&children), Arc::clone(&accepted), dir.clone());
        let accept = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let Ok(sock) = sock.into_std() else { continue };
                let _ = sock.set_nonblocking(false);
                let (Ok(a), Ok(b)) = (sock.try_clone(), sock.try_clone()) else { continue };
                let log = std::fs::OpenOptions::new().create(true).append(true).open(d.join("sshd.log"));
                let child = Command::new("/usr/sbin/sshd")
                    .arg("-i")
                    .arg("-e")
                    .arg("-f")
                    .arg(d.join("sshd_config"))
                    .stdin(Stdio::from(OwnedFd::from(a)))
                    .stdout(Stdio::from(OwnedFd::from(b)))
                    .stderr(log.map(Stdio::from).unwrap_or_else(|_| Stdio::null()))
                    .spawn();
                drop(sock);
                if let Ok(child) = child {
                    count.fetch_add(1, Ordering::Relaxed);
                    let mut kids = kids.lock().unwrap_or_else(|p| p.into_inner());
                    kids.retain_mut(|c| c.try_wait().is_ok_and(|s| s.is_none()));
                    kids.push(child);
                }
            }
        });
        OpenSsh { port, host_fingerprint, client_key, dir, children, accepted, accept }
    }

    /// Connections the server has accepted so far.
    pub fn connections(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Ends every running server process (their connections drop); the
    /// port keeps accepting new ones.
    pub fn restart(&self) {
        let mut kids = self.children.lock().unwrap_or_else(|p| p.into_inner());
        for mut c in kids.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The server's log (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// A target logging in with the password, host key pinned.
    pub fn password_target(&self) -> Target {
        self.target(Credential::Password(Self::PASSWORD.into()))
    }

    /// A target logging in with the client key, host key pinned.
    pub fn key_target(&self) -> Target {
        self.target(Credential::PrivateKey { key: self.client_key.clone().into(), passphrase: None })
    }

    fn target(&self, credential: Credential) -> Target {
        Target {
            host: "127.0.0.1".into(),
            port: self.port,
            username: Self::USER.into(),
            credential,
            host_key: Some(self.host_fingerprint.clone()),
        }
    }
}

impl Drop for OpenSsh {
    fn drop(&mut self) {
        self.accept.abort();
        self.restart();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
