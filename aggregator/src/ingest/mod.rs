//! Ingest: every message on the contract's topics is parsed and checked before anything is
//! stored. A bad message is rejected with the topic and the field at fault, counted, and never
//! stops ingestion.
//!
//! One MQTT client subscribes (QoS 1, persistent session, manual acknowledgements) to the
//! contract's topics ([`subscriptions`], [`receive`]); on a node of a cluster, one such session
//! per site the node owns (`crate::cluster`). Messages go through a bounded channel (the
//! client stops reading when it is full: the broker holds the backlog) to the ingest thread
//! ([`Ingest`]), which owns the correlator and does, per message: parse and check ([`parse()`]);
//! de-duplicate on the event id; for a sighting, place it on a trajectory and store both, with
//! the other sightings already queued, in one transaction (group commit, [`Batch`]), then publish
//! `sightline.trajectory/1`. The message is acknowledged to the broker only once stored, so a
//! crash in between means a redelivery, which the de-duplication absorbs: nothing accepted is
//! lost and nothing is stored twice.
//!
//! What the ingest thread stores also goes to the live events (`GET /events`), a new
//! sighting's embedding into the search index, and the sighting is checked against the
//! watchlist.

mod batch;
mod flush;
mod mqtt;
mod parse;
mod worker;

pub use batch::{Batch, MAX_MESSAGES, MAX_WAIT};
pub use mqtt::{Deliver, options, receive};
pub use parse::{Incoming, Kind, Rejected, kind_of, parse, site_of, subscriptions};
pub use worker::{Ingest, QUEUE, Work};
