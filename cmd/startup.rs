//! What every edgelink binary does at startup: install the tracing
//! subscriber, layer its typed config from defaults → file → environment →
//! flags, and exit 64 with a clear message when that config is invalid.
//! Included by each binary with `#[path]`; binaries own env and files.

#![allow(dead_code)]

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};

/// Exit code for a configuration error (EX_CONFIG is 78; 64 is EX_USAGE,
/// which is what the operator must fix here: the invocation).
pub const EXIT_CONFIG: i32 = 64;

/// Installs the subscriber: `RUST_LOG` filter (default `info`), human
/// output, or JSON when `EDGELINK_LOG_FORMAT=json`. Colours only when
/// stderr is a terminal (log files and journald get plain text).
pub fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = std::env::var("EDGELINK_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Layers `T`'s defaults, the TOML file (if given; it must exist), the
/// environment (`{prefix}FIELD`, e.g. `EDGELINK_API__LISTEN`) and the
/// flags the user set (`overrides`, a JSON object).
pub fn load<T>(file: Option<&Path>, env_prefix: &str, overrides: serde_json::Value) -> Result<T, String>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Default,
{
    load_with_base(file, env_prefix, serde_json::json!({}), overrides)
}

/// Like [`load`], with `base` (an object of fields) layered right above
/// the defaults, below the file, env and flags.
#[allow(dead_code)]
pub fn load_with_base<T>(
    file: Option<&Path>,
    env_prefix: &str,
    base: serde_json::Value,
    overrides: serde_json::Value,
) -> Result<T, String>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Default,
{
    let mut fig = Figment::from(Serialized::defaults(T::default())).merge(Serialized::defaults(base));
    if let Some(path) = file {
        if !path.exists() {
            return Err(format!("config file {} does not exist", path.display()));
        }
        fig = fig.merge(Toml::file_exact(path));
    }
    fig = fig.merge(Env::prefixed(env_prefix).split("__"));
    fig = fig.merge(Serialized::defaults(overrides));
    fig.extract::<T>().map_err(|e| format!("invalid configuration: {e}"))
}

/// Prints a configuration error and exits 64.
pub fn config_error(message: impl std::fmt::Display) -> ! {
    eprintln!("error: {message}");
    std::process::exit(EXIT_CONFIG)
}

/// A JSON object of the flags that were given (None values dropped).
#[macro_export]
macro_rules! overrides {
    ($($key:literal => $value:expr),* $(,)?) => {{
        let mut m = serde_json::Map::new();
        $(
            if let Some(v) = $value {
                m.insert($key.to_owned(), serde_json::json!(v));
            }
        )*
        serde_json::Value::Object(m)
    }};
}

/// A cancellation token cancelled on SIGINT or SIGTERM: the one shutdown
/// seam every binary hands to its service.
pub fn shutdown_token() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        trigger.cancel();
    });
    token
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
