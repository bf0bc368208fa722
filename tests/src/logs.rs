//! Capturing what the servers and agents of a test log, to scan it for
//! secrets.

use std::sync::{Arc, Mutex, OnceLock};

/// Every log line written through it, kept in memory.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Installs a debug-level subscriber writing here for this thread
    /// (the stack runs on the test's current-thread runtime, so its tasks
    /// log here too) until the guard is dropped.
    ///
    /// tracing caches each callsite's interest process-wide. While only one
    /// dispatcher exists, that interest is taken from the default of the
    /// thread that first reaches the callsite: a sibling test's thread,
    /// which has no subscriber, would cache "never" and this capture would
    /// miss the event. A second dispatcher kept alive for the whole process
    /// makes tracing ask every live dispatcher instead, this one included.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        static SECOND: OnceLock<tracing::Dispatch> = OnceLock::new();
        SECOND.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(self.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    /// What was logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}
