//! edgelink: the command-line client of api-server's REST API. Parses
//! arguments and prints; requests and tables are `edgelink_client`'s.
//!
//! Exit codes: 0 done, 1 failed, 2 usage, 3 refused (token missing, wrong,
//! expired, revoked, or without the scope).

use clap::{Args, Parser, Subcommand};
use edgelink_client::table::{render, rows, text};
use edgelink_client::{Client, Error, segment};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(name = "edgelink", version, about = "edgelink client: devices, pairing codes, sessions and API tokens")]
struct Cli {
    /// api-server's URL.
    #[arg(long, global = true, env = "EDGELINK_SERVER", default_value = "http://127.0.0.1:3721")]
    server: String,
    /// An API token (`elk_…`; create one in the web UI or with `edgelink tokens create`).
    #[arg(long, global = true, env = "EDGELINK_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Your devices.
    Devices {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Pairing codes.
    Pairings {
        #[command(subcommand)]
        command: PairingCommand,
    },
    /// Devices' live tunnel sessions.
    Sessions {
        #[command(subcommand)]
        command: SessionCommand,
    },
    /// API tokens.
    Tokens {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// List them (scope device:read).
    List,
    /// One device (device:read).
    Show { id: String },
    /// Rename one (device:write).
    Rename { id: String, name: String },
    /// Delete one: revoked, its tunnel closed (device:delete).
    Delete { id: String },
}

#[derive(Subcommand)]
enum PairingCommand {
    /// A new one-time code for a device (pairing:create).
    Create,
}

#[derive(Subcommand)]
enum SessionCommand {
    /// Online devices and their sessions (device:read).
    List,
    /// Close a device's session; it reconnects by itself (session:manage).
    Close { device_id: String },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Your tokens (token:manage).
    List,
    /// A new token; its secret is printed once (token:manage).
    Create(CreateToken),
    /// Revoke one at once (token:manage).
    Revoke { id: String },
}

#[derive(Args)]
struct CreateToken {
    /// A name to recognise it by.
    #[arg(long)]
    name: String,
    /// A scope (repeat for more): device:read, device:write, device:delete,
    /// device:manage, session:read, session:manage, pairing:create, token:manage,
    /// message:send, message:read, command:execute, proxy:manage.
    #[arg(long = "scope", required = true)]
    scopes: Vec<String>,
    /// Lifetime: 30, 90 or 365 days (default: never expires).
    #[arg(long)]
    expires_in_days: Option<u32>,
    /// An address or CIDR block it may be used from (repeat for more).
    #[arg(long = "allow-ip")]
    allowed_ips: Vec<String>,
}

fn main() {
    let cli = Cli::parse();
    let Some(token) = cli.token.clone().filter(|t| !t.trim().is_empty()) else {
        eprintln!("error: no API token: set EDGELINK_TOKEN or pass --token (create one in the web UI)");
        std::process::exit(3);
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let result = Client::new(&cli.server, SecretString::from(token))
        .map_err(Output::from)
        .and_then(|client| rt.block_on(run(&client, &cli.command)).map_err(Output::from));
    match result {
        Ok((value, table)) => println!("{}", if cli.json { pretty(&value) } else { table }),
        Err(Output(e)) => {
            eprintln!("error: {e}");
            std::process::exit(if e.is_auth() { 3 } else { 1 });
        }
    }
}

struct Output(Error);

impl From<Error> for Output {
    fn from(e: Error) -> Self {
        Output(e)
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// Runs one command; returns the API's answer and its table.
async fn run(c: &Client, command: &Command) -> Result<(Value, String), Error> {
    Ok(match command {
        Command::Devices { command } => match command {
            DeviceCommand::List => {
                let v = c.get("/api/v1/devices?limit=200").await?;
                let fields = ["id", "name", "type", "status", "last_seen_at"];
                let t = render(&["ID", "NAME", "TYPE", "STATUS", "LAST SEEN"], &rows(&v["devices"], &fields));
                (v, t)
            }
            DeviceCommand::Show { id } => {
                let v = c.get(&format!("/api/v1/devices/{}", segment(id))).await?;
                let t = ["id", "name", "type", "status", "capabilities", "region", "created_at", "last_seen_at"]
                    .iter()
                    .map(|f| format!("{f:<13} {}", text(&v[*f])))
                    .collect::<Vec<_>>()
                    .join("\n");
                (v, t)
            }
            DeviceCommand::Rename { id, name } => {
                let body = json!({ "name": name });
                let v = c.call(Method::PATCH, &format!("/api/v1/devices/{}", segment(id)), Some(&body)).await?;
                let t = format!("renamed {} to {}", text(&v["id"]), text(&v["name"]));
                (v, t)
            }
            DeviceCommand::Delete { id } => {
                c.call(Method::DELETE, &format!("/api/v1/devices/{}", segment(id)), None).await?;
                (json!({ "deleted": id }), format!("deleted {id}"))
            }
        },
        Command::Pairings { command: PairingCommand::Create } => {
            let v = c.call(Method::POST, "/api/v1/pairings", None).await?;
            let t = format!(
                "{}\nvalid until {}\non the device: {}",
                text(&v["code"]),
                text(&v["expires_at"]),
                text(&v["command"])
            );
            (v, t)
        }
        Command::Sessions { command } => match command {
            SessionCommand::List => {
                let v = c.get("/api/v1/devices?status=online&limit=200").await?;
                let sessions: Vec<Vec<String>> = v["devices"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| {
                        let s = &d["session"];
                        vec![text(&d["id"]), text(&d["name"]), text(&s["id"]), text(&s["connected_at"])]
                    })
                    .collect();
                (v, render(&["DEVICE", "NAME", "SESSION", "CONNECTED"], &sessions))
            }
            SessionCommand::Close { device_id } => {
                let path = format!("/api/v1/devices/{}/session/close", segment(device_id));
                let v = c.call(Method::POST, &path, None).await?;
                (v, format!("closed the session of {device_id}"))
            }
        },
        Command::Tokens { command } => match command {
            TokenCommand::List => {
                let v = c.get("/api/v1/tokens").await?;
                let fields = ["id", "name", "scopes", "expires_at", "last_used_at", "expires_soon"];
                let headers = ["ID", "NAME", "SCOPES", "EXPIRES", "LAST USED", "EXPIRES SOON"];
                let t = render(&headers, &rows(&v["tokens"], &fields));
                (v, t)
            }
            TokenCommand::Create(t) => {
                let body = json!({
                    "name": t.name, "scopes": t.scopes, "expires_in_days": t.expires_in_days,
                    "allowed_ips": t.allowed_ips,
                });
                let v = c.call(Method::POST, "/api/v1/tokens", Some(&body)).await?;
                let table =
                    format!("{}\n(token {}; this secret is not shown again)", text(&v["secret"]), text(&v["id"]));
                (v, table)
            }
            TokenCommand::Revoke { id } => {
                c.call(Method::DELETE, &format!("/api/v1/tokens/{}", segment(id)), None).await?;
                (json!({ "revoked": id }), format!("revoked {id}"))
            }
        },
    })
}
