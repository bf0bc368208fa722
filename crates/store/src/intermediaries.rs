//! Seed 001's intermediaries and the commands sent through them. Every
//! method that serves a user takes the owner's id; the lookup by id for a
//! connecting intermediary returns the owner with the row.

use serde::Serialize;

use crate::{Result, Store, new_id, with_pool};

/// An intermediary as its owner sees it: everything but the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Intermediary {
    /// Its `proxyId`.
    pub id: String,
    /// The user it acts for.
    pub owner_id: String,
    /// Its name.
    pub name: String,
    /// Its group ('' = none): a command for the group goes to any member.
    pub group_name: String,
    /// Allowed addresses/blocks, space-separated; empty = anywhere.
    pub allowed_ips: String,
    /// ms.
    pub created_at: i64,
    /// ms, when the key was last replaced.
    pub rotated_at: Option<i64>,
    /// ms, its last connection.
    pub last_seen_at: Option<i64>,
    /// Address of its last connection.
    pub last_seen_ip: Option<String>,
    /// ms, once revoked.
    pub revoked_at: Option<i64>,
}

/// A stored command (its credentials never are).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct CommandRow {
    /// `cmd_<ms>_<random>`.
    pub id: String,
    /// Who sent it.
    pub owner_id: String,
    /// The intermediary it was sent to, when one was named.
    pub intermediary_id: Option<String>,
    /// The group it was sent to, when a group was named.
    pub group_name: Option<String>,
    /// The intermediary that ran it.
    pub ran_on: Option<String>,
    /// SSH host.
    pub host: String,
    /// SSH port.
    pub port: i32,
    /// SSH account.
    pub username: String,
    /// The command line.
    pub command: String,
    /// Its timeout, ms.
    pub timeout_ms: i64,
    /// `pending`, `running`, `succeeded`, `failed`, `expired`.
    pub status: String,
    /// Output, once finished.
    pub stdout: Option<String>,
    /// Error output, once finished.
    pub stderr: Option<String>,
    /// Exit code, once finished.
    pub exit_code: Option<i32>,
    /// Why it did not run, when it did not.
    pub error: Option<String>,
    /// ms.
    pub created_at: i64,
    /// ms, when an intermediary took it.
    pub started_at: Option<i64>,
    /// ms, when it ended.
    pub finished_at: Option<i64>,
    /// The device whose agent runs it (native commands).
    pub device_id: Option<String>,
    /// Native commands: JSON `{"args": [...], "env": {...}}`.
    pub args: Option<String>,
    /// ms: a native command no agent claimed by then expires.
    pub expires_at: Option<i64>,
    /// Native commands with an SSH target: the password or private key
    /// sealed to the device's key; cleared once the command ends. Never
    /// serialized.
    #[serde(skip)]
    pub secret_sealed: Option<String>,
    /// The SSH target's pinned host-key fingerprint.
    pub host_key: Option<String>,
    /// ms: its owner asked the running command to stop.
    pub cancel_requested_at: Option<i64>,
    /// Native commands: stdout went past the device's output cap.
    pub stdout_truncated: Option<bool>,
    /// Native commands: stderr went past the device's output cap.
    pub stderr_truncated: Option<bool>,
}

/// What a new command is stored with.
#[derive(Debug, Clone)]
pub struct NewCommand {
    /// Its id.
    pub id: String,
    /// The intermediary named, if any.
    pub intermediary_id: Option<String>,
    /// The group named, if any.
    pub group_name: Option<String>,
    /// SSH host.
    pub host: String,
    /// SSH port.
    pub port: i32,
    /// SSH account.
    pub username: String,
    /// The command line.
    pub command: String,
    /// Its timeout, ms.
    pub timeout_ms: i64,
    /// The device whose agent runs it (native commands).
    pub device_id: Option<String>,
    /// Native commands: JSON `{"args": [...], "env": {...}}`.
    pub args: Option<String>,
    /// ms: a native command no agent claimed by then expires.
    pub expires_at: Option<i64>,
    /// Native commands with an SSH target: the credential sealed to the
    /// device's key.
    pub secret_sealed: Option<String>,
    /// The SSH target's pinned host-key fingerprint.
    pub host_key: Option<String>,
}

/// How a command ended.
#[derive(Debug, Clone, Default)]
pub struct CommandEnd {
    /// `succeeded`, `failed`, `expired` or `canceled`.
    pub status: &'static str,
    /// The intermediary that ran it.
    pub ran_on: Option<String>,
    /// Output.
    pub stdout: Option<String>,
    /// Error output.
    pub stderr: Option<String>,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Why it did not run.
    pub error: Option<String>,
    /// stdout went past the output cap (when the runner says).
    pub stdout_truncated: Option<bool>,
    /// stderr went past the output cap (when the runner says).
    pub stderr_truncated: Option<bool>,
}

const COLUMNS: &str =
    "id, owner_id, name, group_name, allowed_ips, created_at, rotated_at, last_seen_at, last_seen_ip, revoked_at";
const COMMAND_COLUMNS: &str = "id, owner_id, intermediary_id, group_name, ran_on, host, port, username, command, \
     timeout_ms, status, stdout, stderr, exit_code, error, created_at, started_at, finished_at, device_id, args, \
     expires_at, secret_sealed, host_key, cancel_requested_at, stdout_truncated, stderr_truncated";

impl Store {
    /// Stores an intermediary of `owner_id` with its key's digest.
    pub async fn create_intermediary(
        &self,
        owner_id: &str,
        name: &str,
        group_name: &str,
        key_hash: &str,
        allowed_ips: &str,
        now: i64,
    ) -> Result<Intermediary> {
        let id = format!("prx_{}", new_id().replace('-', ""));
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO intermediaries (id, owner_id, name, group_name, key_hash, allowed_ips, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&id)
            .bind(owner_id)
            .bind(name)
            .bind(group_name)
            .bind(key_hash)
            .bind(allowed_ips)
            .bind(now)
            .execute(pool)
            .await?;
            Ok::<(), crate::Error>(())
        })?;
        Ok(Intermediary {
            id,
            owner_id: owner_id.to_owned(),
            name: name.to_owned(),
            group_name: group_name.to_owned(),
            allowed_ips: allowed_ips.to_owned(),
            created_at: now,
            rotated_at: None,
            last_seen_at: None,
            last_seen_ip: None,
            revoked_at: None,
        })
    }

    /// `owner_id`'s intermediaries that are not revoked, newest first.
    pub async fn list_intermediaries(&self, owner_id: &str) -> Result<Vec<Intermediary>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM intermediaries WHERE owner_id = $1 AND revoked_at IS NULL \
             ORDER BY created_at DESC, id"
        );
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, Intermediary>(sqlx::AssertSqlSafe(sql)).bind(owner_id).fetch_all(pool).await?)
        })
    }

    /// `owner_id`'s unrevoked intermediary `id`.
    pub async fn intermediary(&self, owner_id: &str, id: &str) -> Result<Option<Intermediary>> {
        let sql =
            format!("SELECT {COLUMNS} FROM intermediaries WHERE owner_id = $1 AND id = $2 AND revoked_at IS NULL");
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, Intermediary>(sqlx::AssertSqlSafe(sql))
                .bind(owner_id)
                .bind(id)
                .fetch_optional(pool)
                .await?)
        })
    }

    /// The unrevoked intermediary `id` and its key digest, for a
    /// connecting intermediary (whoever owns it).
    pub async fn intermediary_for_login(&self, id: &str) -> Result<Option<(Intermediary, String)>> {
        let sql = format!("SELECT {COLUMNS}, key_hash FROM intermediaries WHERE id = $1 AND revoked_at IS NULL");
        with_pool!(self, |pool| {
            let row = sqlx::query_as::<_, IntermediaryWithHash>(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| (r.intermediary, r.key_hash)))
        })
    }

    /// Replaces the key digest of `owner_id`'s intermediary `id`; false
    /// when there is no such (unrevoked) intermediary of theirs.
    pub async fn rotate_intermediary_key(&self, owner_id: &str, id: &str, key_hash: &str, now: i64) -> Result<bool> {
        with_pool!(self, |pool| {
            let done = sqlx::query(
                "UPDATE intermediaries SET key_hash = $1, rotated_at = $2 \
                 WHERE owner_id = $3 AND id = $4 AND revoked_at IS NULL",
            )
            .bind(key_hash)
            .bind(now)
            .bind(owner_id)
            .bind(id)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Revokes `owner_id`'s intermediary `id`; false when there is none.
    pub async fn revoke_intermediary(&self, owner_id: &str, id: &str, now: i64) -> Result<bool> {
        self.update_owned(
            "UPDATE intermediaries SET revoked_at = $1 WHERE owner_id = $2 AND id = $3 AND revoked_at IS NULL",
            now,
            owner_id,
            id,
        )
        .await
    }

    /// Records a connection of intermediary `id`.
    pub async fn touch_intermediary(&self, id: &str, now: i64, ip: Option<&str>) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE intermediaries SET last_seen_at = $1, last_seen_ip = $2 WHERE id = $3")
                .bind(now)
                .bind(ip)
                .bind(id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Stores a new command of `owner_id` as `pending`.
    pub async fn create_command(&self, owner_id: &str, new: &NewCommand, now: i64) -> Result<CommandRow> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO commands (id, owner_id, intermediary_id, group_name, host, port, username, command, \
                 timeout_ms, status, created_at, device_id, args, expires_at, secret_sealed, host_key) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $11, $12, $13, $14, $15)",
            )
            .bind(&new.id)
            .bind(owner_id)
            .bind(&new.intermediary_id)
            .bind(&new.group_name)
            .bind(&new.host)
            .bind(new.port)
            .bind(&new.username)
            .bind(&new.command)
            .bind(new.timeout_ms)
            .bind(now)
            .bind(&new.device_id)
            .bind(&new.args)
            .bind(new.expires_at)
            .bind(&new.secret_sealed)
            .bind(&new.host_key)
            .execute(pool)
            .await?;
            Ok::<(), crate::Error>(())
        })?;
        self.command(owner_id, &new.id).await?.ok_or(crate::Error::NotFound)
    }

    /// `owner_id`'s command `id`.
    pub async fn command(&self, owner_id: &str, id: &str) -> Result<Option<CommandRow>> {
        let sql = format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE owner_id = $1 AND id = $2");
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, CommandRow>(sqlx::AssertSqlSafe(sql))
                .bind(owner_id)
                .bind(id)
                .fetch_optional(pool)
                .await?)
        })
    }

    /// Marks command `id` as taken by intermediary `ran_on`.
    pub async fn start_command(&self, id: &str, ran_on: &str, now: i64) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE commands SET status = 'running', ran_on = $1, started_at = $2 \
                 WHERE id = $3 AND status IN ('pending', 'running')",
            )
            .bind(ran_on)
            .bind(now)
            .bind(id)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Records how command `id` ended, once: false when it had already
    /// ended.
    pub async fn finish_command(&self, id: &str, end: &CommandEnd, now: i64) -> Result<bool> {
        with_pool!(self, |pool| {
            let done = sqlx::query(
                "UPDATE commands SET status = $1, ran_on = COALESCE($2, ran_on), stdout = $3, stderr = $4, \
                 exit_code = $5, error = $6, finished_at = $7 WHERE id = $8 AND status IN ('pending', 'running')",
            )
            .bind(end.status)
            .bind(&end.ran_on)
            .bind(&end.stdout)
            .bind(&end.stderr)
            .bind(end.exit_code)
            .bind(&end.error)
            .bind(now)
            .bind(id)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }
}

impl Store {
    /// Device `device_id` takes its pending command `id` (now running);
    /// `None` when there is no such pending command of that device.
    pub async fn claim_device_command(&self, device_id: &str, id: &str, now: i64) -> Result<Option<CommandRow>> {
        let done = with_pool!(self, |pool| {
            let r = sqlx::query(
                "UPDATE commands SET status = 'running', started_at = $1 \
                 WHERE id = $2 AND device_id = $3 AND status = 'pending'",
            )
            .bind(now)
            .bind(id)
            .bind(device_id)
            .execute(pool)
            .await?;
            Ok::<bool, crate::Error>(r.rows_affected() == 1)
        })?;
        if !done {
            return Ok(None);
        }
        let sql = format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE id = $1");
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, CommandRow>(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?)
        })
    }

    /// Device `device_id` reports how its running command `id` ended;
    /// false when it has no such running command.
    pub async fn finish_device_command(&self, device_id: &str, id: &str, end: &CommandEnd, now: i64) -> Result<bool> {
        with_pool!(self, |pool| {
            let done = sqlx::query(
                "UPDATE commands SET status = $1, stdout = $2, stderr = $3, exit_code = $4, error = $5, \
                 finished_at = $6, secret_sealed = NULL, stdout_truncated = $9, stderr_truncated = $10 \
                 WHERE id = $7 AND device_id = $8 AND status = 'running'",
            )
            .bind(end.status)
            .bind(&end.stdout)
            .bind(&end.stderr)
            .bind(end.exit_code)
            .bind(&end.error)
            .bind(now)
            .bind(id)
            .bind(device_id)
            .bind(end.stdout_truncated)
            .bind(end.stderr_truncated)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// `owner_id`'s native commands for `device_id`, newest first.
    pub async fn list_device_commands(&self, owner_id: &str, device_id: &str, limit: i64) -> Result<Vec<CommandRow>> {
        let sql = format!(
            "SELECT {COMMAND_COLUMNS} FROM commands WHERE owner_id = $1 AND device_id = $2 \
             ORDER BY created_at DESC, id DESC LIMIT $3"
        );
        with_pool!(self, |pool| {
            Ok(sqlx::query_as::<_, CommandRow>(sqlx::AssertSqlSafe(sql))
                .bind(owner_id)
                .bind(device_id)
                .bind(limit)
                .fetch_all(pool)
                .await?)
        })
    }

    /// Cancels `owner_id`'s command `id` if no one has taken it yet.
    pub async fn cancel_command(&self, owner_id: &str, id: &str, now: i64) -> Result<bool> {
        self.update_owned(
            "UPDATE commands SET status = 'canceled', finished_at = $1, secret_sealed = NULL \
             WHERE owner_id = $2 AND id = $3 AND status = 'pending'",
            now,
            owner_id,
            id,
        )
        .await
    }

    /// Asks `owner_id`'s running native command `id` to stop (its agent
    /// is told and reports it `canceled`); false when it is not a running
    /// native command of that owner.
    pub async fn request_cancel(&self, owner_id: &str, id: &str, now: i64) -> Result<bool> {
        self.update_owned(
            "UPDATE commands SET cancel_requested_at = COALESCE(cancel_requested_at, $1) \
             WHERE owner_id = $2 AND id = $3 AND status = 'running' AND device_id IS NOT NULL",
            now,
            owner_id,
            id,
        )
        .await
    }

    /// Ends native commands no agent claimed before `expires_at`
    /// (`expired`) and claimed ones with no result long after their
    /// timeout (`failed`); returns how many.
    pub async fn expire_device_commands(&self, now: i64, grace_ms: i64) -> Result<u64> {
        with_pool!(self, |pool| {
            let a = sqlx::query(
                "UPDATE commands SET status = 'expired', finished_at = $1, secret_sealed = NULL, \
                 error = 'the device did not take the command before it expired' \
                 WHERE device_id IS NOT NULL AND status = 'pending' AND expires_at <= $1",
            )
            .bind(now)
            .execute(pool)
            .await?;
            let b = sqlx::query(
                "UPDATE commands SET status = 'failed', finished_at = $1, secret_sealed = NULL, \
                 error = 'the device did not report a result in time' \
                 WHERE device_id IS NOT NULL AND status = 'running' AND started_at + timeout_ms + $2 <= $1",
            )
            .bind(now)
            .bind(grace_ms)
            .execute(pool)
            .await?;
            Ok(a.rows_affected() + b.rows_affected())
        })
    }
}

impl Store {
    /// Runs `sql`, an UPDATE of one row of `owner_id` binding `now`,
    /// `owner_id` and `id` as `$1`–`$3`; true when it changed that row.
    async fn update_owned(&self, sql: &'static str, now: i64, owner_id: &str, id: &str) -> Result<bool> {
        with_pool!(self, |pool| {
            let done = sqlx::query(sql).bind(now).bind(owner_id).bind(id).execute(pool).await?;
            Ok(done.rows_affected() == 1)
        })
    }
}

#[derive(sqlx::FromRow)]
struct IntermediaryWithHash {
    #[sqlx(flatten)]
    intermediary: Intermediary,
    key_hash: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdb;

    #[tokio::test]
    async fn intermediaries_are_per_owner_and_commands_end_once() {
        for store in testdb::stores().await {
            let alice = store.upsert_user_by_email("alice@example.com", "Alice").await.unwrap();
            let bob = store.upsert_user_by_email("bob@example.com", "Bob").await.unwrap();
            let p = store.create_intermediary(&alice.id, "lab", "site-a", "h1", "", 1_000).await.unwrap();
            assert!(p.id.starts_with("prx_"));
            assert_eq!(store.list_intermediaries(&alice.id).await.unwrap(), vec![p.clone()]);
            assert!(store.list_intermediaries(&bob.id).await.unwrap().is_empty());
            assert!(store.intermediary(&bob.id, &p.id).await.unwrap().is_none());
            let (found, hash) = store.intermediary_for_login(&p.id).await.unwrap().unwrap();
            assert_eq!((found.owner_id.as_str(), hash.as_str()), (alice.id.as_str(), "h1"));
            assert!(!store.rotate_intermediary_key(&bob.id, &p.id, "h2", 2_000).await.unwrap());
            assert!(store.rotate_intermediary_key(&alice.id, &p.id, "h2", 2_000).await.unwrap());
            assert_eq!(store.intermediary_for_login(&p.id).await.unwrap().unwrap().1, "h2");
            store.touch_intermediary(&p.id, 2_500, Some("10.0.0.9")).await.unwrap();

            let new = NewCommand {
                id: "cmd_1_x".into(),
                intermediary_id: Some(p.id.clone()),
                group_name: None,
                host: "10.0.0.5".into(),
                port: 22,
                username: "root".into(),
                command: "uptime".into(),
                timeout_ms: 30_000,
                device_id: None,
                args: None,
                expires_at: None,
                secret_sealed: None,
                host_key: None,
            };
            let c = store.create_command(&alice.id, &new, 3_000).await.unwrap();
            assert_eq!(c.status, "pending");
            assert!(store.command(&bob.id, &c.id).await.unwrap().is_none());
            store.start_command(&c.id, &p.id, 3_100).await.unwrap();
            let end = CommandEnd {
                status: "succeeded",
                ran_on: Some(p.id.clone()),
                stdout: Some("up".into()),
                stderr: Some(String::new()),
                exit_code: Some(0),
                error: None,
                ..CommandEnd::default()
            };
            assert!(store.finish_command(&c.id, &end, 3_200).await.unwrap());
            assert!(!store.finish_command(&c.id, &CommandEnd { status: "expired", ..end }, 3_300).await.unwrap());
            let done = store.command(&alice.id, &c.id).await.unwrap().unwrap();
            assert_eq!((done.status.as_str(), done.exit_code, done.finished_at), ("succeeded", Some(0), Some(3_200)));

            assert!(store.revoke_intermediary(&alice.id, &p.id, 4_000).await.unwrap());
            assert!(store.intermediary_for_login(&p.id).await.unwrap().is_none());
            assert!(store.list_intermediaries(&alice.id).await.unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn a_native_command_keeps_its_sealed_secret_only_until_it_ends_and_only_its_owner_cancels_it() {
        for store in testdb::stores().await {
            let alice = store.upsert_user_by_email("alice@example.com", "Alice").await.unwrap();
            let bob = store.upsert_user_by_email("bob@example.com", "Bob").await.unwrap();
            let d = store.create_device(&testdb::new_device(&alice.id)).await.unwrap();
            let new = NewCommand {
                id: "cmd_2_y".into(),
                intermediary_id: None,
                group_name: None,
                host: "10.0.0.7".into(),
                port: 22,
                username: "ops".into(),
                command: "uptime".into(),
                timeout_ms: 30_000,
                device_id: Some(d.id.clone()),
                args: None,
                expires_at: Some(10_000),
                secret_sealed: Some("els1.sealed".into()),
                host_key: Some("SHA256:abc".into()),
            };
            let c = store.create_command(&alice.id, &new, 1_000).await.unwrap();
            // Not running yet: nothing to stop (a pending one is canceled outright).
            assert!(!store.request_cancel(&alice.id, &c.id, 1_100).await.unwrap());
            let claimed = store.claim_device_command(&d.id, &c.id, 1_200).await.unwrap().unwrap();
            assert_eq!(claimed.secret_sealed.as_deref(), Some("els1.sealed"));
            assert_eq!(claimed.host_key.as_deref(), Some("SHA256:abc"));
            // The sealed form never leaves in a serialized row.
            assert!(!serde_json::to_string(&claimed).unwrap().contains("els1."));
            assert!(!store.request_cancel(&bob.id, &c.id, 1_300).await.unwrap());
            assert!(store.request_cancel(&alice.id, &c.id, 1_300).await.unwrap());
            assert!(store.request_cancel(&alice.id, &c.id, 1_400).await.unwrap());
            let row = store.command(&alice.id, &c.id).await.unwrap().unwrap();
            assert_eq!(row.cancel_requested_at, Some(1_300));
            let end = CommandEnd { status: "canceled", stdout_truncated: Some(true), ..CommandEnd::default() };
            assert!(store.finish_device_command(&d.id, &c.id, &end, 1_500).await.unwrap());
            let row = store.command(&alice.id, &c.id).await.unwrap().unwrap();
            assert_eq!((row.status.as_str(), row.secret_sealed), ("canceled", None));
            assert_eq!((row.stdout_truncated, row.stderr_truncated), (Some(true), None));
            assert!(!store.request_cancel(&alice.id, &c.id, 1_600).await.unwrap());
        }
    }
}
