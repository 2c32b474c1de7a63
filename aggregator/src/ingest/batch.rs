//! Group commit for the ingest thread: the messages it has handled but not yet acknowledged,
//! and their flush.
//!
//! A [`Batch`] is a run of consecutive messages taken off the queue while more were waiting (at
//! most [`MAX_MESSAGES`], or [`MAX_WAIT`] after the first): the sightings among them are placed
//! one by one in arrival order as they are handled (so the correlator decides exactly as it would
//! one at a time), then stored together in one transaction, [`Store::record_sightings`]: one
//! commit, one fsync, for all of them. Only then is each message acknowledged and each new
//! sighting announced, in arrival order. Any other message flushes the batch before it is stored
//! (`Ingest::ingest`), so nothing is reordered across kinds.
//!
//! While the store is transiently unavailable the same batch is retried, with the same
//! placements (the correlator already holds them). A batch the store refuses for another reason
//! (one sighting's trajectory belongs to another site, say) is stored one sighting at a time, so
//! that only the ones at fault are left unacknowledged.
//!
//! [`Store::record_sightings`]: crate::store::Store::record_sightings

use std::time::{Duration, Instant};

use rumqttc::Publish;
use sightline_contract::Sighting;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::parse;
use super::worker::{Ingest, Work};
use crate::correlate::Assignment;
use crate::metrics::Outcome;
use crate::store::{SightingPlacement, StoreError};

/// Messages in one batch at most.
pub const MAX_MESSAGES: usize = 256;
/// A batch takes no more messages this long after its first, so that a steady stream does not
/// hold back the first one's acknowledgement.
pub const MAX_WAIT: Duration = Duration::from_millis(5);

/// A new sighting with where the correlator placed it, to be stored.
pub struct Placed {
    pub sighting: Sighting,
    pub assignment: Assignment,
    pub received_at: OffsetDateTime,
}

/// A handled message waiting for its acknowledgement.
struct Entry {
    publish: Publish,
    /// When the MQTT client received it.
    received: Instant,
    /// A new sighting to store first; `None`: nothing left to store (stored on its own, a
    /// duplicate, or rejected).
    placed: Option<Placed>,
}

/// The messages handled but not yet acknowledged, in arrival order.
#[derive(Default)]
pub struct Batch {
    entries: Vec<Entry>,
    /// When its first message was added.
    opened: Option<Instant>,
}

impl Batch {
    pub(super) fn push(&mut self, publish: Publish, received: Instant, placed: Option<Placed>) {
        self.opened.get_or_insert_with(Instant::now);
        self.entries.push(Entry { publish, received, placed });
    }

    /// It takes no more messages: flush it.
    pub(super) fn is_full(&self) -> bool {
        self.entries.len() >= MAX_MESSAGES || self.opened.is_some_and(|t| t.elapsed() >= MAX_WAIT)
    }
}

impl Ingest {
    /// Stores the batch's sightings in one transaction (retried while the store is transiently
    /// unavailable), then acknowledges its messages and announces its new sightings in order.
    pub(super) fn flush(&mut self, rx: &mpsc::Receiver<Work>) {
        let batch = std::mem::take(&mut self.batch);
        let placements: Vec<SightingPlacement<'_>> = batch
            .entries
            .iter()
            .filter_map(|e| e.placed.as_ref())
            .map(|p| SightingPlacement {
                sighting: &p.sighting,
                trajectory: p.assignment.trajectory,
                distance: p.assignment.distance,
                received_at: p.received_at,
            })
            .collect();
        let mut stored = match self.store_all(&placements, rx) {
            Ok(stored) => stored.into_iter(),
            Err(e) => {
                // the service is stopping: nothing is acknowledged, the broker redelivers it all
                for entry in batch.entries.iter().filter(|e| e.placed.is_some()) {
                    self.metrics.message(parse::kind_of(&entry.publish.topic), Outcome::Failed);
                }
                tracing::error!(error = %e, sightings = placements.len(), "sightings not stored; left unacknowledged");
                return;
            }
        };
        for entry in &batch.entries {
            let kind = parse::kind_of(&entry.publish.topic);
            if let Some(placed) = &entry.placed {
                let outcome = match stored.next().expect("one outcome per placed sighting") {
                    Ok(true) => self.announce(placed).map(|()| Outcome::Accepted),
                    Ok(false) => Ok(Outcome::Duplicate),
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(outcome) => self.metrics.message(kind, outcome),
                    Err(e) => {
                        self.metrics.message(kind, Outcome::Failed);
                        tracing::error!(topic = %entry.publish.topic, error = %e, "message not stored; left unacknowledged");
                        continue;
                    }
                }
            }
            self.metrics.ingested(kind, entry.received.elapsed());
            if let Err(e) = self.client.try_ack(&entry.publish) {
                tracing::warn!(error = %e, "MQTT acknowledgement not sent");
            }
        }
    }

    /// Whether each sighting was new: all in one transaction, or one at a time if the store
    /// refuses the batch for a reason other than being unavailable. `Err`: the store was
    /// unavailable when the service stopped.
    fn store_all(
        &mut self,
        placements: &[SightingPlacement<'_>],
        rx: &mpsc::Receiver<Work>,
    ) -> Result<Vec<Result<bool, StoreError>>, StoreError> {
        if placements.is_empty() {
            return Ok(Vec::new());
        }
        match self.retrying("sightings", rx, |ingest| ingest.store.record_sightings(placements)) {
            Ok(stored) => Ok(stored.into_iter().map(Ok).collect()),
            Err(e) if e.is_transient() => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, sightings = placements.len(), "batch refused: storing its sightings one at a time");
                Ok(placements
                    .iter()
                    .map(|p| {
                        self.retrying("sighting", rx, |ingest| {
                            ingest.store.record_sightings(std::slice::from_ref(p)).map(|v| v[0])
                        })
                    })
                    .collect())
            }
        }
    }
}
