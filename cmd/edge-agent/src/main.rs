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
    /// Pair this device with a code from the web UI (makes the key pair if
    /// missing, writes the state file `run` starts from).
    Pair {
        /// api-server base URL, e.g. https://edge.example.com.
        #[arg(long)]
        server: String,
        /// The pairing code, e.g. 7KQF-M2XD.
        #[arg(long)]
        code: String,
        /// Device name (default: the host name).
        #[arg(long)]
        name: Option<String>,
        /// Device type.
        #[arg(long = "type", default_value = "generic")]
        device_type: String,
        /// A capability (repeatable).
        #[arg(long = "capability")]
        capabilities: Vec<String>,
    },
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
    /// Seed 001's intermediary: connect to a main server's Socket.IO
    /// `/proxy` namespace and run its `execute_command`s over SSH.
    Proxy(ProxyArgs),
}

#[derive(clap::Args)]
struct ProxyArgs {
    /// The main server, e.g. https://main.example (namespace /proxy) or
    /// https://main.example/ns for another namespace.
    #[arg(long, env = "SERVER_URL")]
    server: String,
    /// This intermediary's id.
    #[arg(long, env = "PROXY_ID")]
    proxy_id: String,
    /// Its API key (prefer the environment: a flag shows in `ps`).
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    api_key: String,
    /// Where proxyId and apiKey go: the handshake query, the auth payload, or both.
    #[arg(long, value_enum, default_value = "both")]
    credentials_in: edgelink_intermediary::CredentialsIn,
    /// The Engine.IO path on the main server.
    #[arg(long, default_value = "/socket.io/")]
    socketio_path: String,
    /// A pinned SSH host key, HOST[:PORT]=SHA256:… (repeatable; also
    /// EDGELINK_PROXY_HOST_KEYS, comma-separated). A server whose key is
    /// not pinned here or in the command is refused.
    #[arg(long = "host-key", env = "EDGELINK_PROXY_HOST_KEYS", value_delimiter = ',')]
    host_keys: Vec<String>,
    /// Bytes kept of each command's stdout and stderr.
    #[arg(long, default_value_t = 1024 * 1024)]
    output_cap: usize,
    /// Longest command timeout honoured, in seconds.
    #[arg(long, default_value_t = 600)]
    max_timeout_secs: u64,
    /// Commands run at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// A private CA for an https main server, besides the public roots.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

/// `edge-agent proxy`: runs until SIGINT/SIGTERM.
fn proxy(args: ProxyArgs) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let pins =
        edgelink_ssh::parse_pins(&args.host_keys).unwrap_or_else(|e| startup::config_error(format!("--host-key {e}")));
    let tls = edgelink_agent::tls::client_config(args.ca_file.as_deref()).unwrap_or_else(|e| startup::config_error(e));
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| startup::config_error(format!("runtime: {e}")));
    rt.block_on(async move {
        let pool = edgelink_ssh::Pool::new(edgelink_ssh::PoolConfig { pins, ..Default::default() });
        let config = edgelink_intermediary::Config {
            server: args.server,
            proxy_id: args.proxy_id,
            api_key: args.api_key.into(),
            credentials_in: args.credentials_in,
            engine_path: args.socketio_path,
            tls,
            pool,
            output_cap: args.output_cap,
            max_timeout: std::time::Duration::from_secs(args.max_timeout_secs),
            concurrency: args.concurrency,
        };
        edgelink_intermediary::run(config, startup::shutdown_token()).await;
    });
}

fn main() {
    let cli = Cli::parse();
    startup::init_tracing();
    // The intermediary needs no device configuration.
    let cli = match cli.command {
        Command::Proxy(args) => return proxy(args),
        command => Cli { command, ..cli },
    };
    let (api, tunnel, device, local) = match &cli.command {
        Command::Run { api_url, tunnel_url, device_id, local_service } => {
            (api_url.clone(), tunnel_url.clone(), device_id.clone(), local_service.clone())
        }
        Command::Keygen | Command::Pair { .. } | Command::Proxy(_) => (None, None, None, None),
    };
    let overrides = overrides!(
        "api_url" => api,
        "tunnel_url" => tunnel,
        "device_id" => device,
        "local_service" => local,
        "key_file" => cli.key_file.clone(),
    );
    // Under systemd's StateDirectory=, key and state default to that
    // directory instead of the working directory (often a read-only /).
    let state_dir = state_directory_defaults();
    let mut config: AgentConfig =
        startup::load_with_base(cli.config.as_deref(), "EDGELINK_AGENT__", state_dir.clone(), overrides.clone())
            .unwrap_or_else(|e| startup::config_error(e));
    // What pairing wrote sits between the defaults and everything explicit.
    if let Command::Run { .. } = cli.command {
        match edgelink_agent::pair::AgentState::load(&config.state_file) {
            Ok(Some(state)) => {
                let mut base = state_dir;
                if let (Some(b), serde_json::Value::Object(s)) =
                    (base.as_object_mut(), serde_json::to_value(&state).unwrap_or_default())
                {
                    b.extend(s);
                }
                config = startup::load_with_base(cli.config.as_deref(), "EDGELINK_AGENT__", base, overrides)
                    .unwrap_or_else(|e| startup::config_error(e));
            }
            Ok(None) => {}
            Err(e) => startup::config_error(e),
        }
    }

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
        Command::Pair { server, code, name, device_type, capabilities } => {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let opts = edgelink_agent::pair::PairOptions {
                server,
                code,
                name: name.unwrap_or_else(host_name),
                device_type,
                capabilities,
                key_file: config.key_file.clone(),
                state_file: config.state_file.clone(),
                ca_file: config.ca_file.clone(),
                timeout: config.request_timeout,
            };
            let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| startup::config_error(format!("runtime: {e}")));
            match rt.block_on(edgelink_agent::pair::pair(&opts)) {
                Ok(state) => {
                    println!("paired: device {} ({})", state.device_id, opts.name);
                    println!("state written to {}; start it with `edge-agent run`", opts.state_file.display());
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(2);
                }
            }
        }
        Command::Proxy(args) => proxy(args),
        Command::Run { .. } => {
            if let Err(e) = config.validate() {
                startup::config_error(e);
            }
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let key = edgelink_agent::load_key(&config.key_file).unwrap_or_else(|e| startup::config_error(e));
            // One tunnel, one thread: its muxer and streams wake each other
            // without crossing CPUs (ADR 7's profile: cross-CPU wake-ups).
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| startup::config_error(format!("runtime: {e}")));
            let result = rt.block_on(async move {
                let shutdown = startup::shutdown_token();
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

/// `key_file` and `state_file` under `$STATE_DIRECTORY` (set by systemd's
/// `StateDirectory=`), as a config layer; empty when it is not set.
fn state_directory_defaults() -> serde_json::Value {
    // systemd may list several directories separated by ':'; the first is ours.
    let dir = std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| v.to_str().and_then(|s| s.split(':').next()).map(PathBuf::from))
        .filter(|d| !d.as_os_str().is_empty());
    match dir {
        Some(d) => serde_json::json!({
            "key_file": d.join("edge-agent.key"),
            "state_file": d.join("edge-agent.state.json"),
        }),
        None => serde_json::json!({}),
    }
}

/// This machine's name, for a default device name.
fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "edge device".to_owned())
}
