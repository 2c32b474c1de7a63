//! Group commit for the ingest thread: the messages it has handled but not yet acknowledged,
//! and their flush.
//!
//! A [`Batch`] is a run of consecutive messages taken off the queue while more were waiting (at
//! most [`MAX_MESSAGES`], or [`MAX_WAIT`] after the first). Its flush asks the store which of its
//! sightings are already stored (one query for all: [`Store::seen_among`]), places the others one
//! by one in arrival order (so the correlator decides exactly as it would one at a time), and
//! stores them together in one transaction ([`Store::record_sightings`]: one commit, one fsync,
//! for all of them). Only then is each message acknowledged and each new sighting announced, in
//! arrival order. Any other message flushes the batch before it is stored (`Ingest::ingest`), so
//! nothing is reordered across kinds.
//!
//! While the store is transiently unavailable the same step is retried; the placements are made
//! once, so a retried batch stores the same ones. A batch the store refuses for another reason
//! (one sighting's trajectory belongs to another site, say) is stored one sighting at a time, so
//! that only the ones at fault are left unacknowledged.
//!
//! [`Store::seen_among`]: crate::store::Store::seen_among
//! [`Store::record_sightings`]: crate::store::Store::record_sightings

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Publish};
use sightline_contract::Sighting;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::parse;
use super::worker::{Ingest, Work};
use crate::correlate::{Assignment, Observation};
use crate::metrics::Outcome;
use crate::store::{SightingPlacement, StoreError};

/// Messages in one batch at most.
pub const MAX_MESSAGES: usize = 256;
/// A batch takes no more messages this long after its first (taking one is parsing and checking
/// it), so that a stream arriving about as fast as it is taken does not hold back the first
/// one's acknowledgement.
pub const MAX_WAIT: Duration = Duration::from_millis(5);

/// A sighting that passed ingest's checks, to be de-duplicated, placed and stored.
pub struct Pending {
    pub sighting: Sighting,
    pub received_at: OffsetDateTime,
}

/// A handled message waiting for its acknowledgement.
struct Entry {
    publish: Publish,
    /// When the MQTT client received it.
    received: Instant,
    /// The client (session) it came through, to acknowledge it on.
    session: AsyncClient,
    /// A sighting to store first; `None`: nothing left to store (stored on its own, or
    /// rejected).
    sighting: Option<Pending>,
}

/// The messages handled but not yet acknowledged, in arrival order.
#[derive(Default)]
pub struct Batch {
    entries: Vec<Entry>,
    /// When its first message was added.
    opened: Option<Instant>,
}

impl Batch {
    pub(super) fn push(
        &mut self,
        publish: Publish,
        received: Instant,
        session: AsyncClient,
        sighting: Option<Pending>,
    ) {
        self.opened.get_or_insert_with(Instant::now);
        self.entries.push(Entry { publish, received, session, sighting });
    }

    /// It takes no more messages: flush it.
    pub(super) fn is_full(&self) -> bool {
        self.entries.len() >= MAX_MESSAGES || self.opened.is_some_and(|t| t.elapsed() >= MAX_WAIT)
    }
}

impl Ingest {
    /// De-duplicates, places and stores the batch's sightings in one transaction (each store
    /// call retried while the store is transiently unavailable), then acknowledges its messages
    /// and announces its new sightings in order.
    pub(super) fn flush(&mut self, rx: &mpsc::Receiver<Work>) {
        let batch = std::mem::take(&mut self.batch);
        let pending: Vec<&Pending> = batch.entries.iter().filter_map(|e| e.sighting.as_ref()).collect();
        let ids: Vec<uuid::Uuid> = pending.iter().map(|p| p.sighting.id).collect();
        let seen = if ids.is_empty() {
            Default::default()
        } else {
            match self.retrying("sightings", rx, |ingest| ingest.store.seen_among(&ids)) {
                Ok(seen) => seen,
                Err(e) => return self.give_up(pending.len(), &e),
            }
        };
        // placed once, in arrival order: a retry below stores the same placements
        let placed: Vec<Option<Assignment>> = pending
            .iter()
            .map(|p| {
                let s = &p.sighting;
                (!seen.contains(&s.id)).then(|| self.correlators.assign(&s.site, Observation::from_sighting(s)))
            })
            .collect();
        let placements: Vec<SightingPlacement<'_>> = pending
            .iter()
            .zip(&placed)
            .filter_map(|(p, a)| {
                a.map(|a| SightingPlacement {
                    sighting: &p.sighting,
                    trajectory: a.trajectory,
                    distance: a.distance,
                    received_at: p.received_at,
                })
            })
            .collect();
        let stored = match self.store_all(&placements, rx) {
            Ok(stored) => stored,
            Err(e) => return self.give_up(pending.len(), &e),
        };
        let (mut placed, mut stored) = (placed.into_iter(), stored.into_iter());
        for entry in &batch.entries {
            let kind = parse::kind_of(&entry.publish.topic);
            if let Some(p) = &entry.sighting {
                let outcome = match placed.next().expect("one placement per sighting") {
                    None => Ok(Outcome::Duplicate),
                    Some(a) => match stored.next().expect("one outcome per placed sighting") {
                        Ok(true) => self.announce(&p.sighting, &a, p.received_at).map(|()| Outcome::Accepted),
                        Ok(false) => Ok(Outcome::Duplicate),
                        Err(e) => Err(e),
                    },
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
            if let Err(e) = entry.session.try_ack(&entry.publish) {
                tracing::warn!(error = %e, "MQTT acknowledgement not sent");
            }
        }
    }

    /// The store was unavailable when the service stopped: none of the batch's sightings is
    /// acknowledged (nor anything after them), the broker redelivers them.
    fn give_up(&self, sightings: usize, e: &StoreError) {
        for _ in 0..sightings {
            self.metrics.message(parse::Kind::Sighting.as_str(), Outcome::Failed);
        }
        tracing::error!(error = %e, sightings, "sightings not stored; left unacknowledged");
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
