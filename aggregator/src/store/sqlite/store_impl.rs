//! [`Store`](crate::store::Store) on [`SqliteStore`]: each method is implemented in the file of its
//! job; `store::delegate` writes the forwarding.

use super::connection::SqliteStore;
use super::{access, queries, records, retention, sites, watchlist};

crate::store::delegate::store_by_jobs!(SqliteStore);
