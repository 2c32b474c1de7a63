//! Watchlist entries. A removed entry's embedding is taken out of the write-ahead log at once.

use rusqlite::params;
use time::OffsetDateTime;
use uuid::Uuid;

use super::connection::SqliteStore;
use super::rows::*;
use crate::store::{Result, WatchlistEntry};

pub(super) fn watchlist_add(store: &SqliteStore, e: &WatchlistEntry) -> Result<bool> {
    crate::store::codec::check_watchlist_entry(e)?;
    let n = store
        .writer()
        .execute(
            &format!(
                "INSERT INTO watchlist ({WATCHLIST_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (id) DO NOTHING"
            ),
            params![
                e.id.to_string(),
                e.name,
                e.purpose,
                e.model,
                f32_bytes(&e.embedding),
                e.created_by,
                ms(e.created_at),
                ms(e.expires_at),
            ],
        )
        .op("watchlist_add")?;
    Ok(n == 1)
}

pub(super) fn watchlist_active(store: &SqliteStore, at: OffsetDateTime) -> Result<Vec<WatchlistEntry>> {
    let db = store.reader();
    let mut q = db
        .prepare_cached(&format!(
            "SELECT {WATCHLIST_COLUMNS} FROM watchlist WHERE expires_at > ?1 ORDER BY created_at, id"
        ))
        .op("watchlist_active")?;
    q.query_map([ms(at)], watchlist_row).and_then(|rows| rows.collect()).op("watchlist_active")
}

pub(super) fn watchlist_remove(store: &SqliteStore, id: Uuid) -> Result<bool> {
    let n = store.writer().execute("DELETE FROM watchlist WHERE id = ?1", [id.to_string()]).op("watchlist_remove")?;
    if n == 1 {
        store.checkpoint_truncate()?;
    }
    Ok(n == 1)
}
