//! The flush of a group commit (`batch.rs`): its sightings de-duplicated, placed in arrival order
//! and stored in one transaction, then each message acknowledged and each new sighting
//! announced, in order.

use tokio::sync::mpsc;

use super::batch::Pending;
use super::parse;
use super::worker::{Ingest, Work};
use crate::correlate::{Assignment, Observation};
use crate::metrics::Outcome;
use crate::store::{SightingPlacement, StoreError, TrajectoryMerge};

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
        // placed once, in arrival order: a retry below stores the same placements (and merges)
        let mut merges: Vec<TrajectoryMerge> = Vec::new();
        let placed: Vec<Option<(Assignment, Vec<uuid::Uuid>)>> = pending
            .iter()
            .map(|p| {
                let s = &p.sighting;
                if seen.contains(&s.id) {
                    return None;
                }
                let a = self.correlators.assign(&s.site, Observation::from_sighting(s));
                let made = self.correlators.take_merges(&s.site);
                let from = made.iter().map(|m| m.from).collect();
                merges.extend(made.into_iter().map(|m| TrajectoryMerge {
                    site: s.site.clone(),
                    from: m.from,
                    into: m.into,
                    distance: m.distance,
                    sighting: s.id,
                    at: p.received_at,
                }));
                Some((a, from))
            })
            .collect();
        // a sighting placed earlier in the batch on a trajectory merged later in it is stored
        // (and announced) where it was placed; the merge, stored after it, moves it
        let placements: Vec<SightingPlacement<'_>> = pending
            .iter()
            .zip(&placed)
            .filter_map(|(p, a)| {
                a.as_ref().map(|(a, _)| SightingPlacement {
                    sighting: &p.sighting,
                    trajectory: a.trajectory,
                    distance: a.distance,
                    received_at: p.received_at,
                })
            })
            .collect();
        let stored = match self.store_all(&placements, &merges, rx) {
            Ok(stored) => stored,
            Err(e) => return self.give_up(pending.len(), &e),
        };
        let (mut placed, mut stored) = (placed.into_iter(), stored.into_iter());
        for entry in &batch.entries {
            let kind = parse::kind_of(&entry.publish.topic);
            if let Some(p) = &entry.sighting {
                let outcome = match placed.next().expect("one placement per sighting") {
                    None => Ok(Outcome::Duplicate),
                    Some((a, from)) => match stored.next().expect("one outcome per placed sighting") {
                        Ok(true) => self.announce(&p.sighting, &a, from, p.received_at).map(|()| Outcome::Accepted),
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
        merges: &[TrajectoryMerge],
        rx: &mpsc::Receiver<Work>,
    ) -> Result<Vec<Result<bool, StoreError>>, StoreError> {
        if placements.is_empty() {
            return Ok(Vec::new());
        }
        match self.retrying("sightings", rx, |ingest| ingest.store.record_batch(placements, merges)) {
            Ok(stored) => Ok(stored.into_iter().map(Ok).collect()),
            Err(e) if e.is_transient() => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, sightings = placements.len(), "batch refused: storing its sightings one at a time");
                let stored = placements
                    .iter()
                    .map(|p| {
                        self.retrying("sighting", rx, |ingest| {
                            ingest.store.record_sightings(std::slice::from_ref(p)).map(|v| v[0])
                        })
                    })
                    .collect();
                if !merges.is_empty()
                    && let Err(e) = self.retrying("merges", rx, |ingest| ingest.store.record_batch(&[], merges))
                {
                    tracing::error!(error = %e, merges = merges.len(), "trajectory merges not stored");
                }
                Ok(stored)
            }
        }
    }
}
