//! sightline aggregator: receives every edge agent's MQTT traffic, correlates sightings across
//! cameras into trajectories, stores them, and serves integrators and operators.
//! See `docs/aggregator.md`.

pub mod alerts;
pub mod api;
pub mod auth;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod correlate;
pub mod events;
pub mod ingest;
pub mod latest;
pub mod liveness;
pub mod metrics;
pub mod plausible;
pub mod retention;
pub mod search;
pub mod service;
pub mod site;
pub mod sites;
pub mod store;
pub mod vectors;
pub mod watchlist;

pub use sightline_contract::{Clock, SystemClock};
