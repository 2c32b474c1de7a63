//! The durable store-and-forward outbox in front of the MQTT publisher.
//!
//! Every message the agent publishes (sightings, crowd measurements, alerts, camera statuses,
//! heatmaps) is first written to an SQLite database (`[mqtt] outbox`); it is deleted only once
//! the broker has acknowledged it (PUBACK). Messages survive broker outages, crashes
//! (`kill -9`) and restarts, and are sent in insertion (`seq`) order.
//!
//! # Storage
//!
//! One table, `outbox(seq INTEGER PRIMARY KEY AUTOINCREMENT, topic, payload, retain, priority,
//! bytes)`, in WAL mode with `synchronous = FULL`: a committed row survives a process crash and
//! a power loss. [`Outbox::push_batch`] writes several messages in one transaction (one sync).
//! `AUTOINCREMENT` guarantees `seq` never goes backwards, even after the newest rows were
//! deleted, so replay order is the order of insertion across restarts.
//!
//! # Bound
//!
//! The outbox holds at most `max_bytes` (the sum of topic + payload lengths). When a push goes
//! past it, rows are evicted by ascending [`Priority`] (crowd measurements and heatmaps first,
//! then statuses, then sightings, alerts last), oldest first within a priority, until the
//! total is within the bound again. A row being evicted may be the one just pushed (a crowd
//! measurement is dropped rather than an older alert). Every eviction is logged (`warn`) and
//! counted ([`Outbox::evicted`]); evicting a row that is in flight is harmless (its PUBACK then
//! acknowledges nothing).
//!
//! The calls are synchronous and short (one small transaction); the publisher calls them from
//! its task.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::message::Outgoing;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("outbox: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// Which messages are evicted first when the outbox is full (lowest first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Crowd measurements and heatmaps: periodic, the next one supersedes them.
    Crowd = 0,
    /// Camera and agent statuses: retained, the next one supersedes them.
    Status = 1,
    Sighting = 2,
    Alert = 3,
}

impl Priority {
    /// The priority of a message by its contract topic (`…/crowd`, `…/status`, `…/sighting`,
    /// `…/alert`; anything else, e.g. `…/heatmap`, is lowest).
    pub fn of_topic(topic: &str) -> Priority {
        match topic.rsplit('/').next().unwrap_or("") {
            "alert" => Priority::Alert,
            "sighting" => Priority::Sighting,
            "status" => Priority::Status,
            _ => Priority::Crowd,
        }
    }
}

/// A stored message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub seq: i64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

pub struct Outbox {
    db: Connection,
    max_bytes: u64,
    bytes: u64,
    depth: u64,
    evicted: u64,
}

impl Outbox {
    /// Opens (creating if needed) the outbox at `path`; rows of a previous run are kept.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Outbox, OutboxError> {
        let err = |source| OutboxError::Open { path: path.display().to_string(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // a missing directory surfaces as SQLite's "unable to open database file"
            let _ = std::fs::create_dir_all(dir);
        }
        let db = Connection::open(path).map_err(err)?;
        db.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        db.pragma_update(None, "synchronous", "FULL").map_err(err)?;
        // delivered messages hold face embeddings: overwrite them on delete, not just unlink them
        db.pragma_update(None, "secure_delete", "ON").map_err(err)?;
        db.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS outbox (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 topic TEXT NOT NULL,
                 payload BLOB NOT NULL,
                 retain INTEGER NOT NULL,
                 priority INTEGER NOT NULL,
                 bytes INTEGER NOT NULL
             );
             CREATE INDEX IF NOT EXISTS outbox_eviction ON outbox (priority, seq);",
        )
        .map_err(err)?;
        let (depth, bytes): (i64, i64) = db
            .query_row("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM outbox", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(err)?;
        let mut outbox = Outbox { db, max_bytes, bytes: bytes as u64, depth: depth as u64, evicted: 0 };
        outbox.enforce_bound()?;
        Ok(outbox)
    }

    /// Stores one message; returns its `seq`.
    pub fn push(&mut self, msg: &Outgoing, priority: Priority) -> Result<i64, OutboxError> {
        Ok(self.push_batch(std::iter::once((msg, priority)))?[0])
    }

    /// Stores messages in one transaction (in order); returns their `seq`s. The bound is
    /// enforced after the insert.
    pub fn push_batch<'a>(
        &mut self,
        msgs: impl IntoIterator<Item = (&'a Outgoing, Priority)>,
    ) -> Result<Vec<i64>, OutboxError> {
        let tx = self.db.transaction()?;
        let mut seqs = Vec::new();
        let mut added = 0u64;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO outbox (topic, payload, retain, priority, bytes) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (msg, priority) in msgs {
                let bytes = (msg.topic.len() + msg.payload.len()) as u64;
                insert.execute(params![msg.topic, msg.payload, msg.retain, priority as i64, bytes as i64])?;
                seqs.push(tx.last_insert_rowid());
                added += bytes;
            }
        }
        tx.commit()?;
        self.bytes += added;
        self.depth += seqs.len() as u64;
        self.enforce_bound()?;
        Ok(seqs)
    }

    /// Evicts lowest priority, oldest first, until the outbox is within `max_bytes`.
    fn enforce_bound(&mut self) -> Result<(), OutboxError> {
        while self.bytes > self.max_bytes {
            let victim: Option<(i64, String, i64, i64)> = self
                .db
                .query_row("SELECT seq, topic, priority, bytes FROM outbox ORDER BY priority, seq LIMIT 1", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?;
            let Some((seq, topic, priority, bytes)) = victim else {
                self.bytes = 0;
                self.depth = 0;
                break;
            };
            self.db.execute("DELETE FROM outbox WHERE seq = ?1", [seq])?;
            self.bytes = self.bytes.saturating_sub(bytes as u64);
            self.depth = self.depth.saturating_sub(1);
            self.evicted += 1;
            tracing::warn!(
                seq,
                %topic,
                priority,
                bytes,
                evicted = self.evicted,
                max_bytes = self.max_bytes,
                "outbox full: message evicted"
            );
        }
        Ok(())
    }

    /// Up to `limit` rows with `seq > after`, in `seq` order.
    pub fn next_after(&self, after: i64, limit: usize) -> Result<Vec<Row>, OutboxError> {
        let mut q = self
            .db
            .prepare_cached("SELECT seq, topic, payload, retain FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let rows = q
            .query_map(params![after, limit as i64], |r| {
                Ok(Row { seq: r.get(0)?, topic: r.get(1)?, payload: r.get(2)?, retain: r.get(3)? })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Deletes an acknowledged row; returns false when it was not there (evicted, or acked before).
    pub fn ack(&mut self, seq: i64) -> Result<bool, OutboxError> {
        let bytes: Option<i64> =
            self.db.query_row("DELETE FROM outbox WHERE seq = ?1 RETURNING bytes", [seq], |r| r.get(0)).optional()?;
        if let Some(b) = bytes {
            self.bytes = self.bytes.saturating_sub(b as u64);
            self.depth = self.depth.saturating_sub(1);
        }
        Ok(bytes.is_some())
    }

    /// Rows waiting for a PUBACK (or not sent yet).
    pub fn depth(&self) -> u64 {
        self.depth
    }

    /// Bytes (topic + payload) of the stored rows.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Rows evicted by the bound since this outbox was opened.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, n: usize) -> Outgoing {
        Outgoing { topic: topic.into(), payload: vec![b'x'; n], retain: false, origin: None }
    }

    fn seqs(o: &Outbox) -> Vec<i64> {
        o.next_after(0, 1000).unwrap().iter().map(|r| r.seq).collect()
    }

    #[test]
    fn priorities_by_topic() {
        assert_eq!(Priority::of_topic("sightline/v1/s/cam/alert"), Priority::Alert);
        assert_eq!(Priority::of_topic("sightline/v1/s/cam/sighting"), Priority::Sighting);
        assert_eq!(Priority::of_topic("sightline/v1/s/agent/a/status"), Priority::Status);
        assert_eq!(Priority::of_topic("sightline/v1/s/cam/crowd"), Priority::Crowd);
        assert_eq!(Priority::of_topic("sightline/v1/s/cam/heatmap"), Priority::Crowd);
        assert!(Priority::Crowd < Priority::Status && Priority::Status < Priority::Sighting);
        assert!(Priority::Sighting < Priority::Alert);
    }

    #[test]
    fn push_then_ack_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(&dir.path().join("o.sqlite"), 1 << 20).unwrap();
        let a = o.push(&msg("t/a/sighting", 10), Priority::Sighting).unwrap();
        let b = o.push(&msg("t/b/status", 10), Priority::Status).unwrap();
        let c = o.push(&msg("t/c/alert", 10), Priority::Alert).unwrap();
        assert!(a < b && b < c);
        assert_eq!(o.depth(), 3);
        assert_eq!(o.bytes(), 3 * 10 + "t/a/sighting".len() as u64 + "t/b/status".len() as u64 + 9);
        let rows = o.next_after(0, 10).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.topic.as_str()).collect::<Vec<_>>(),
            ["t/a/sighting", "t/b/status", "t/c/alert"]
        );
        assert_eq!(o.next_after(a, 1).unwrap()[0].seq, b);
        assert!(o.ack(b).unwrap());
        assert!(!o.ack(b).unwrap(), "a second ack is a no-op");
        assert_eq!(seqs(&o), [a, c]);
        assert!(o.ack(a).unwrap() && o.ack(c).unwrap());
        assert_eq!((o.depth(), o.bytes()), (0, 0));
        // seq keeps growing after the table emptied
        assert!(o.push(&msg("t/d/crowd", 1), Priority::Crowd).unwrap() > c);
    }

    #[test]
    fn reopen_keeps_unacked_rows_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/o.sqlite");
        let (kept, last) = {
            let mut o = Outbox::open(&path, 1 << 20).unwrap();
            let batch: Vec<Outgoing> = (0..5).map(|i| msg(&format!("t/{i}/sighting"), 100)).collect();
            let s = o.push_batch(batch.iter().map(|m| (m, Priority::Sighting))).unwrap();
            o.ack(s[0]).unwrap();
            o.ack(s[2]).unwrap();
            o.ack(s[4]).unwrap();
            (vec![s[1], s[3]], s[4])
        };
        let mut o = Outbox::open(&path, 1 << 20).unwrap();
        assert_eq!(seqs(&o), kept);
        assert_eq!(o.depth(), 2);
        assert_eq!(o.bytes(), 2 * (100 + "t/1/sighting".len() as u64));
        let rows = o.next_after(0, 10).unwrap();
        assert_eq!(rows[0].topic, "t/1/sighting");
        assert_eq!(rows[1].payload, vec![b'x'; 100]);
        // AUTOINCREMENT: never reuses the deleted newest seq
        assert!(o.push(&msg("t/x/alert", 1), Priority::Alert).unwrap() > last);
    }

    #[test]
    fn eviction_goes_by_priority_then_age_and_keeps_alerts() {
        let dir = tempfile::tempdir().unwrap();
        // every message is 100 bytes (topic included); room for 6
        let m = |kind: &str| {
            let topic = format!("t/{kind}");
            let n = 100 - topic.len();
            msg(&topic, n)
        };
        let mut o = Outbox::open(&dir.path().join("o.sqlite"), 600).unwrap();
        let alert1 = o.push(&m("alert"), Priority::Alert).unwrap();
        let sighting1 = o.push(&m("sighting"), Priority::Sighting).unwrap();
        let status1 = o.push(&m("status"), Priority::Status).unwrap();
        let crowd1 = o.push(&m("crowd"), Priority::Crowd).unwrap();
        let status2 = o.push(&m("status"), Priority::Status).unwrap();
        let crowd2 = o.push(&m("crowd"), Priority::Crowd).unwrap();
        assert_eq!((o.depth(), o.bytes(), o.evicted()), (6, 600, 0));

        // past the bound: the oldest crowd measurement goes first, then the next one
        let alert2 = o.push(&m("alert"), Priority::Alert).unwrap();
        assert_eq!(seqs(&o), [alert1, sighting1, status1, status2, crowd2, alert2]);
        let alert3 = o.push(&m("alert"), Priority::Alert).unwrap();
        assert_eq!(seqs(&o), [alert1, sighting1, status1, status2, alert2, alert3]);
        assert_eq!(o.evicted(), 2);
        // then statuses, oldest first
        let alert4 = o.push(&m("alert"), Priority::Alert).unwrap();
        assert_eq!(seqs(&o), [alert1, sighting1, status2, alert2, alert3, alert4]);
        // a new crowd measurement is itself the lowest priority: evicted at once
        o.push(&m("crowd"), Priority::Crowd).unwrap();
        assert_eq!(seqs(&o), [alert1, sighting1, status2, alert2, alert3, alert4]);
        // status, then sighting, alerts last
        let alert5 = o.push(&m("alert"), Priority::Alert).unwrap();
        let alert6 = o.push(&m("alert"), Priority::Alert).unwrap();
        assert_eq!(seqs(&o), [alert1, alert2, alert3, alert4, alert5, alert6]);
        // only alerts left: the oldest alert goes
        let alert7 = o.push(&m("alert"), Priority::Alert).unwrap();
        assert_eq!(seqs(&o), [alert2, alert3, alert4, alert5, alert6, alert7]);
        assert_eq!(o.evicted(), 7);
        assert_eq!((o.depth(), o.bytes()), (6, 600));
        let _ = crowd1;

        // a smaller bound on reopen evicts at once
        drop(o);
        let o = Outbox::open(&dir.path().join("o.sqlite"), 250).unwrap();
        assert_eq!(seqs(&o), [alert6, alert7]);
        assert_eq!(o.evicted(), 4);
    }
}
