//! The logs of sightline's binaries: `tracing` events on stderr, filtered by `RUST_LOG` (or the
//! binary's default filter), in colour only on a terminal.
//!
//! Under systemd stderr goes to journald, which stamps every line itself: services leave the time
//! out there ([`Stamps::UnlessJournald`]) rather than print it twice.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Whether log lines start with the time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamps {
    /// Always (tools run by hand or by tests).
    Always,
    /// Except under systemd (`JOURNAL_STREAM` set): journald stamps every line itself.
    UnlessJournald,
}

/// Installs the global subscriber; `default_filter` (`info,ort=warn`) applies when `RUST_LOG` is
/// unset or invalid. Call once, first thing in `main`.
pub fn init(default_filter: &str, stamps: Stamps) {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    match stamps {
        Stamps::UnlessJournald if journald => logs.without_time().init(),
        _ => logs.init(),
    }
}
