//! Hand-off of decoded frames from the per-camera decoders to the analysis worker.
//!
//! Each camera owns one [`FrameSlot`]: the decoder puts its newest frame there and the
//! analysis worker takes it. A frame that is replaced before it was analysed is dropped
//! and counted (latest frame wins), so a slow model never makes frames queue up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use image::RgbImage;
use time::OffsetDateTime;

/// A decoded RGB frame, when it was captured and when it reached the agent.
pub struct Frame {
    pub ts: OffsetDateTime,
    pub image: RgbImage,
    /// When the decoder handed the frame over (the appsink callback): where the agent's latency
    /// measurements start (`sightline_frame_latency_seconds`, `sightline_publish_latency_seconds`).
    pub arrived: Instant,
}

/// Per-camera counters (monotonic), read by status reports and metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Access units received from the network (RTSP) or demuxed (file).
    pub received: AtomicU64,
    /// Frames out of the decoder.
    pub decoded: AtomicU64,
    /// Decoded frames handed to analysis (after rate sampling).
    pub sampled: AtomicU64,
    /// Sampled frames replaced before analysis could take them.
    pub dropped: AtomicU64,
    pub analyzed: AtomicU64,
    pub faces: AtomicU64,
    pub sightings: AtomicU64,
    /// Stream failures (each followed by a reconnection).
    pub failures: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct SlotState {
    frame: Option<Frame>,
    /// The source ended (file EOS): after the last frame, the tracker is flushed.
    ended: bool,
    /// Since when the slot has had something for the worker (a frame replaced by a newer one
    /// keeps its place in the queue).
    waiting_since: Option<Instant>,
}

/// What the worker found in a slot.
pub enum Taken {
    Frame(Frame),
    Ended,
}

/// Wakes the analysis worker when any slot gets a frame.
#[derive(Default)]
pub struct Doorbell {
    rung: Mutex<bool>,
    cv: Condvar,
}

impl Doorbell {
    pub fn ring(&self) {
        *self.rung.lock().unwrap() = true;
        self.cv.notify_all();
    }

    /// Waits until rung or `timeout`; returns whether it was rung (and resets it).
    pub fn wait(&self, timeout: Duration) -> bool {
        let guard = self.rung.lock().unwrap();
        let (mut guard, _) = self.cv.wait_timeout_while(guard, timeout, |r| !*r).unwrap();
        std::mem::replace(&mut *guard, false)
    }
}

/// One camera's latest-frame-wins slot.
pub struct FrameSlot {
    state: Mutex<SlotState>,
    /// Signalled when the worker takes a frame (for the back-pressured `Pace::Fast` mode).
    taken: Condvar,
    pub counters: Arc<Counters>,
    bell: Arc<Doorbell>,
}

impl FrameSlot {
    pub fn new(counters: Arc<Counters>, bell: Arc<Doorbell>) -> Self {
        FrameSlot { state: Mutex::default(), taken: Condvar::new(), counters, bell }
    }

    /// Offers a frame. With `wait`, blocks until the previous frame was taken (nothing is dropped);
    /// otherwise replaces it and counts the drop.
    pub fn put(&self, frame: Frame, wait: bool) {
        let mut s = self.state.lock().unwrap();
        if wait {
            s = self.taken.wait_while(s, |s| s.frame.is_some()).unwrap();
        }
        if s.frame.replace(frame).is_some() {
            Counters::add(&self.counters.dropped, 1);
        }
        s.waiting_since.get_or_insert_with(Instant::now);
        Counters::add(&self.counters.sampled, 1);
        drop(s);
        self.bell.ring();
    }

    /// Marks the source as ended; the worker flushes the camera's tracks after its last frame.
    pub fn end(&self) {
        let mut s = self.state.lock().unwrap();
        s.ended = true;
        s.waiting_since.get_or_insert_with(Instant::now);
        drop(s);
        self.bell.ring();
    }

    /// Re-opens a slot for a restarted source.
    pub fn reopen(&self) {
        self.state.lock().unwrap().ended = false;
    }

    pub fn take(&self) -> Option<Taken> {
        let mut s = self.state.lock().unwrap();
        let out = match s.frame.take() {
            Some(f) => Some(Taken::Frame(f)),
            None if s.ended => {
                s.ended = false;
                Some(Taken::Ended)
            }
            None => None,
        };
        // the end marker, if still pending, waits behind the other cameras' frames
        s.waiting_since = s.ended.then(Instant::now);
        drop(s);
        self.taken.notify_all();
        out
    }

    /// Since when the slot has been waiting for the worker, if it is. The worker serves the
    /// longest-waiting camera first: cameras take turns whatever their frame timestamps say
    /// (each camera's clock is its own).
    pub fn pending_since(&self) -> Option<Instant> {
        self.state.lock().unwrap().waiting_since
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(sec: i64) -> Frame {
        Frame {
            ts: OffsetDateTime::from_unix_timestamp(sec).unwrap(),
            image: RgbImage::new(2, 2),
            arrived: Instant::now(),
        }
    }

    #[test]
    fn latest_frame_wins_and_drops_are_counted() {
        let c = Arc::new(Counters::default());
        let slot = FrameSlot::new(c.clone(), Arc::new(Doorbell::default()));
        slot.put(frame(1), false);
        slot.put(frame(2), false);
        slot.put(frame(3), false);
        assert_eq!(Counters::get(&c.dropped), 2);
        assert_eq!(Counters::get(&c.sampled), 3);
        match slot.take() {
            Some(Taken::Frame(f)) => assert_eq!(f.ts.unix_timestamp(), 3),
            _ => panic!("expected the newest frame"),
        }
        assert!(slot.take().is_none());
    }

    #[test]
    fn the_longest_waiting_slot_is_served_first_whatever_the_frame_times() {
        let bell = Arc::new(Doorbell::default());
        let (a, b) = (FrameSlot::new(Arc::default(), bell.clone()), FrameSlot::new(Arc::default(), bell));
        assert_eq!(a.pending_since(), None);
        a.put(frame(100), false);
        std::thread::sleep(Duration::from_millis(2));
        b.put(frame(1), false);
        // a keeps its place when its frame is replaced by a newer one
        a.put(frame(101), false);
        assert!(a.pending_since().unwrap() < b.pending_since().unwrap());
        assert!(matches!(a.take(), Some(Taken::Frame(_))));
        assert_eq!(a.pending_since(), None);
        a.put(frame(102), false);
        assert!(b.pending_since().unwrap() < a.pending_since().unwrap(), "a goes behind b");
    }

    #[test]
    fn end_is_reported_after_the_last_frame() {
        let slot = FrameSlot::new(Arc::default(), Arc::new(Doorbell::default()));
        slot.put(frame(1), false);
        slot.end();
        assert!(matches!(slot.take(), Some(Taken::Frame(_))));
        assert!(matches!(slot.take(), Some(Taken::Ended)));
        assert!(slot.take().is_none());
    }

    #[test]
    fn waiting_put_blocks_until_taken() {
        let slot = Arc::new(FrameSlot::new(Arc::default(), Arc::new(Doorbell::default())));
        slot.put(frame(1), true);
        let s2 = slot.clone();
        let producer = std::thread::spawn(move || s2.put(frame(2), true));
        // The producer cannot complete until we take frame 1; take until frame 2 shows up.
        let mut seen = Vec::new();
        while seen.len() < 2 {
            if let Some(Taken::Frame(f)) = slot.take() {
                seen.push(f.ts.unix_timestamp());
            }
            std::thread::yield_now();
        }
        producer.join().unwrap();
        assert_eq!(seen, vec![1, 2]);
        assert_eq!(Counters::get(&slot.counters.dropped), 0);
    }

    #[test]
    fn doorbell_wait_times_out_or_returns_when_rung() {
        let bell = Doorbell::default();
        assert!(!bell.wait(Duration::from_millis(10)));
        bell.ring();
        assert!(bell.wait(Duration::from_secs(5)));
    }
}
