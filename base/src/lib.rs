//! Service plumbing shared by sightline's binaries (the edge agent, the aggregator, camsim).
//!
//! Each binary used to write these for itself, with small differences creeping in; here they
//! have one home:
//!
//! - [`logging`]: `tracing` to stderr, filtered by `RUST_LOG`, without timestamps under journald;
//! - [`signals`] (cargo feature `signals`): shutdown on SIGTERM or SIGINT, reload on SIGHUP;
//! - [`config`]: reading a TOML config file, the error naming the file, the key and the line,
//!   paths relative to the config file, and key groups several tables share. Each binary keeps
//!   its own schema and validation;
//! - [`mqtt`] (cargo feature `mqtt`): the connection of an MQTT client to its broker
//!   (credentials, TLS) and the `[mqtt]` keys that configure it.
//!
//! This crate knows nothing of the wire contract or of any other sightline crate.

pub mod config;
pub mod logging;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "signals")]
pub mod signals;
