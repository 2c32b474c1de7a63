//! Reading a config file and parsing its TOML into a binary's config type.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::error::ConfigError;

/// The text of the config file at `path`.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })
}

/// Parses TOML `text` into `T`; `path` is only used in messages. With `deny_unknown_fields` on
/// `T`'s tables, an unknown key is an error naming the key and its line.
pub fn parse<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })
}
