//! api-server: parses arguments, loads config, wires the store and the
//! signing key, and serves `edgelink_api`. No business logic here.

#[path = "../../startup.rs"]
mod startup;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use edgelink_api::{ApiConfig, AppState};
use edgelink_auth::cookie::CookieKeys;
use edgelink_auth::signing::{KeyOrigin, SigningKey};
use edgelink_store::Store;
use secrecy::ExposeSecret;

/// mimalloc instead of glibc's allocator: api-server allocates many small,
/// short-lived objects per request (axum extractors, header maps, JSON),
/// and glibc's malloc/free took about a fifth of its CPU on the device
/// path (docs/benchmarks.md, fifth pass).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "api-server", version, about = "edgelink public API: device auth and tokens, browser sign-in")]
struct Cli {
    /// TOML config file (fields as in `ApiConfig`; env EDGELINK_API__* and flags override it).
    #[arg(long, global = true, env = "EDGELINK_API_CONFIG")]
    config: Option<PathBuf>,
    /// Database URL (sqlite://PATH or postgres://...).
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Operator commands print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve {
        /// Listen address.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Signing key file (generated on first start when missing).
        #[arg(long)]
        signing_key_file: Option<PathBuf>,
    },
    /// Manage devices.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Pairing codes.
    Pairing {
        #[command(subcommand)]
        command: PairingCommand,
    },
    /// Users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// End every browser session of a user (by email).
    SignOut {
        /// The user's email.
        #[arg(long)]
        email: String,
    },
}

#[derive(Subcommand)]
enum PairingCommand {
    /// Create a pairing code for a user (by email); prints the code.
    Create {
        /// Owner's email (the user is created when missing).
        #[arg(long)]
        owner: String,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Register a device by its public key; prints the device id.
    Add {
        /// Owner's email (the user is created when missing).
        #[arg(long)]
        owner: String,
        /// Device name.
        #[arg(long)]
        name: String,
        /// PEM public key file (from `edge-agent keygen`).
        #[arg(long)]
        public_key: PathBuf,
        /// Device type.
        #[arg(long = "type", default_value = "generic")]
        device_type: String,
    },
}

fn main() {
    let cli = Cli::parse();
    startup::init_tracing();
    let (listen, key_file) = match &cli.command {
        Some(Command::Serve { listen, signing_key_file }) => (*listen, signing_key_file.clone()),
        _ => (None, None),
    };
    let config: ApiConfig = startup::load(
        cli.config.as_deref(),
        "EDGELINK_API__",
        overrides!(
            "listen" => listen,
            "database_url" => cli.database_url.clone(),
            "signing_key_file" => key_file,
        ),
    )
    .unwrap_or_else(|e| startup::config_error(e));
    if let Err(e) = config.validate() {
        startup::config_error(e);
    }
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| startup::config_error(format!("runtime: {e}")));
    if let Err(e) = rt.block_on(run(cli.command, config, cli.json)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Prints an operator command's result: `json` when asked for, else `text`.
fn report(json: bool, value: serde_json::Value, text: String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("{text}");
    }
    Ok(())
}

async fn run(command: Option<Command>, config: ApiConfig, json: bool) -> anyhow::Result<()> {
    let store = Store::connect(&config.database_url).await.context("opening the database")?;
    match command {
        None | Some(Command::Serve { .. }) => serve(store, config).await,
        Some(Command::Device { command: DeviceCommand::Add { owner, name, public_key, device_type } }) => {
            let pem =
                std::fs::read_to_string(&public_key).with_context(|| format!("reading {}", public_key.display()))?;
            let spec =
                edgelink_api::provision::DeviceSpec { owner_email: owner, name, device_type, public_key_pem: pem };
            let device = edgelink_api::provision::add_device(&store, &spec).await?;
            let value = serde_json::json!({ "device_id": device.id, "name": device.name, "owner_id": device.owner_id });
            report(json, value, device.id)
        }
        Some(Command::User { command: UserCommand::SignOut { email } }) => {
            let n = edgelink_api::provision::sign_out_user(&store, &email).await?;
            let value = serde_json::json!({ "email": email, "ended_sessions": n });
            report(json, value, format!("ended {n} session(s) of {email}"))
        }
        Some(Command::Pairing { command: PairingCommand::Create { owner } }) => {
            // Codes are stored keyed with the session key ring: the same
            // keys as the running servers (session.keys or session.key_file).
            let keys = session_keys(&config)?;
            let (ttl, max_live) = (config.pairing_ttl, config.max_live_pairings);
            let code = edgelink_api::provision::create_pairing(&store, &keys, &owner, ttl, max_live).await?;
            let value = serde_json::json!({ "code": code, "expires_in": config.pairing_ttl.as_secs() });
            report(json, value, code)
        }
    }
}

/// The deployment's key ring: `session.keys`, or the one key in
/// `session.key_file` (generated on first use).
fn session_keys(config: &ApiConfig) -> anyhow::Result<CookieKeys> {
    if config.session.keys.is_empty() {
        let path = &config.session.key_file;
        let (keys, created) = CookieKeys::load_or_generate(path).context("loading the session cookie key")?;
        if created {
            tracing::info!(path = %path.display(), "generated a new session cookie key");
        }
        Ok(keys)
    } else {
        let encoded: Vec<&str> = config.session.keys.iter().map(|k| k.expose_secret()).collect();
        CookieKeys::from_base64(&encoded).context("session.keys")
    }
}

async fn serve(store: Store, config: ApiConfig) -> anyhow::Result<()> {
    // Before anything records a metric.
    edgelink_observe::announce(edgelink_observe::Service::Api);
    let config_metrics = config.metrics_listen;
    let (key, origin) = SigningKey::load_or_generate(&config.signing_key_file).context("loading the signing key")?;
    if origin == KeyOrigin::Generated {
        tracing::info!(path = %config.signing_key_file.display(), kid = key.kid(), "generated a new token signing key");
    }
    let cookie_keys = session_keys(&config)?;
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        backend = ?store.backend(),
        public_url = %config.public_url,
        browser_sign_in = config.oidc.as_ref().map(|o| o.issuer.as_str()).unwrap_or("off"),
        "api-server listening"
    );
    let state = AppState::new(store, key, cookie_keys, config).map_err(anyhow::Error::msg)?;
    let shutdown = startup::shutdown_token();
    if let Some(addr) = config_metrics {
        let metrics =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding metrics port {addr}"))?;
        let stop = shutdown.clone();
        tokio::spawn(edgelink_observe::serve(metrics, async move { stop.cancelled().await }));
    }
    edgelink_api::serve(listener, state, shutdown).await?;
    Ok(())
}
