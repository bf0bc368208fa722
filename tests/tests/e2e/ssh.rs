//! The SSH hop (`edgelink_ssh`) against a real OpenSSH server: password
//! and key authentication, host-key pinning, time and output limits, one
//! pooled connection for many commands, and reconnection after the
//! server restarts.

use std::time::Duration;

use edgelink_ssh::testing::OpenSsh;
use edgelink_ssh::{Credential, Error, Limits, Pool, PoolConfig};

fn limits(secs: u64) -> Limits {
    Limits { timeout: Duration::from_secs(secs), output_cap: 64 * 1024 }
}

#[tokio::test]
async fn password_and_key_logins_run_commands_with_their_exit_status_and_both_outputs() {
    let sshd = OpenSsh::start().await;
    let pool = Pool::new(PoolConfig::default());
    let out = pool
        .run(&sshd.password_target(), "echo out; echo err >&2; whoami; exit 3", limits(20))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    assert_eq!(out.stdout, format!("out\n{}\n", OpenSsh::USER));
    assert_eq!(out.stderr, "err\n");
    assert_eq!(out.exit_code, Some(3));
    assert!(!out.timed_out && !out.stdout_truncated && !out.stderr_truncated);

    let out = pool.run(&sshd.key_target(), "printf key", limits(20)).await.expect("key login");
    assert_eq!((out.stdout.as_str(), out.exit_code), ("key", Some(0)));
}

#[tokio::test]
async fn a_wrong_password_or_a_foreign_key_is_an_auth_error_without_the_secret() {
    let sshd = OpenSsh::start().await;
    let pool = Pool::new(PoolConfig::default());
    let mut t = sshd.password_target();
    t.credential = Credential::Password("not-the-Pw-93b2".into());
    let err = pool.run(&t, "true", limits(20)).await.expect_err("wrong password");
    assert!(matches!(err, Error::Auth { .. }), "{err}");
    assert!(!err.to_string().contains("not-the-Pw-93b2"));

    // A key the account does not list.
    let other = OpenSsh::start().await;
    let mut t = sshd.key_target();
    t.credential = Credential::PrivateKey { key: other.client_key.clone().into(), passphrase: None };
    let err = pool.run(&t, "true", limits(20)).await.expect_err("foreign key");
    assert!(matches!(err, Error::Auth { .. }), "{err}");

    // A key that is not a key.
    t.credential = Credential::PrivateKey { key: "-----BEGIN NOTHING-----".into(), passphrase: None };
    let err = pool.run(&t, "true", limits(20)).await.expect_err("garbage key");
    assert!(matches!(err, Error::Key(_)), "{err}");
    assert!(!err.to_string().contains("BEGIN NOTHING"));
}

#[tokio::test]
async fn host_keys_are_pinned_by_the_request_or_the_configuration() {
    let sshd = OpenSsh::start().await;
    let other = OpenSsh::start().await;

    // No pin anywhere: refused, and the error shows the key to pin.
    let pool = Pool::new(PoolConfig::default());
    let mut t = sshd.password_target();
    t.host_key = None;
    let err = pool.run(&t, "true", limits(20)).await.expect_err("unknown host key");
    match &err {
        Error::HostKey { fingerprint, .. } => assert_eq!(fingerprint, &sshd.host_fingerprint),
        other => panic!("{other}"),
    }

    // The wrong pin: refused.
    t.host_key = Some(other.host_fingerprint.clone());
    let err = pool.run(&t, "true", limits(20)).await.expect_err("wrong pin");
    assert!(matches!(err, Error::HostKey { .. }), "{err}");

    // Pinned in the configuration for host:port: accepted.
    t.host_key = None;
    let mut config = PoolConfig::default();
    config.pins.insert(format!("127.0.0.1:{}", sshd.port), vec![sshd.host_fingerprint.clone()]);
    let pool = Pool::new(config);
    let out = pool.run(&t, "echo pinned", limits(20)).await.expect("configured pin");
    assert_eq!(out.stdout, "pinned\n");
}

/// True while a process whose command line contains `needle` runs.
fn running(needle: &str) -> bool {
    std::process::Command::new("pgrep").arg("-f").arg(needle).output().is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn the_deadline_kills_the_command_and_long_output_is_capped() {
    let sshd = OpenSsh::start().await;
    let pool = Pool::new(PoolConfig::default());
    // A sleep only this test runs, to find it among the machine's processes.
    let marker = format!("sleep 41.{}", std::process::id());
    let started = std::time::Instant::now();
    let out = pool.run(&sshd.password_target(), &format!("echo begun; {marker}"), limits(2)).await.expect("ran");
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.exit_code, None);
    assert_eq!(out.stdout, "begun\n");
    assert!(started.elapsed() < Duration::from_secs(10));
    let gone = async {
        while running(&marker) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), gone).await.expect("the timed-out command still runs on the server");

    let capped = Limits { timeout: Duration::from_secs(20), output_cap: 1000 };
    let out = pool.run(&sshd.password_target(), "head -c 100000 /dev/zero | tr '\\0' x", capped).await.expect("ran");
    assert_eq!(out.stdout.len(), 1000);
    assert!(out.stdout_truncated && !out.stderr_truncated);
    assert_eq!(out.exit_code, Some(0));
}

#[tokio::test]
async fn one_connection_carries_many_commands_and_a_restart_is_survived() {
    let sshd = OpenSsh::start().await;
    let pool = Pool::new(PoolConfig::default());
    let t = sshd.password_target();
    for i in 0..5 {
        let out = pool.run(&t, &format!("echo {i}"), limits(20)).await.expect("ran");
        assert_eq!(out.stdout, format!("{i}\n"));
    }
    // Concurrent commands beyond one connection's channel budget wait.
    let runs = (0..12).map(|i| {
        let (pool, t) = (pool.clone(), t.clone());
        async move { pool.run(&t, &format!("sleep 0.2; echo {i}"), limits(30)).await }
    });
    for (i, out) in futures::future::join_all(runs).await.into_iter().enumerate() {
        assert_eq!(out.expect("concurrent").stdout, format!("{i}\n"));
    }
    // Many short commands at once, several rounds: channels are given back
    // to the server as they end (no session left open on its side).
    for _ in 0..5 {
        let runs = (0..16).map(|_| {
            let (pool, t) = (pool.clone(), t.clone());
            async move { pool.run(&t, "true", limits(30)).await }
        });
        for out in futures::future::join_all(runs).await {
            assert_eq!(out.expect("short").exit_code, Some(0));
        }
    }
    assert_eq!(sshd.connections(), 1, "{}", sshd.log());
    assert_eq!(pool.connections_opened(), 1);

    // The server restarts: its connection is gone; the next command
    // reconnects once and runs.
    sshd.restart();
    let out = pool.run(&t, "echo again", limits(20)).await.expect("after restart");
    assert_eq!(out.stdout, "again\n");
    assert_eq!(sshd.connections(), 2);

    // Another password is another connection, never the pooled one.
    let mut wrong = t.clone();
    wrong.credential = Credential::Password("wrong-Pw-e4".into());
    assert!(matches!(pool.run(&wrong, "true", limits(20)).await, Err(Error::Auth { .. })));
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let sshd = OpenSsh::start().await;
    let pool = Pool::new(PoolConfig { idle: Duration::from_millis(300), ..PoolConfig::default() });
    pool.run(&sshd.password_target(), "true", limits(20)).await.expect("ran");
    // The sweeper closes it; the next command needs a new connection.
    let closed = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if sshd.log().contains("Disconnected from user") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), closed).await.expect("idle connection still open");
    pool.run(&sshd.password_target(), "true", limits(20)).await.expect("ran again");
    assert_eq!(pool.connections_opened(), 2);
}
