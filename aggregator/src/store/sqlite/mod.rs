//! [`SqliteStore`]: the [`Store`] on one SQLite file.
//!
//! Two connections: one writes (every insert, update and delete, serialised by a mutex), one only
//! reads (`query_only`), so API queries do not wait for ingestion: in WAL mode a reader sees the
//! last committed state without blocking the writer.
//!
//! Settings of every connection:
//! - `journal_mode = WAL`: readers and the writer do not block each other;
//! - `synchronous = FULL`: a commit is on disk when the call returns, even across a power loss.
//!   The audit log must be written before the audited answer is sent, and an event acknowledged
//!   to the broker must not be lost; NORMAL would lose the last commits on power loss (not on a
//!   process crash). The cost is one fsync per transaction; ingest stores the sightings queued
//!   together in one transaction (`Store::record_sightings`, group commit) to share it;
//! - `foreign_keys = ON`: a sighting always belongs to an existing trajectory;
//! - `secure_delete = ON`: deleted rows (embeddings) are overwritten with zeros, not only unlinked;
//! - a 5 s busy timeout against other processes (the CLI creating a token while the service runs).
//!
//! One file per job: the connections (`connection`), the conversions between rows and the
//! store's types (`rows`), the writes of ingestion (`records`), the reads (`queries`), tokens and
//! the audit log (`access`), the watchlist, retention; `store_impl` puts them behind the trait.

mod access;
mod connection;
mod queries;
mod records;
mod retention;
mod rows;
mod sites;
mod store_impl;
mod watchlist;

pub use connection::SqliteStore;
