//! Group commit for the ingest thread: the messages it has handled but not yet acknowledged
//! (their flush is `flush.rs`).
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
pub(super) struct Entry {
    pub(super) publish: Publish,
    /// When the MQTT client received it.
    pub(super) received: Instant,
    /// The client (session) it came through, to acknowledge it on.
    pub(super) session: AsyncClient,
    /// A sighting to store first; `None`: nothing left to store (stored on its own, or
    /// rejected).
    pub(super) sighting: Option<Pending>,
}

/// The messages handled but not yet acknowledged, in arrival order.
#[derive(Default)]
pub struct Batch {
    pub(super) entries: Vec<Entry>,
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
