//! One supervised task per camera: connect, stream into the decoder, reconnect with capped
//! exponential backoff and jitter on any error or silence, and report status as it goes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sightline_contract::{CameraState, CameraStatus, Clock, topic};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};

use sightline_vision::crowd::FloorCorrection;
use sightline_vision::persons::Person;

use crate::config::{CameraConfig, DecodeConfig, Pace, Source};
use crate::decode::{DecodeError, Decoder, FrameSink};
use crate::frames::{Counters, FrameSlot};
use crate::message::Outgoing;
use crate::rtsp::{self, RtspError};
use crate::rules::CameraRules;

#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    #[error(transparent)]
    Rtsp(#[from] RtspError),
    #[error("camera {camera}: {source}")]
    Decode {
        camera: String,
        #[source]
        source: DecodeError,
    },
}

/// Live, shared view of one camera (the camera task, the analysis and crowd workers and the
/// status reporter all hold it).
pub struct CameraHandle {
    pub cfg: CameraConfig,
    /// Decoded frames for the analysis worker.
    pub slot: Arc<FrameSlot>,
    /// Frames handed on by the analysis worker for the crowd worker.
    pub crowd_slot: Arc<FrameSlot>,
    pub status: Mutex<StatusInfo>,
    /// Alert rules (crowd, fences, health), fed by both workers.
    pub rules: Mutex<CameraRules>,
    /// Recent person detections with their frame times (oldest first, bounded).
    pub persons: Mutex<VecDeque<(OffsetDateTime, Vec<Person>)>>,
    /// Density floor correction (cell threshold, and the camera's baseline if any).
    pub correction: FloorCorrection,
}

/// The cameras the agent runs now. Workers take a [`CameraSet::snapshot`] each round; a reload
/// replaces the set, and a camera that left it (removed, or replaced by a changed one) is
/// flushed by the workers that served it.
#[derive(Default)]
pub struct CameraSet {
    current: Mutex<Arc<Vec<Arc<CameraHandle>>>>,
}

impl CameraSet {
    pub fn snapshot(&self) -> Arc<Vec<Arc<CameraHandle>>> {
        self.current.lock().unwrap().clone()
    }

    pub fn replace(&self, cameras: Vec<Arc<CameraHandle>>) {
        *self.current.lock().unwrap() = Arc::new(cameras);
    }
}

#[derive(Clone, Debug)]
pub struct StatusInfo {
    pub state: CameraState,
    pub codec: Option<String>,
    pub resolution: Option<[u32; 2]>,
    /// Why the connection is in its state (e.g. the last connection error).
    pub detail: Option<String>,
    /// What the raised camera-health alert says, while one is raised.
    pub health: Option<String>,
}

impl StatusInfo {
    pub fn new(state: CameraState) -> Self {
        StatusInfo { state, codec: None, resolution: None, detail: None, health: None }
    }
}

impl CameraHandle {
    pub fn counters(&self) -> &Counters {
        &self.slot.counters
    }
}

/// Everything a camera task needs.
pub struct CameraTask {
    pub handle: Arc<CameraHandle>,
    pub site: String,
    pub agent: String,
    pub decode: DecodeConfig,
    pub clock: Arc<dyn Clock>,
    pub events: mpsc::Sender<Outgoing>,
    pub shutdown: watch::Receiver<bool>,
}

/// How a source run ended without error.
enum Ended {
    /// The file finished (no loop).
    Finished,
    /// Shutdown requested.
    Stopped,
}

const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Capped low so a camera is back within seconds of its return (jitter spreads the retries).
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl CameraTask {
    pub async fn run(mut self) {
        let camera = self.handle.cfg.id.clone();
        let mut backoff = BACKOFF_MIN;
        loop {
            self.set_status(CameraState::Connecting, None).await;
            let started = tokio::time::Instant::now();
            let result = match self.handle.cfg.source() {
                Source::Rtsp { url, transport } => self.stream_rtsp(&url, transport).await,
                Source::File { path, looped, pace } => self.play_file(&path, looped, pace).await,
            };
            match result {
                Ok(Ended::Finished) => {
                    tracing::info!(%camera, "source finished");
                    self.set_status(CameraState::Offline, Some("source finished".into())).await;
                    break;
                }
                Ok(Ended::Stopped) => break,
                Err(e) => {
                    Counters::add(&self.handle.counters().failures, 1);
                    tracing::warn!(%camera, error = %e, retry_in = ?backoff, "camera stream failed");
                    self.set_status(CameraState::Offline, Some(e.to_string())).await;
                    // a stream that ran for a while earns a fresh backoff
                    if started.elapsed() > BACKOFF_MAX {
                        backoff = BACKOFF_MIN;
                    }
                    let wait = jitter(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.shutdown.wait_for(|s| *s) => break,
                    }
                }
            }
            if *self.shutdown.borrow() {
                break;
            }
        }
        self.handle.slot.end();
    }

    fn sink(&self, epoch: OffsetDateTime, wait: bool) -> FrameSink {
        FrameSink {
            slot: self.handle.slot.clone(),
            epoch,
            interval_ns: (1e9 / self.handle.cfg.analysis_fps) as u64,
            wait,
        }
    }

    async fn stream_rtsp(
        &mut self,
        url: &url::Url,
        transport: crate::config::RtspTransport,
    ) -> Result<Ended, CameraError> {
        let silence = Duration::from_secs_f64(self.handle.cfg.silence_timeout_s);
        let mut stream = rtsp::connect(url, transport, silence).await?;
        let camera = self.handle.cfg.id.clone();
        let decode_err = |source| CameraError::Decode { camera: camera.clone(), source };
        let decoder =
            Decoder::for_stream(stream.codec, &self.decode, self.sink(self.clock.now(), false)).map_err(decode_err)?;
        decoder.start().map_err(decode_err)?;
        let info = stream.info();
        {
            let mut st = self.handle.status.lock().unwrap();
            st.codec = Some(info.rfc6381.clone().unwrap_or(info.codec.clone()));
            st.resolution = info.resolution.map(|(w, h)| [w, h]);
        }
        self.set_status(CameraState::Streaming, None).await;
        let finished = decoder.finished();
        tokio::pin!(finished);
        let mut bad = BadData::new();
        loop {
            tokio::select! {
                frame = stream.next_frame(silence) => {
                    let (pts, data) = match frame {
                        Ok(f) => {
                            bad.good();
                            f
                        }
                        // retina discards an access unit it cannot depacketize (corrupt NAL
                        // data, broken fragments) and can go on: skip it, keep the session
                        Err(e @ RtspError::Stream { .. }) if bad.tolerate(silence) => {
                            bad.skip(&camera, e);
                            continue;
                        }
                        Err(e) => return Err(bad.cause(e).into()),
                    };
                    Counters::add(&self.handle.counters().received, 1);
                    decoder.push(pts, data).map_err(decode_err)?;
                }
                r = &mut finished => {
                    r.map_err(decode_err)?;
                    return Err(RtspError::Ended { url: stream.url.clone() }.into());
                }
                _ = self.shutdown.wait_for(|s| *s) => return Ok(Ended::Stopped),
            }
        }
    }

    async fn play_file(&mut self, path: &std::path::Path, looped: bool, pace: Pace) -> Result<Ended, CameraError> {
        let camera = self.handle.cfg.id.clone();
        let decode_err = |source| CameraError::Decode { camera: camera.clone(), source };
        let wait = pace == Pace::Fast;
        let mut epoch = self.clock.now();
        self.handle.slot.reopen();
        loop {
            let decoder = Decoder::for_file(path, &self.decode, self.sink(epoch, wait)).map_err(decode_err)?;
            decoder.start().map_err(decode_err)?;
            self.set_status(CameraState::Streaming, None).await;
            tokio::select! {
                r = decoder.finished() => r.map_err(decode_err)?,
                _ = self.shutdown.wait_for(|s| *s) => return Ok(Ended::Stopped),
            }
            if !looped {
                return Ok(Ended::Finished);
            }
            // the next pass continues the timeline one frame interval after this one
            let next =
                epoch + time::Duration::nanoseconds(decoder.last_pts_ns() as i64) + time::Duration::milliseconds(40);
            epoch = if wait { next } else { next.max(self.clock.now()) };
        }
    }

    async fn set_status(&self, state: CameraState, detail: Option<String>) {
        let msg = {
            let mut st = self.handle.status.lock().unwrap();
            st.state = state;
            st.detail = detail;
            status_message(&self.site, &self.agent, &self.handle.cfg.id, &st, self.clock.now(), None)
        };
        // the publisher only goes away at shutdown
        let _ = self.events.send(msg).await;
    }
}

/// Access units the RTSP client could not depacketize. They are skipped and the session goes on,
/// unless errors keep coming: [`MAX_BAD_RUN`] in a row, or nothing good for the silence timeout
/// (an error the session cannot recover from repeats, or ends the stream).
struct BadData {
    /// Errors since the last good access unit.
    run: u32,
    last_good: std::time::Instant,
    last_warn: Option<std::time::Instant>,
    /// Errors not logged as a warning yet.
    unreported: u64,
    /// The last error skipped in this run.
    last: Option<RtspError>,
}

/// High: every remaining fragment of a damaged access unit is an error of its own, and an I-frame
/// can have dozens; the limit is for errors that repeat without new data.
const MAX_BAD_RUN: u32 = 1000;
/// At most one warning per camera this often (a corrupt stream can fail every frame).
const BAD_WARN_EVERY: Duration = Duration::from_secs(10);

impl BadData {
    fn new() -> Self {
        BadData { run: 0, last_good: std::time::Instant::now(), last_warn: None, unreported: 0, last: None }
    }

    fn good(&mut self) {
        self.run = 0;
        self.last_good = std::time::Instant::now();
        self.last = None;
    }

    fn tolerate(&mut self, silence: Duration) -> bool {
        self.run += 1;
        self.run <= MAX_BAD_RUN && self.last_good.elapsed() < silence
    }

    fn skip(&mut self, camera: &str, error: RtspError) {
        self.unreported += 1;
        if self.last_warn.is_none_or(|t| t.elapsed() >= BAD_WARN_EVERY) {
            let errors = std::mem::take(&mut self.unreported);
            tracing::warn!(%camera, %error, errors, "bad data from the camera skipped");
            self.last_warn = Some(std::time::Instant::now());
        } else {
            tracing::debug!(%camera, %error, "bad data from the camera skipped");
        }
        self.last = Some(error);
    }

    /// The error to report for a stream that gave up: the bad data, if that is what ended it.
    fn cause(&mut self, e: RtspError) -> RtspError {
        match (e, self.last.take()) {
            (RtspError::Ended { .. }, Some(last)) => last,
            (e, _) => e,
        }
    }
}

/// The retained `sightline.camera_status/1` message, with rates when known.
pub fn status_message(
    site: &str,
    agent: &str,
    camera: &str,
    st: &StatusInfo,
    ts: OffsetDateTime,
    rates: Option<(f32, f32, u64)>,
) -> Outgoing {
    let status = CameraStatus {
        site: site.to_owned(),
        camera: camera.to_owned(),
        ts,
        agent: agent.to_owned(),
        state: st.state,
        fps_in: rates.map(|r| r.0),
        fps_analyzed: rates.map(|r| r.1),
        frames_dropped: rates.map(|r| r.2),
        codec: st.codec.clone(),
        resolution: st.resolution,
        detail: match (&st.detail, &st.health) {
            (Some(d), Some(h)) => Some(format!("{d}; {h}")),
            (d, h) => d.clone().or_else(|| h.clone()),
        },
    };
    Outgoing::retained(topic::camera_status(site, camera), &status)
}

/// ±25 % jitter so that cameras behind one failed switch do not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let f = 0.75 + (nanos % 1000) as f64 / 2000.0;
    d.mul_f64(f)
}
