//! [`PostgresStore`]: the [`Store`](crate::store::Store) in a PostgreSQL database
//! (`[store] url`), with the semantics of the SQLite store.
//!
//! The trait is synchronous and runs on blocking threads, so this uses the blocking `postgres`
//! client (of the tokio-postgres project) and a small bounded pool of its connections
//! (`docs/adr/0013-postgresql-client.md`). Every call takes a connection from the pool for one
//! short transaction; PostgreSQL's row locks, not a process-wide mutex, serialise the writers:
//! several aggregators may share a database.
//!
//! The encoding is SQLite's: times are `bigint` Unix milliseconds, embeddings `bytea` of
//! little-endian `f32`s (the same bytes as the SQLite blob, one codec for both backends, and 512
//! bytes stored inline in the row where a `real[]` would add an array header and element
//! checks), JSON documents `text` (crowd zones `jsonb`, since series are queried by zone); ids are
//! native `uuid`s, which order like SQLite's lowercase text ids, so keyset pages match.
//!
//! One file per job: the pool and opening a database (`connection`), the schema and its versioned
//! migrations (`schema`), conversions and row readers (`rows`), the writes of ingestion
//! (`records`), the reads (`queries`), tokens and the audit log (`access`), the watchlist,
//! retention; `store_impl` puts them behind the trait.

mod access;
mod connection;
pub mod locks;
mod queries;
mod records;
mod retention;
mod rows;
pub mod schema;
mod sites;
mod store_impl;
mod watchlist;

pub use connection::{PgTarget, PostgresStore};
