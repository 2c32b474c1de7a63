//! Photo probes (search, watchlist) under bounded memory.
//!
//! A photo costs memory in proportion to its pixels: a 40 Mpx JPEG decodes to 120 MB of RGB, and
//! the face pipeline makes further copies. Two bounds keep the aggregator's memory flat:
//! - `[search] max_photo_pixels` (default 25 Mpx): the header's width x height is checked before
//!   anything is decoded (`sightline_vision::check_photo`); a larger photo is a 400 naming
//!   `image`;
//! - `[search] max_concurrent_photos` (default 2) slots: a photo takes one before its base64 is
//!   decoded and holds it until it is embedded (the face pipeline embeds one at a time; the
//!   other slot queues). A request that finds no free slot waits up to [`PHOTO_WAIT`] for one,
//!   then gets 503 `busy`: a burst of uploads is answered quickly instead of piling up decoded
//!   photos in memory. Embedding probes need no slot.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::SearchConfig;

/// How long a photo waits for a free slot before it is refused with 503.
pub const PHOTO_WAIT: Duration = Duration::from_secs(2);

/// The slots of photos in progress, sized from `[search] max_concurrent_photos` on first use.
#[derive(Default)]
pub struct PhotoGate {
    slots: OnceLock<Arc<Semaphore>>,
}

impl PhotoGate {
    /// The slots (`search.max_concurrent_photos` of them, fixed at the first call).
    pub fn slots(&self, search: &SearchConfig) -> Arc<Semaphore> {
        self.slots.get_or_init(|| Arc::new(Semaphore::new(search.max_concurrent_photos.max(1)))).clone()
    }

    /// A slot for one photo, waiting up to [`PHOTO_WAIT`]; `None` when none frees up (the
    /// caller answers 503 `busy`).
    pub(super) async fn enter(&self, search: &SearchConfig) -> Option<OwnedSemaphorePermit> {
        let slots = self.slots(search);
        // the semaphore is never closed: an error is a timeout
        tokio::time::timeout(PHOTO_WAIT, slots.acquire_owned()).await.ok()?.ok()
    }
}
