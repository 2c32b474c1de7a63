//! The analysis worker's heartbeat, read by the systemd watchdog feeder and the `/healthz` and
//! `/metrics` endpoints.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The analysis worker's liveness: it beats at least every 250 ms (its tick) while it runs, so a
/// stale heartbeat means it is stuck (the systemd watchdog is fed only while it is fresh).
pub struct Heartbeat {
    start: Instant,
    last_ms: AtomicU64,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat { start: Instant::now(), last_ms: 0.into() }
    }
}

impl Heartbeat {
    pub fn beat(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        self.start.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}
