//! The analysis worker: one thread that owns the models (loaded once, shared by every camera)
//! and each camera's tracker. It serves the camera that has waited longest, so no camera
//! starves, and turns closed tracks into `sightline.sighting/1` events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sightline_contract::{Alert, AlertKind, AlertState, BestShot, Clock, Sighting, new_event_id, topic};
use sightline_vision::persons::PersonDetector;
use sightline_vision::{EMBEDDING_MODEL, FacePipeline};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::camera::{CameraHandle, CameraSet, status_message};
use crate::frames::{Counters, Doorbell, Frame, Taken};
use crate::health::HealthProbe;
use crate::heartbeat::Heartbeat;
use crate::message::Outgoing;
use crate::metrics::{Metrics, model};
use crate::persons::{PERSON_HISTORY, foot};
use crate::tracker::{ClosedTrack, FaceObservation, Tracker, TrackerConfig};

pub struct Worker {
    pub site: String,
    pub agent: String,
    pub faces: FacePipeline,
    /// Person detector, loaded when a camera counts crowds or has a fence.
    pub persons: Option<PersonDetector>,
    /// A person detector loaded after start (a reload added the first camera that needs one).
    pub late_persons: Arc<Mutex<Option<PersonDetector>>>,
    pub cameras: Arc<CameraSet>,
    pub tracker: TrackerConfig,
    pub bell: Arc<Doorbell>,
    pub clock: Arc<dyn Clock>,
    pub events: mpsc::Sender<Outgoing>,
    /// Set once every camera task has ended: drain the slots and stop.
    pub done: Arc<AtomicBool>,
    pub heartbeat: Arc<Heartbeat>,
    pub metrics: Arc<Metrics>,
}

/// How often tracks of cameras without frames are aged.
const TICK: Duration = Duration::from_millis(250);

/// What the worker keeps per camera it serves.
struct Served {
    handle: Arc<CameraHandle>,
    tracker: Tracker,
    frame_size: [u32; 2],
    /// Capture time of the last analysed frame and when it was taken: the tracker runs on
    /// frame time, which silence advances by the monotonic time elapsed since.
    last_frame: Option<(OffsetDateTime, Instant)>,
    health: HealthProbe,
    /// Frame time from which the next person detection / crowd hand-off is due.
    next_persons: Option<OffsetDateTime>,
    next_crowd: Option<OffsetDateTime>,
}

impl Served {
    fn new(handle: Arc<CameraHandle>, tracker: &TrackerConfig) -> Self {
        Served {
            handle,
            tracker: Tracker::new(tracker.clone()),
            frame_size: [0, 0],
            last_frame: None,
            health: HealthProbe::default(),
            next_persons: None,
            next_crowd: None,
        }
    }

    fn frame_time_now(&self) -> Option<OffsetDateTime> {
        self.last_frame.map(|(ts, at)| ts + at.elapsed())
    }
}

impl Worker {
    /// Runs until `done` is set and every slot is drained. Blocking: call on its own thread.
    pub fn run(mut self) {
        let mut served: Vec<Served> = Vec::new();
        let mut seen: Option<Arc<Vec<Arc<CameraHandle>>>> = None;
        let mut last_tick = Instant::now();
        loop {
            self.heartbeat.beat();
            let set = self.cameras.snapshot();
            if !seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, &set)) {
                self.follow(&mut served, &set);
                seen = Some(set);
            }
            if self.persons.is_none() {
                self.persons = self.late_persons.lock().unwrap().take();
            }
            // Cameras without new frames still age their tracks, so a silent camera's
            // tracks close on time whatever the other cameras do.
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                for s in served.iter_mut() {
                    let last = s.last_frame.map(|(ts, _)| ts);
                    let now = s.frame_time_now().unwrap_or_else(|| self.clock.now());
                    let closed = s.tracker.tick(now);
                    self.emit(s, closed, last_tick);
                    let alerts = s.handle.rules.lock().unwrap().on_silence(now, last);
                    self.alert(&s.handle, alerts, last_tick);
                }
            }
            let next = served
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.handle.slot.pending_since().map(|t| (t, i)))
                .min()
                .map(|(_, i)| i);
            let Some(i) = next else {
                if self.done.load(Ordering::Acquire) {
                    break;
                }
                self.bell.wait(TICK);
                continue;
            };
            let s = &mut served[i];
            match s.handle.slot.take() {
                Some(Taken::Frame(frame)) => {
                    let arrived = frame.arrived;
                    let closed = self.analyze(s, frame);
                    self.metrics.frame_done(arrived.elapsed());
                    self.emit(s, closed, arrived);
                }
                Some(Taken::Ended) => self.flush(s),
                None => {}
            }
        }
    }

    /// Follows a change of the camera set: cameras that left it have their open tracks closed
    /// (published as sightings); new ones start with fresh state.
    fn follow(&self, served: &mut Vec<Served>, set: &[Arc<CameraHandle>]) {
        let mut previous = std::mem::take(served);
        for handle in set {
            match previous.iter().position(|s| Arc::ptr_eq(&s.handle, handle)) {
                Some(i) => served.push(previous.swap_remove(i)),
                None => served.push(Served::new(handle.clone(), &self.tracker)),
            }
        }
        for mut gone in previous {
            self.flush(&mut gone);
        }
    }

    fn flush(&self, s: &mut Served) {
        let now = s.frame_time_now().unwrap_or_else(|| self.clock.now());
        let closed = s.tracker.flush(now);
        self.emit(s, closed, Instant::now());
    }

    fn analyze(&mut self, s: &mut Served, frame: Frame) -> Vec<ClosedTrack> {
        let camera = s.handle.clone();
        let size = [frame.image.width(), frame.image.height()];
        if s.frame_size != size && s.frame_size != [0, 0] {
            // the camera came back (or switched) at another resolution: the open tracks are in
            // the old picture's coordinates, so they end here with the old frame size
            tracing::info!(camera = %camera.cfg.id, from = ?s.frame_size, to = ?size, "new resolution: open tracks closed");
            self.flush(s);
        }
        s.frame_size = size;
        s.last_frame = Some((frame.ts, Instant::now()));
        let health = s.health.measure(&frame.image);
        let alerts = camera.rules.lock().unwrap().on_frame_health(frame.ts, health);
        self.alert(&camera, alerts, frame.arrived);
        if camera.cfg.needs_persons() && due(&mut s.next_persons, frame.ts, 1.0 / camera.cfg.crowd.persons_fps) {
            self.detect_persons(&camera, &frame);
        }
        if camera.cfg.crowd.enabled && due(&mut s.next_crowd, frame.ts, camera.cfg.crowd.interval_s) {
            camera.crowd_slot.put(Frame { ts: frame.ts, image: frame.image.clone(), arrived: frame.arrived }, false);
        }
        let faces = match self.faces.analyze(&frame.image) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(camera = %camera.cfg.id, error = %e, "face analysis failed; frame skipped");
                return Vec::new();
            }
        };
        let timings = self.faces.timings;
        self.metrics.observe(model::FACE_DETECTION, timings.detect);
        if let Some(embed) = timings.embed {
            self.metrics.observe(model::FACE_EMBEDDING, embed);
        }
        let counters = camera.counters();
        Counters::add(&counters.analyzed, 1);
        Counters::add(&counters.faces, faces.len() as u64);
        let observations = faces
            .into_iter()
            .map(|f| FaceObservation {
                bbox: f.face.bbox,
                landmarks: f.face.landmarks,
                det_score: f.face.score,
                quality: f.quality,
                embedding: f.embedding,
            })
            .collect();
        s.tracker.update(frame.ts, observations)
    }

    /// Person detection: fence rules now, crowd counts when the crowd worker next measures.
    fn detect_persons(&mut self, camera: &CameraHandle, frame: &Frame) {
        let Some(detector) = self.persons.as_mut() else { return };
        let start = Instant::now();
        let persons = match detector.detect(&frame.image) {
            Ok(p) => {
                self.metrics.observe(model::PERSON_DETECTION, start.elapsed());
                p
            }
            Err(e) => {
                tracing::error!(camera = %camera.cfg.id, error = %e, "person detection failed");
                return;
            }
        };
        let size = (frame.image.width() as f32, frame.image.height() as f32);
        let inside: Vec<(String, usize)> = camera
            .cfg
            .zones
            .iter()
            .filter(|z| z.fence)
            .map(|z| (z.name.clone(), persons.iter().filter(|p| z.contains(foot(p, size))).count()))
            .collect();
        let alerts = camera.rules.lock().unwrap().on_persons(frame.ts, &inside);
        let mut history = camera.persons.lock().unwrap();
        if history.len() >= PERSON_HISTORY {
            history.pop_front();
        }
        history.push_back((frame.ts, persons));
        drop(history);
        self.alert(camera, alerts, frame.arrived);
    }

    /// Publishes alerts, timed from `origin` (the frame's or the tick's arrival); a camera-health
    /// alert also updates the camera's retained status (`detail` says what is wrong while it is raised).
    fn alert(&self, handle: &CameraHandle, alerts: Vec<Alert>, origin: Instant) {
        let camera = &handle.cfg.id;
        for a in alerts {
            tracing::info!(%camera, kind = ?a.kind, state = ?a.state, alert = %a.alert, "{}", a.message);
            let mut out = vec![Outgoing::event(topic::alert(&self.site, camera), &a).since(origin)];
            if matches!(a.kind, AlertKind::CameraOffline | AlertKind::CameraFrozen | AlertKind::CameraTampered) {
                let mut st = handle.status.lock().unwrap();
                st.health = (a.state == AlertState::Raised).then(|| a.message.clone());
                out.push(status_message(&self.site, &self.agent, camera, &st, self.clock.now(), None));
            }
            for msg in out {
                if self.events.blocking_send(msg).is_err() {
                    tracing::error!(%camera, "publisher gone: alert not sent");
                }
            }
        }
    }

    /// Publishes the sightings of closed tracks, timed from `origin` (the arrival of the frame,
    /// or the tick, that closed them).
    fn emit(&self, s: &Served, closed: Vec<ClosedTrack>, origin: Instant) {
        let camera = &s.handle;
        for t in closed {
            let sighting = sighting(&self.site, &camera.cfg.id, s.frame_size, t);
            Counters::add(&camera.counters().sightings, 1);
            tracing::debug!(camera = %camera.cfg.id, track = sighting.track, "sighting");
            let msg = Outgoing::event(topic::sighting(&self.site, &camera.cfg.id), &sighting).since(origin);
            if self.events.blocking_send(msg).is_err() {
                tracing::error!(camera = %camera.cfg.id, "publisher gone: sighting not sent");
            }
        }
    }
}

/// Whether a periodic job is due at frame time `ts`; if so, schedules the next one `every_s` later.
fn due(next: &mut Option<OffsetDateTime>, ts: OffsetDateTime, every_s: f64) -> bool {
    if next.is_some_and(|n| ts < n && n - ts <= time::Duration::seconds_f64(every_s)) {
        return false;
    }
    *next = Some(ts + time::Duration::seconds_f64(every_s));
    true
}

/// The contract message for a closed track.
pub fn sighting(site: &str, camera: &str, frame_size: [u32; 2], t: ClosedTrack) -> Sighting {
    Sighting {
        id: new_event_id(),
        site: site.to_owned(),
        camera: camera.to_owned(),
        track: t.track,
        first_seen: t.first_seen,
        last_seen: t.last_seen,
        best: BestShot {
            ts: t.best_ts,
            bbox: t.best.bbox,
            landmarks: t.best.landmarks,
            det_score: t.best.det_score,
            quality: t.best.quality,
        },
        frame_size,
        ground: None,
        model: EMBEDDING_MODEL.to_owned(),
        embedding: t.best.embedding,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::{CloseReason, FaceObservation};
    use sightline_contract::Payload;
    use time::macros::datetime;

    #[test]
    fn a_closed_track_becomes_a_contract_valid_sighting() {
        let t0 = datetime!(2026-11-23 08:00:00 UTC);
        let best = FaceObservation {
            bbox: [10.0, 20.0, 30.0, 40.0],
            landmarks: [[1.0, 2.0]; 5],
            det_score: 0.9,
            quality: 0.7,
            embedding: vec![0.25; 128],
        };
        let closed = ClosedTrack {
            track: 7,
            first_seen: t0,
            last_seen: t0 + time::Duration::seconds(3),
            hits: 15,
            best_ts: t0 + time::Duration::seconds(1),
            best,
            reason: CloseReason::Lost,
        };
        let s = sighting("riverside", "gate-north", [640, 360], closed);
        let back = Sighting::from_json(&s.to_json()).unwrap();
        assert_eq!(back, s);
        assert_eq!((s.track, s.frame_size, s.model.as_str()), (7, [640, 360], "dlib-resnet-v1"));
        assert_eq!(s.best.ts, t0 + time::Duration::seconds(1));
        assert_eq!(s.best.bbox, [10.0, 20.0, 30.0, 40.0]);
        assert_eq!(s.embedding, vec![0.25; 128]);
        assert_eq!(s.id.get_version_num(), 7, "event ids are UUIDv7");
    }
}
