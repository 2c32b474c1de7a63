//! [`Store`](crate::store::Store) on [`PostgresStore`]: each method is implemented in the file of its
//! job; `store::delegate` writes the forwarding.

use super::connection::PostgresStore;
use super::{access, queries, records, retention, sites, watchlist};

crate::store::delegate::store_by_jobs!(PostgresStore);
