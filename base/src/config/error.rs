//! The error of a binary's configuration: it names the file and, for a bad value, the key.

use std::path::PathBuf;

/// A config file that cannot be read, parsed or accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// Not TOML, or not the binary's schema (an unknown key, a missing one, a wrong type): the
    /// message names the key and its line.
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value the binary's validation refuses; `key` is its full name (`mqtt.tls.ca_file`).
    #[error("config {path}: `{key}`: {message}")]
    Invalid { path: PathBuf, key: String, message: String },
    /// A file `[mqtt]` names became unreadable after the config was loaded.
    #[cfg(feature = "mqtt")]
    #[error(transparent)]
    Security(#[from] crate::mqtt::SecurityError),
}
