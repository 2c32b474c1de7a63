//! Retention: the purge of what is past the policy, chunk by chunk so ingestion is never held up
//! for long, then a WAL checkpoint; and the compaction of the whole file (`VACUUM`).

use std::collections::HashSet;

use rusqlite::{TransactionBehavior, params};
use time::OffsetDateTime;

use super::connection::SqliteStore;
use super::rows::*;
use crate::store::{PurgeReport, Result, RetentionPolicy, StoreError};

/// Rows deleted per transaction by `Store::purge`, so ingestion is never held up for long.
const PURGE_CHUNK: i64 = 2000;

pub(super) fn purge(store: &SqliteStore, now: OffsetDateTime, policy: &RetentionPolicy) -> Result<PurgeReport> {
    const OP: &str = "purge";
    policy.check()?;
    let cutoff = |days| ms(RetentionPolicy::cutoff(now, days));
    let mut report = PurgeReport::default();

    // sightings, chunk by chunk, each chunk with the trajectories it touched
    let sightings_before = cutoff(policy.sightings_days);
    let mut touched = HashSet::new();
    loop {
        let mut db = store.writer();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).op(OP)?;
        let trajectories: Vec<String> = tx
            .prepare_cached(
                "DELETE FROM sightings WHERE rowid IN \
                 (SELECT rowid FROM sightings WHERE last_seen < ?1 LIMIT ?2) RETURNING trajectory",
            )
            .and_then(|mut q| q.query_map(params![sightings_before, PURGE_CHUNK], |r| r.get(0))?.collect())
            .op(OP)?;
        if trajectories.is_empty() {
            break;
        }
        report.sightings += trajectories.len() as u64;
        let chunk: HashSet<String> = trajectories.into_iter().collect();
        for t in &chunk {
            refresh_trajectory(&tx, t).op(OP)?;
        }
        tx.commit().op(OP)?;
        touched.extend(chunk);
    }
    {
        let mut db = store.writer();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).op(OP)?;
        for t in &touched {
            let exists: bool =
                tx.query_row("SELECT EXISTS (SELECT 1 FROM trajectories WHERE id = ?1)", [t], |r| r.get(0)).op(OP)?;
            if exists {
                report.trajectories_updated += 1;
            } else {
                report.trajectories_deleted += 1;
            }
        }
        // any trajectory without sightings, whatever left it so
        report.trajectories_deleted += tx
            .execute(
                "DELETE FROM trajectories WHERE NOT EXISTS (SELECT 1 FROM sightings s WHERE s.trajectory = trajectories.id)",
                [],
            )
            .op(OP)? as u64;
        tx.commit().op(OP)?;
    }

    report.alerts = delete_chunked(store, OP, "alerts", "ts", cutoff(policy.alerts_days))?;
    report.crowd = delete_chunked(store, OP, "crowd", "ts", cutoff(policy.crowd_days))?;
    report.audit = delete_chunked(store, OP, "audit", "ts", cutoff(policy.audit_days))?;
    report.watchlist = delete_chunked(store, OP, "watchlist", "expires_at", ms(now) + 1)?;

    report.oldest_sighting = {
        let db = store.writer();
        let oldest: Option<i64> = db.query_row("SELECT MIN(last_seen) FROM sightings", [], |r| r.get(0)).op(OP)?;
        oldest.map(|v| from_ms(0, v)).transpose().op(OP)?
    };
    report.wal_truncated = store.checkpoint_truncate()?;
    Ok(report)
}

pub(super) fn compact(store: &SqliteStore) -> Result<()> {
    store.writer().execute_batch("VACUUM").op("compact")?;
    if !store.checkpoint_truncate()? {
        return Err(StoreError::Invalid {
            what: "compaction",
            detail: "another connection kept the write-ahead log from being truncated; try again".into(),
        });
    }
    Ok(())
}

fn delete_chunked(store: &SqliteStore, op: &'static str, table: &str, column: &str, before_ms: i64) -> Result<u64> {
    let sql = format!("DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {column} < ?1 LIMIT ?2)");
    let mut total = 0u64;
    loop {
        let n = store.writer().execute(&sql, params![before_ms, PURGE_CHUNK]).op(op)?;
        total += n as u64;
        if (n as i64) < PURGE_CHUNK {
            return Ok(total);
        }
    }
}
