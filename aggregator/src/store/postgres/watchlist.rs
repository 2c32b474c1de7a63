//! Watchlist entries. A removed entry's embedding is taken out of the table's heap at once
//! (`VACUUM FULL` of the small watchlist table).

use time::OffsetDateTime;
use uuid::Uuid;

use super::connection::PostgresStore;
use super::rows::*;
use crate::store::codec::check_watchlist_entry;
use crate::store::{Result, WatchlistEntry};

pub(super) fn watchlist_add(store: &PostgresStore, e: &WatchlistEntry) -> Result<bool> {
    check_watchlist_entry(e)?;
    store.with(|c| {
        let n = c
            .execute(
                &format!(
                    "INSERT INTO watchlist ({WATCHLIST_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (id) DO NOTHING"
                ),
                &[
                    &e.id,
                    &e.name,
                    &e.purpose,
                    &e.model,
                    &f32_bytes(&e.embedding),
                    &e.created_by,
                    &ms(e.created_at),
                    &ms(e.expires_at),
                ],
            )
            .op("watchlist_add")?;
        Ok(n == 1)
    })
}

pub(super) fn watchlist_active(store: &PostgresStore, at: OffsetDateTime) -> Result<Vec<WatchlistEntry>> {
    let found = store.with(|c| {
        c.query(
            &format!("SELECT {WATCHLIST_COLUMNS} FROM watchlist WHERE expires_at > $1 ORDER BY created_at, id"),
            &[&ms(at)],
        )
        .op("watchlist_active")
    })?;
    rows(found, watchlist_row)
}

pub(super) fn watchlist_remove(store: &PostgresStore, id: Uuid) -> Result<bool> {
    store.with(|c| {
        let n = c.execute("DELETE FROM watchlist WHERE id = $1", &[&id]).op("watchlist_remove")?;
        if n == 1 {
            c.batch_execute("VACUUM FULL watchlist").op("watchlist_remove: VACUUM FULL watchlist")?;
        }
        Ok(n == 1)
    })
}
