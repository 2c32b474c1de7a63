//! Retention: the purge of what is past the policy, chunk by chunk so ingestion is never held up
//! for long, then a `VACUUM` of the tables it deleted from; and the compaction (`VACUUM FULL`),
//! which rewrites those tables so no deleted row is left in their files.
//!
//! PostgreSQL does not overwrite a deleted row: it stays in the table's heap until `VACUUM`
//! prunes it, and a pruned row's bytes may stay in the page's free space until the page is
//! rewritten. `VACUUM FULL` writes a new copy of each table with only its live rows and unlinks
//! the old files. The write-ahead log keeps what was inserted until its segments are recycled
//! (after the next checkpoints): see `docs/aggregator-storage.md`.

use std::collections::HashSet;

use time::OffsetDateTime;
use uuid::Uuid;

use super::connection::PostgresStore;
use super::rows::*;
use crate::store::codec::time_of_ms;
use crate::store::{PurgeReport, Result, RetentionPolicy, StoreError};

/// Rows deleted per transaction by `Store::purge`, so ingestion is never held up for long.
const PURGE_CHUNK: i64 = 2000;

/// The tables `purge` deletes from, which `VACUUM` and `compact` rewrite.
const PURGED_TABLES: &str = "sightings, trajectories, alerts, crowd, audit, watchlist";

pub(super) fn purge(store: &PostgresStore, now: OffsetDateTime, policy: &RetentionPolicy) -> Result<PurgeReport> {
    const OP: &str = "purge";
    policy.check()?;
    let cutoff = |days| ms(RetentionPolicy::cutoff(now, days));
    let mut report = PurgeReport::default();

    // sightings, chunk by chunk, each chunk with the trajectories it touched
    let sightings_before = cutoff(policy.sightings_days);
    let mut touched = HashSet::new();
    loop {
        let chunk: HashSet<Uuid> = store.with(|c| {
            let mut tx = c.transaction().op(OP)?;
            let deleted = tx
                .query(
                    "DELETE FROM sightings WHERE id IN \
                     (SELECT id FROM sightings WHERE last_seen < $1 LIMIT $2) RETURNING trajectory",
                    &[&sightings_before, &PURGE_CHUNK],
                )
                .op(OP)?;
            let mut chunk = HashSet::new();
            for r in &deleted {
                chunk.insert(get::<Uuid>(r, 0)?);
            }
            let mut ids: Vec<Uuid> = chunk.iter().copied().collect();
            ids.sort(); // a fixed lock order against concurrent writers
            tx.query("SELECT 1 FROM trajectories WHERE id = ANY($1) ORDER BY id FOR UPDATE", &[&ids]).op(OP)?;
            refresh_trajectories(&mut tx, &ids).op(OP)?;
            tx.commit().op(OP)?;
            report.sightings += deleted.len() as u64;
            Ok(chunk)
        })?;
        if chunk.is_empty() {
            break;
        }
        touched.extend(chunk);
    }
    let touched: Vec<Uuid> = touched.into_iter().collect();
    let (updated, orphans) = store.with(|c| {
        let mut tx = c.transaction().op(OP)?;
        let left: i64 =
            get(&tx.query_one("SELECT count(*) FROM trajectories WHERE id = ANY($1)", &[&touched]).op(OP)?, 0)?;
        // any trajectory without sightings, whatever left it so
        let orphans = tx
            .execute(
                "DELETE FROM trajectories t WHERE NOT EXISTS (SELECT 1 FROM sightings s WHERE s.trajectory = t.id)",
                &[],
            )
            .op(OP)?;
        tx.commit().op(OP)?;
        Ok((left as u64, orphans))
    })?;
    report.trajectories_updated = updated;
    report.trajectories_deleted = touched.len() as u64 - updated + orphans;

    report.alerts = delete_chunked(store, "alerts", "id", "ts", cutoff(policy.alerts_days))?;
    report.crowd = delete_chunked(store, "crowd", "id", "ts", cutoff(policy.crowd_days))?;
    report.audit = delete_chunked(store, "audit", "seq", "ts", cutoff(policy.audit_days))?;
    report.watchlist = delete_chunked(store, "watchlist", "id", "expires_at", ms(now) + 1)?;

    let oldest: Option<i64> =
        store.with(|c| get(&c.query_one("SELECT min(last_seen) FROM sightings", &[]).op(OP)?, 0))?;
    report.oldest_sighting =
        oldest.map(time_of_ms).transpose().map_err(|e| StoreError::Corrupt { what: "timestamp", detail: e })?;
    // prunes the deleted rows (their space is reused); `compact` rewrites the files
    store.with(|c| c.batch_execute(&format!("VACUUM {PURGED_TABLES}")).op("purge: VACUUM"))?;
    report.wal_truncated = true;
    Ok(report)
}

pub(super) fn compact(store: &PostgresStore) -> Result<()> {
    store.with(|c| c.batch_execute(&format!("VACUUM FULL {PURGED_TABLES}")).op("compact: VACUUM FULL"))
}

fn delete_chunked(store: &PostgresStore, table: &str, key: &str, column: &str, before_ms: i64) -> Result<u64> {
    let sql = format!("DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {column} < $1 LIMIT $2)");
    let mut total = 0u64;
    loop {
        let n = store.with(|c| c.execute(&sql, &[&before_ms, &PURGE_CHUNK]).op("purge"))?;
        total += n;
        if (n as i64) < PURGE_CHUNK {
            return Ok(total);
        }
    }
}
