//! The analysis worker: one thread that owns the models (loaded once, shared by every camera)
//! and each camera's tracker. It serves the camera whose waiting frame is oldest, so no camera
//! starves, and turns closed tracks into `sightline.sighting/1` events.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sightline_contract::{BestShot, Sighting, new_event_id, topic};
use sightline_vision::{EMBEDDING_MODEL, FacePipeline};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::Clock;
use crate::camera::CameraHandle;
use crate::frames::{Counters, Doorbell, Frame, Taken};
use crate::mqtt::Outgoing;
use crate::tracker::{ClosedTrack, FaceObservation, Tracker, TrackerConfig};

pub struct Worker {
    pub site: String,
    pub faces: FacePipeline,
    pub cameras: Vec<Arc<CameraHandle>>,
    pub tracker: TrackerConfig,
    pub bell: Arc<Doorbell>,
    pub clock: Arc<dyn Clock>,
    pub events: mpsc::Sender<Outgoing>,
    /// Set once every camera task has ended: drain the slots and stop.
    pub done: Arc<AtomicBool>,
}

/// How often tracks of cameras without frames are aged.
const TICK: Duration = Duration::from_millis(250);

struct CameraState {
    tracker: Tracker,
    frame_size: [u32; 2],
    /// Capture time of the last analysed frame and when it was taken: the tracker runs on
    /// frame time, which silence advances by the monotonic time elapsed since.
    last_frame: Option<(OffsetDateTime, Instant)>,
}

impl CameraState {
    fn frame_time_now(&self) -> Option<OffsetDateTime> {
        self.last_frame.map(|(ts, at)| ts + at.elapsed())
    }
}

impl Worker {
    /// Runs until `done` is set and every slot is drained. Blocking: call on its own thread.
    pub fn run(mut self) {
        let mut state: Vec<CameraState> = self
            .cameras
            .iter()
            .map(|_| CameraState { tracker: Tracker::new(self.tracker.clone()), frame_size: [0, 0], last_frame: None })
            .collect();
        let mut last_tick = Instant::now();
        loop {
            // Cameras without new frames still age their tracks, so a silent camera's
            // tracks close on time whatever the other cameras do.
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                for (i, st) in state.iter_mut().enumerate() {
                    if let Some(now) = st.frame_time_now() {
                        let closed = st.tracker.tick(now);
                        self.emit(i, st, closed);
                    }
                }
            }
            let next = self
                .cameras
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.slot.pending_since().map(|t| (t, i)))
                .min()
                .map(|(_, i)| i);
            let Some(i) = next else {
                if self.done.load(Ordering::Acquire) {
                    break;
                }
                self.bell.wait(TICK);
                continue;
            };
            match self.cameras[i].slot.take() {
                Some(Taken::Frame(frame)) => {
                    let closed = self.analyze(i, &mut state[i], frame);
                    self.emit(i, &state[i], closed);
                }
                Some(Taken::Ended) => {
                    let now = state[i].frame_time_now().unwrap_or_else(|| self.clock.now());
                    let closed = state[i].tracker.flush(now);
                    self.emit(i, &state[i], closed);
                }
                None => {}
            }
        }
    }

    fn analyze(&mut self, i: usize, st: &mut CameraState, frame: Frame) -> Vec<ClosedTrack> {
        let camera = &self.cameras[i];
        st.frame_size = [frame.image.width(), frame.image.height()];
        st.last_frame = Some((frame.ts, Instant::now()));
        let faces = match self.faces.analyze(&frame.image) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(camera = %camera.cfg.id, error = %e, "face analysis failed; frame skipped");
                return Vec::new();
            }
        };
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
        st.tracker.update(frame.ts, observations)
    }

    fn emit(&self, i: usize, st: &CameraState, closed: Vec<ClosedTrack>) {
        let camera = &self.cameras[i];
        for t in closed {
            let sighting = sighting(&self.site, &camera.cfg.id, st.frame_size, t);
            Counters::add(&camera.counters().sightings, 1);
            tracing::debug!(camera = %camera.cfg.id, track = sighting.track, "sighting");
            let msg = Outgoing::event(topic::sighting(&self.site, &camera.cfg.id), &sighting);
            if self.events.blocking_send(msg).is_err() {
                tracing::error!(camera = %camera.cfg.id, "publisher gone: sighting not sent");
            }
        }
    }
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
