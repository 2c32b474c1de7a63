//! Loading a binary's TOML configuration. Each binary keeps its own schema (serde types with
//! `deny_unknown_fields`) and its own validation; what they share lives here:
//!
//! - [`read`] and [`parse`]: the file's text, then its TOML into the binary's type; an unknown or
//!   misspelt key is rejected with its name and its line;
//! - [`ConfigError`]: every error names the file, and the key at fault (`camera[1].analysis_fps`);
//! - [`rebase`]: relative paths in a config are relative to the config file, not to the working
//!   directory;
//! - [`KeyGroup`] and [`embed`]: keys several tables share (`[mqtt]`'s security keys), declared
//!   once and embedded in each binary's table, still rejecting unknown keys with their line.

mod embed;
mod error;
mod file;
mod paths;

pub use self::embed::{Embedding, KeyGroup, embed};
pub use self::error::ConfigError;
pub use self::file::{parse, read};
pub use self::paths::{dir_of, rebase};
