//! What the fuzz targets share: one tokio runtime per process.

use std::sync::OnceLock;

/// A current-thread runtime with IO and timers, made once.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime"))
}
