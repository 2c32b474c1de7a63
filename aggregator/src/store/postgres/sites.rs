//! The tree of sites the database holds (`Store::claim_sites`). Aggregators starting at once
//! take turns on a transaction-scoped advisory lock.

use super::connection::PostgresStore;
use super::rows::*;
use crate::store::codec::tree_difference;
use crate::store::{Result, SiteRow, StoreError};

/// The advisory lock key claims hold (ASCII "SLAGSITE").
const SITES_LOCK: i64 = 0x534C_4147_5349_5445;

pub(super) fn claim_sites(store: &PostgresStore, sites: &[SiteRow], replace: bool) -> Result<()> {
    const OP: &str = "claim_sites";
    store.with(|c| {
        let mut tx = c.transaction().op(OP)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SITES_LOCK]).op(OP)?;
        let rows = tx.query("SELECT id, parent, name FROM sites", &[]).op(OP)?;
        let stored: Vec<SiteRow> = rows
            .iter()
            .map(|r| Ok(SiteRow { id: get(r, 0)?, parent: get(r, 1)?, name: get(r, 2)? }))
            .collect::<Result<_>>()?;
        if !stored.is_empty() && !replace {
            return match tree_difference(&stored, sites) {
                Some(detail) => Err(StoreError::SiteTree { detail }),
                None => Ok(()),
            };
        }
        tx.execute("DELETE FROM sites", &[]).op(OP)?;
        for s in sites {
            tx.execute("INSERT INTO sites (id, parent, name) VALUES ($1, $2, $3)", &[&s.id, &s.parent, &s.name])
                .op(OP)?;
        }
        tx.commit().op(OP)
    })
}
