//! edge-agent: parses arguments, loads config and runs `edgelink_agent`.

#[path = "../../startup.rs"]
mod startup;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use edgelink_agent::{AgentConfig, Status};

#[derive(Parser)]
#[command(
    name = "edge-agent",
    version,
    about = "edgelink device agent: dials the relay and serves the local web service"
)]
struct Cli {
    /// TOML config file (fields as in `AgentConfig`; env EDGELINK_AGENT__* and flags override it).
    #[arg(long, global = true, env = "EDGELINK_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Private key file.
    #[arg(long, global = true)]
    key_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate the device key pair (private key 0600, public key beside it as .pub).
    Keygen,
    /// Connect and serve until stopped.
    Run {
        /// api-server base URL.
        #[arg(long)]
        api_url: Option<String>,
        /// Tunnel URL (ws:// or wss://.../tunnel).
        #[arg(long)]
        tunnel_url: Option<String>,
        /// Device id.
        #[arg(long)]
        device_id: Option<String>,
        /// Local web service URL.
        #[arg(long)]
        local_service: Option<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    startup::init_tracing();
    let (api, tunnel, device, local) = match &cli.command {
        Command::Run { api_url, tunnel_url, device_id, local_service } => {
            (api_url.clone(), tunnel_url.clone(), device_id.clone(), local_service.clone())
        }
        Command::Keygen => (None, None, None, None),
    };
    let config: AgentConfig = startup::load(
        cli.config.as_deref(),
        "EDGELINK_AGENT__",
        overrides!(
            "api_url" => api,
            "tunnel_url" => tunnel,
            "device_id" => device,
            "local_service" => local,
            "key_file" => cli.key_file.clone(),
        ),
    )
    .unwrap_or_else(|e| startup::config_error(e));

    match cli.command {
        Command::Keygen => match edgelink_agent::keygen(&config.key_file) {
            Ok(_) => {
                println!("private key: {}", config.key_file.display());
                println!("public key:  {}", edgelink_agent::public_key_path(&config.key_file).display());
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        },
        Command::Run { .. } => {
            if let Err(e) = config.validate() {
                startup::config_error(e);
            }
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let key = edgelink_agent::load_key(&config.key_file).unwrap_or_else(|e| startup::config_error(e));
            let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| startup::config_error(format!("runtime: {e}")));
            let result = rt.block_on(async move {
                let shutdown = tokio_util::sync::CancellationToken::new();
                let trigger = shutdown.clone();
                tokio::spawn(async move {
                    startup::shutdown_signal().await;
                    trigger.cancel();
                });
                let (status, _) = tokio::sync::watch::channel(Status::Connecting);
                edgelink_agent::run::run(config, key, status, shutdown).await
            });
            if let Err(e) = result {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        }
    }
}
