//! Running a command on the device itself, for native remote commands
//! (issue #13): only when the configuration enables it, only commands its
//! allowlist admits, as the configured OS account, with only the allowed
//! environment, in a process group of its own that is killed whole at the
//! deadline, and with its output capped.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use edgelink_ssh::{Limits, Outcome};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

/// What the device lets remote commands do.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Commands the device runs: each entry is matched against the
    /// command line (program and arguments joined by single spaces),
    /// exactly or as a pattern where `*` stands for any text and `?` for
    /// one character (`systemctl status *`). Empty: nothing runs.
    pub allow: Vec<String>,
    /// The account commands run as (resolved from /etc/passwd); `None`:
    /// the agent's own.
    pub run_as: Option<String>,
    /// Environment variables a request may set; everything else is
    /// dropped (the command starts with PATH, HOME, LANG and these).
    pub env_allow: Vec<String>,
}

/// Why a command was not run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// The allowlist does not admit it.
    #[error("command not allowed by this device's allowlist")]
    NotAllowed,
    /// An environment variable outside the allowlist.
    #[error("environment variable {0} is not allowed")]
    Env(String),
    /// The configured account does not exist.
    #[error("the account {0} does not exist on this device")]
    NoSuchUser(String),
    /// The program could not be started.
    #[error("cannot start the command: {0}")]
    Spawn(String),
    /// Empty program.
    #[error("the command is empty")]
    Empty,
}

/// `*`/`?` pattern match over the whole of `text`.
pub(crate) fn matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl Policy {
    /// Whether the allowlist admits `program args…`.
    pub fn allows(&self, program: &str, args: &[String]) -> bool {
        let mut line = program.to_owned();
        for a in args {
            line.push(' ');
            line.push_str(a);
        }
        self.allow.iter().any(|rule| matches(rule, &line))
    }
}

/// (uid, gid, home) of `user` from /etc/passwd.
fn account(user: &str) -> Option<(u32, u32, String)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[0] == user).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?, f[5].to_owned())))?
    })
}

async fn capped<R: AsyncRead + Unpin>(mut r: R, cap: usize) -> (Vec<u8>, bool) {
    let (mut kept, mut truncated, mut buf) = (Vec::new(), false, [0u8; 8192]);
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return (kept, truncated),
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                truncated |= n > room;
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// Runs `program args…` under `policy` within `limits`; when `cancel`
/// fires first, its process group is killed and the outcome says
/// `canceled`.
pub async fn run(
    policy: &Policy,
    program: &str,
    args: &[String],
    env: &HashMap<String, String>,
    limits: Limits,
    cancel: &CancellationToken,
) -> Result<Outcome, Refusal> {
    if program.trim().is_empty() {
        return Err(Refusal::Empty);
    }
    if !policy.allows(program, args) {
        return Err(Refusal::NotAllowed);
    }
    if let Some(k) = env.keys().find(|k| !policy.env_allow.iter().any(|a| a == *k)) {
        return Err(Refusal::Env(k.clone()));
    }
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).env_clear().stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").env("LANG", "C.UTF-8");
    match &policy.run_as {
        Some(user) => {
            let (uid, gid, home) = account(user).ok_or_else(|| Refusal::NoSuchUser(user.clone()))?;
            cmd.uid(uid).gid(gid).env("HOME", home).current_dir("/");
        }
        None => {
            if let Some(home) = std::env::var_os("HOME") {
                cmd.env("HOME", home);
            }
        }
    }
    cmd.envs(env);
    // Its own process group, so that the deadline ends what it started.
    cmd.process_group(0).kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| Refusal::Spawn(e.to_string()))?;
    let pgid = child.id().and_then(|id| rustix::process::Pid::from_raw(id as i32));
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(Refusal::Spawn("no output pipes".into()));
    };
    let out = tokio::spawn(capped(stdout, limits.output_cap));
    let err = tokio::spawn(capped(stderr, limits.output_cap));
    let mut outcome = Outcome::default();
    let ended = tokio::select! {
        status = tokio::time::timeout(limits.timeout, child.wait()) => status.ok(),
        () = cancel.cancelled() => None,
    };
    let status = match ended {
        Some(status) => status.ok(),
        None => {
            // The deadline, or a cancel: the whole group goes.
            if cancel.is_cancelled() {
                outcome.canceled = true;
            } else {
                outcome.timed_out = true;
            }
            if let Some(pgid) = pgid {
                let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            }
            child.wait().await.ok()
        }
    };
    if let Some(status) = status {
        use std::os::unix::process::ExitStatusExt;
        outcome.exit_code = status.code().and_then(|c| u32::try_from(c).ok());
        outcome.signal = status.signal().map(|s| match s {
            9 => "KILL".to_owned(),
            15 => "TERM".to_owned(),
            other => format!("signal {other}"),
        });
    }
    // Descendants that kept the pipes open are gone with the group; give
    // the readers a moment to drain, no more.
    let drain = Duration::from_secs(2);
    let (stdout, stdout_truncated) =
        tokio::time::timeout(drain, out).await.ok().and_then(Result::ok).unwrap_or_default();
    let (stderr, stderr_truncated) =
        tokio::time::timeout(drain, err).await.ok().and_then(Result::ok).unwrap_or_default();
    outcome.stdout = String::from_utf8_lossy(&stdout).into_owned();
    outcome.stderr = String::from_utf8_lossy(&stderr).into_owned();
    outcome.stdout_truncated = stdout_truncated;
    outcome.stderr_truncated = stderr_truncated;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str]) -> Policy {
        Policy { allow: allow.iter().map(|s| s.to_string()).collect(), ..Policy::default() }
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn never() -> CancellationToken {
        CancellationToken::new()
    }

    fn limits(secs: u64, cap: usize) -> Limits {
        Limits { timeout: Duration::from_secs(secs), output_cap: cap }
    }

    #[test]
    fn the_allowlist_matches_whole_command_lines() {
        let p = policy(&["uptime", "systemctl status *", "/bin/echo ?"]);
        assert!(p.allows("uptime", &[]));
        assert!(!p.allows("uptime", &args(&["-p"])));
        assert!(p.allows("systemctl", &args(&["status", "nginx"])));
        assert!(!p.allows("systemctl", &args(&["restart", "nginx"])));
        assert!(p.allows("/bin/echo", &args(&["x"])));
        assert!(!p.allows("/bin/echo", &args(&["xy"])));
        assert!(!policy(&[]).allows("true", &[]));
        assert!(matches("a*b*c", "axxbyyc") && !matches("a*b*c", "axxbyy") && matches("*", ""));
    }

    #[tokio::test]
    async fn commands_run_with_status_output_and_only_allowed_environment() {
        let mut p = policy(&["/bin/sh -c *"]);
        p.env_allow = vec!["GREETING".into()];
        let env = HashMap::from([("GREETING".to_owned(), "hi".to_owned())]);
        // The agent's own environment (SECRET_TOKEN here, if it had one) never reaches the command.
        let out = run(
            &p,
            "/bin/sh",
            &args(&["-c", "echo $GREETING; echo ${SECRET_TOKEN:-none} >&2; exit 4"]),
            &env,
            limits(10, 1024),
            &never(),
        )
        .await
        .expect("ran");
        assert_eq!((out.stdout.as_str(), out.stderr.as_str(), out.exit_code), ("hi\n", "none\n", Some(4)));
        let bad = HashMap::from([("LD_PRELOAD".to_owned(), "/tmp/x.so".to_owned())]);
        assert_eq!(
            run(&p, "/bin/sh", &args(&["-c", "true"]), &bad, limits(10, 1024), &never()).await,
            Err(Refusal::Env("LD_PRELOAD".into()))
        );
        assert_eq!(
            run(&p, "/bin/rm", &args(&["-rf", "/"]), &HashMap::new(), limits(10, 1024), &never()).await,
            Err(Refusal::NotAllowed)
        );
    }

    /// Whether no process whose command line holds `marker` is left
    /// (waiting up to 2.5 s for the kill to land).
    async fn group_gone(marker: &str) -> bool {
        let alive =
            || std::process::Command::new("pgrep").arg("-f").arg(marker).output().is_ok_and(|o| o.status.success());
        for _ in 0..50 {
            if !alive() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        !alive()
    }

    #[tokio::test]
    async fn the_deadline_kills_the_whole_process_group_and_output_is_capped() {
        let p = policy(&["/bin/sh -c *"]);
        let marker = format!("sleep 51.{}", std::process::id());
        let script = format!("echo started; {marker} & {marker}");
        let out =
            run(&p, "/bin/sh", &args(&["-c", &script]), &HashMap::new(), limits(1, 1024), &never()).await.expect("ran");
        assert!(out.timed_out);
        assert_eq!(out.stdout, "started\n");
        assert_eq!(out.signal.as_deref(), Some("KILL"));
        assert!(group_gone(&marker).await, "a process of the group survived the deadline");

        let out =
            run(&p, "/bin/sh", &args(&["-c", "head -c 5000 /dev/zero"]), &HashMap::new(), limits(10, 100), &never())
                .await
                .expect("ran");
        assert_eq!(out.stdout.len(), 100);
        assert!(out.stdout_truncated);
    }

    #[tokio::test]
    async fn a_cancel_kills_the_whole_process_group_before_the_deadline() {
        let p = policy(&["/bin/sh -c *"]);
        let marker = format!("sleep 52.{}", std::process::id());
        // The command says when it has started (a file appears); the cancel
        // comes then, while both sleeps of its group run.
        let flag = std::env::temp_dir().join(format!("edgelink-cancel-{}", std::process::id()));
        let _ = std::fs::remove_file(&flag);
        let script = format!("echo started; {marker} & touch {}; {marker}", flag.display());
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        let seen = flag.clone();
        tokio::spawn(async move {
            while !seen.exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            trigger.cancel();
        });
        let began = std::time::Instant::now();
        let out =
            run(&p, "/bin/sh", &args(&["-c", &script]), &HashMap::new(), limits(30, 1024), &cancel).await.expect("ran");
        assert!(began.elapsed() < Duration::from_secs(10), "the cancel did not end it");
        assert!(out.canceled && !out.timed_out);
        assert_eq!(out.stdout, "started\n");
        assert_eq!(out.signal.as_deref(), Some("KILL"));
        assert!(group_gone(&marker).await, "a process of the group survived the cancel");
        let _ = std::fs::remove_file(&flag);
    }

    #[tokio::test]
    async fn commands_run_as_the_configured_account() {
        let mut p = policy(&["/usr/bin/id -un"]);
        p.run_as = Some("nobody".into());
        if std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() != "0")
        {
            // Changing account needs root; CI runs as root.
            assert!(run(&p, "/usr/bin/id", &args(&["-un"]), &HashMap::new(), limits(10, 100), &never()).await.is_err());
            return;
        }
        let out =
            run(&p, "/usr/bin/id", &args(&["-un"]), &HashMap::new(), limits(10, 100), &never()).await.expect("ran");
        assert_eq!(out.stdout, "nobody\n");
        p.run_as = Some("no-such-account-x".into());
        assert_eq!(
            run(&p, "/usr/bin/id", &args(&["-un"]), &HashMap::new(), limits(10, 100), &never()).await,
            Err(Refusal::NoSuchUser("no-such-account-x".into()))
        );
    }
}
