//! Tracing set-up: structured logs to stderr, or to `.baton/dispatcher.log` (0600) for a
//! detached dispatcher whose stderr is `/dev/null`. Filter from `BATON_LOG`, else `RUST_LOG`.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

static FILE: OnceLock<Mutex<std::fs::File>> = OnceLock::new();

/// Where log lines go: the log file once one is set, else stderr.
struct Sink;

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match FILE.get() {
            Some(f) => f.lock().unwrap_or_else(|e| e.into_inner()).write(buf),
            None => std::io::stderr().write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Install the global subscriber; `default_level` applies when neither variable is set.
pub fn init(default_level: &str) {
    let filter =
        std::env::var("BATON_LOG").or_else(|_| std::env::var("RUST_LOG")).unwrap_or_else(|_| default_level.into());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| default_level.into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(|| Sink)
        .try_init();
}

/// Send log lines to `path` (appended, created 0600) from now on.
pub fn to_file(path: &Path) {
    match std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path) {
        Ok(f) => {
            let _ = FILE.set(Mutex::new(f));
        }
        Err(e) => tracing::warn!("cannot open {}: {e}", path.display()),
    }
}
