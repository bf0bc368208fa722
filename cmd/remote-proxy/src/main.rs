//! remote-proxy: parses arguments, loads config, binds the tunnel and
//! internal ports and runs `edgelink_relay`; or, as `sessions`, talks to a
//! running instance's internal API.

#[path = "../../startup.rs"]
mod startup;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use edgelink_internal_api::Client;
use edgelink_relay::RelayConfig;
use secrecy::SecretString;

#[derive(Parser)]
#[command(name = "remote-proxy", version, about = "edgelink relay: holds device tunnels, serves the internal API")]
struct Cli {
    /// TOML config file (fields as in `RelayConfig`; env EDGELINK_RELAY__* and flags override it).
    #[arg(long, global = true, env = "EDGELINK_RELAY_CONFIG")]
    config: Option<PathBuf>,
    /// Internal API bearer secret.
    #[arg(long, global = true, env = "EDGELINK_RELAY__INTERNAL_SECRET", hide_env_values = true)]
    internal_secret: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay (the default).
    Serve {
        /// Tunnel listen address.
        #[arg(long)]
        tunnel_listen: Option<SocketAddr>,
        /// Internal API listen address.
        #[arg(long)]
        internal_listen: Option<SocketAddr>,
        /// Database URL (sqlite://PATH or postgres://...).
        #[arg(long)]
        database_url: Option<String>,
        /// api-server's JWKS URL.
        #[arg(long)]
        jwks_url: Option<String>,
        /// Instance id in the session registry.
        #[arg(long)]
        instance_id: Option<String>,
    },
    /// Inspect and close tunnel sessions of a running relay.
    Sessions {
        /// The relay's internal API URL.
        #[arg(long, env = "EDGELINK_RELAY_INTERNAL_URL", default_value = "http://127.0.0.1:3801")]
        internal_url: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: SessionsCommand,
    },
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// List live sessions.
    List,
    /// Show one session.
    Show {
        /// Session id.
        id: String,
    },
    /// Close one session (the device may reconnect).
    Close {
        /// Session id.
        id: String,
    },
}

fn main() {
    let cli = Cli::parse();
    startup::init_tracing();
    let code = match cli.command {
        Some(Command::Sessions { internal_url, json, command }) => {
            let Some(secret) = cli.internal_secret else {
                startup::config_error("the internal secret is required (EDGELINK_RELAY__INTERNAL_SECRET)");
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| startup::config_error(format!("runtime: {e}")));
            match rt.block_on(sessions(&internal_url, SecretString::from(secret), json, command)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    1
                }
            }
        }
        serve_cmd => {
            let (tl, il, db, jwks, id) = match serve_cmd {
                Some(Command::Serve { tunnel_listen, internal_listen, database_url, jwks_url, instance_id }) => {
                    (tunnel_listen, internal_listen, database_url, jwks_url, instance_id)
                }
                _ => (None, None, None, None, None),
            };
            let config: RelayConfig = startup::load(
                cli.config.as_deref(),
                "EDGELINK_RELAY__",
                overrides!(
                    "tunnel_listen" => tl,
                    "internal_listen" => il,
                    "database_url" => db,
                    "jwks_url" => jwks,
                    "instance_id" => id,
                    "internal_secret" => cli.internal_secret,
                ),
            )
            .unwrap_or_else(|e| startup::config_error(e));
            if let Err(e) = config.validate() {
                startup::config_error(e);
            }
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = config.worker_threads {
                rt.worker_threads(n);
            }
            let rt = rt.enable_all().build().unwrap_or_else(|e| startup::config_error(format!("runtime: {e}")));
            match rt.block_on(serve(config)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    1
                }
            }
        }
    };
    std::process::exit(code);
}

async fn serve(config: RelayConfig) -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // Before anything records a metric.
    edgelink_observe::announce(edgelink_observe::Service::Relay);
    let store = edgelink_store::Store::connect(&config.database_url).await.context("opening the database")?;
    let tunnel = tokio::net::TcpListener::bind(config.tunnel_listen)
        .await
        .with_context(|| format!("binding tunnel port {}", config.tunnel_listen))?;
    let internal = tokio::net::TcpListener::bind(config.internal_listen)
        .await
        .with_context(|| format!("binding internal port {}", config.internal_listen))?;
    tracing::info!(tunnel = %tunnel.local_addr()?, internal = %internal.local_addr()?, "remote-proxy listening");
    let shutdown = startup::shutdown_token();
    if let Some(addr) = config.metrics_listen {
        let metrics =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding metrics port {addr}"))?;
        let stop = shutdown.clone();
        tokio::spawn(edgelink_observe::serve(metrics, async move { stop.cancelled().await }));
    }
    let devices = match &config.devices {
        Some(d) => Some(
            tokio::net::TcpListener::bind(d.listen)
                .await
                .with_context(|| format!("binding device-origin port {}", d.listen))?,
        ),
        None => None,
    };
    edgelink_relay::run_with_devices(config, store, tunnel, internal, devices, shutdown).await?;
    Ok(())
}

async fn sessions(url: &str, secret: SecretString, json: bool, command: SessionsCommand) -> anyhow::Result<()> {
    let client = Client::new(url, secret)?;
    match command {
        SessionsCommand::List => {
            let list = client.list_sessions().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<36}  {:<36}  {:<21}  {:<24}  LAST HEARTBEAT", "SESSION", "DEVICE", "REMOTE", "CONNECTED");
                for s in &list.sessions {
                    println!(
                        "{:<36}  {:<36}  {:<21}  {:<24}  {}",
                        s.token, s.device_id, s.remote_addr, s.connected_at, s.last_heartbeat
                    );
                }
                println!("{} session(s)", list.total);
            }
        }
        SessionsCommand::Show { id } => {
            let s = client.get_session(&id).await?;
            println!("{}", serde_json::to_string_pretty(&s)?);
        }
        SessionsCommand::Close { id } => {
            let r = client.close_session(&id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("closed {}", r.token);
            }
        }
    }
    Ok(())
}
