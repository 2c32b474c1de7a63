//! The tree of sites the database holds (`Store::claim_sites`).

use rusqlite::{TransactionBehavior, params};

use super::connection::SqliteStore;
use super::rows::*;
use crate::store::codec::tree_difference;
use crate::store::{Result, SiteRow, StoreError};

pub(super) fn claim_sites(store: &SqliteStore, sites: &[SiteRow], replace: bool) -> Result<()> {
    const OP: &str = "claim_sites";
    let mut db = store.writer();
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).op(OP)?;
    let stored: Vec<SiteRow> = {
        let mut q = tx.prepare("SELECT id, parent, name FROM sites").op(OP)?;
        q.query_map([], |r| Ok(SiteRow { id: r.get(0)?, parent: r.get(1)?, name: r.get(2)? }))
            .and_then(|rows| rows.collect())
            .op(OP)?
    };
    if !stored.is_empty() && !replace {
        return match tree_difference(&stored, sites) {
            Some(detail) => Err(StoreError::SiteTree { detail }),
            None => Ok(()),
        };
    }
    tx.execute("DELETE FROM sites", []).op(OP)?;
    for s in sites {
        tx.execute("INSERT INTO sites (id, parent, name) VALUES (?1, ?2, ?3)", params![s.id, s.parent, s.name])
            .op(OP)?;
    }
    tx.commit().op(OP)
}
