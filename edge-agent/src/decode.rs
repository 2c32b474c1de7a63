//! GStreamer decoding: compressed access units (RTSP) or a file in, RGB frames out.
//!
//! ```text
//! RTSP:  appsrc (Annex B H.264/H.265 AUs) ! h26Xparse ! <decoder> ─┐
//! file:  filesrc ! decodebin ──────────────────────────────────────┤
//!        ─► [rate sampler probe] videoconvert ! RGB ! appsink ─► FrameSlot
//! ```
//! The sampler drops decoded frames that are not due for analysis *before* colour conversion,
//! so only the analysed frames pay for it. The decoder element is chosen by config
//! (`avdec_h264` by default; hardware decoders such as `nvh264dec` or `vaapih264dec`).
//!
//! Decoding threads run nicer than the analysis (`[decode] nice`): see [`lower_thread_priority`].

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;
use image::RgbImage;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::config::DecodeConfig;
use crate::frames::{Counters, Frame, FrameSlot};

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("GStreamer could not be initialised: {0}")]
    Init(String),
    #[error(
        "decoder element `{element}` is not installed (missing GStreamer plugin); set `[decode] {key}` to one that is (e.g. avdec_{key})"
    )]
    MissingDecoder { element: String, key: &'static str },
    #[error("GStreamer pipeline `{description}` could not be built: {detail}")]
    Build { description: String, detail: String },
    #[error("GStreamer: {0}")]
    Gst(String),
    #[error("decoder pipeline stopped")]
    Stopped,
}

/// Compressed video codecs the RTSP path decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::H265 => "h265",
        }
    }
}

/// Initialises GStreamer once per process.
pub fn init() -> Result<(), DecodeError> {
    gst::init().map_err(|e| DecodeError::Init(e.to_string()))
}

/// Checks that a decoder element exists.
pub fn check_decoder(element: &str, key: &'static str) -> Result<(), DecodeError> {
    init()?;
    match gst::ElementFactory::find(element) {
        Some(_) => Ok(()),
        None => Err(DecodeError::MissingDecoder { element: element.to_owned(), key }),
    }
}

/// Where decoded frames go and how they are sampled.
#[derive(Clone)]
pub struct FrameSink {
    pub slot: Arc<FrameSlot>,
    /// Wall-clock time of PTS 0.
    pub epoch: OffsetDateTime,
    /// Minimum PTS distance between analysed frames.
    pub interval_ns: u64,
    /// Back-pressure instead of dropping (file replay at full speed).
    pub wait: bool,
}

/// A running decode pipeline.
pub struct Decoder {
    pipeline: gst::Pipeline,
    appsrc: Option<gst_app::AppSrc>,
    /// Highest PTS seen at the sampler (ns), so a looping file can continue its timeline.
    last_pts: Arc<AtomicU64>,
    /// How the pipeline ended, once it has: end of stream, or GStreamer's error message.
    end: watch::Receiver<Option<Result<(), String>>>,
}

impl Decoder {
    /// A pipeline fed with Annex B access units through [`Decoder::push`], decoded by the
    /// element `[decode]` names for the codec.
    pub fn for_stream(codec: Codec, cfg: &DecodeConfig, sink: FrameSink) -> Result<Decoder, DecodeError> {
        let element = match codec {
            Codec::H264 => &cfg.h264,
            Codec::H265 => &cfg.h265,
        };
        check_decoder(element, codec.name())?;
        let c = codec.name();
        let description = format!(
            "appsrc name=src is-live=true format=time max-buffers=120 leaky-type=upstream \
             caps=video/x-{c},stream-format=byte-stream,alignment=au ! {c}parse ! {element} name=dec ! {}",
            tail(&sink, false)
        );
        let mut decoder = build(&description, cfg, sink)?;
        decoder.appsrc =
            Some(decoder.pipeline.by_name("src").and_downcast::<gst_app::AppSrc>().expect("appsrc named src"));
        Ok(decoder)
    }

    /// A pipeline decoding a file with whatever demuxer and decoder GStreamer picks.
    pub fn for_file(path: &Path, cfg: &DecodeConfig, sink: FrameSink) -> Result<Decoder, DecodeError> {
        init()?;
        let location = path.to_string_lossy().replace('"', "\\\"");
        // Replayed in real time unless back-pressured (`wait`): then as fast as analysis goes.
        let description = format!("filesrc location=\"{location}\" ! decodebin ! {}", tail(&sink, !sink.wait));
        build(&description, cfg, sink)
    }

    /// Pushes one access unit (Annex B, parameter sets in-band) with its PTS.
    pub fn push(&self, pts_ns: u64, data: Vec<u8>) -> Result<(), DecodeError> {
        let src = self.appsrc.as_ref().expect("push on a stream decoder");
        let mut buf = gst::Buffer::from_mut_slice(data);
        buf.get_mut().expect("fresh buffer").set_pts(gst::ClockTime::from_nseconds(pts_ns));
        src.push_buffer(buf).map(|_| ()).map_err(|_| DecodeError::Stopped)
    }

    /// Signals end of stream to a stream decoder.
    pub fn end(&self) {
        if let Some(src) = &self.appsrc {
            let _ = src.end_of_stream();
        }
    }

    pub fn start(&self) -> Result<(), DecodeError> {
        self.pipeline
            .set_state(gst::State::Playing)
            .map(|_| ())
            .map_err(|e| DecodeError::Gst(format!("cannot start: {e}")))
    }

    /// Highest PTS decoded so far (ns).
    pub fn last_pts_ns(&self) -> u64 {
        self.last_pts.load(Ordering::Relaxed)
    }

    /// Resolves when the pipeline reaches end of stream (Ok) or fails (Err with GStreamer's message).
    pub async fn finished(&self) -> Result<(), DecodeError> {
        let mut end = self.end.clone();
        let end = end.wait_for(Option::is_some).await.map_err(|_| DecodeError::Stopped)?;
        end.clone().expect("waited for Some").map_err(DecodeError::Gst)
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Sampler, colour conversion and sink; `sync` paces a file by its timestamps
/// (a live stream is paced by the camera).
fn tail(sink: &FrameSink, sync: bool) -> String {
    format!(
        "videoconvert name=conv ! video/x-raw,format=RGB ! appsink name=sink max-buffers=1 drop={} sync={sync}",
        !sink.wait
    )
}

fn build(description: &str, cfg: &DecodeConfig, sink: FrameSink) -> Result<Decoder, DecodeError> {
    let fail = |detail: String| DecodeError::Build { description: description.to_owned(), detail };
    let pipeline = gst::parse::launch(description)
        .map_err(|e| fail(e.to_string()))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| fail("not a pipeline".into()))?;
    let conv = pipeline.by_name("conv").expect("conv element");
    let appsink = pipeline.by_name("sink").and_downcast::<gst_app::AppSink>().expect("appsink named sink");
    let last_pts = Arc::new(AtomicU64::new(0));
    let end = watch_bus(&pipeline, cfg.nice);

    // Rate sampler: count every decoded frame, pass on only those due for analysis.
    let counters = sink.slot.counters.clone();
    let sampler = std::sync::Mutex::new(RateSampler::new(sink.interval_ns));
    let seen = last_pts.clone();
    let pad = conv.static_pad("sink").expect("videoconvert has a sink pad");
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(pts) = info.buffer().and_then(|b| b.pts()).map(gst::ClockTime::nseconds) else {
            return gst::PadProbeReturn::Ok;
        };
        Counters::add(&counters.decoded, 1);
        seen.fetch_max(pts, Ordering::Relaxed);
        if sampler.lock().unwrap().admit(pts) {
            gst::PadProbeReturn::Ok
        } else {
            // `Handled` rather than `Drop`: the binding releases the buffer itself, and with
            // `Drop` GStreamer 1.22 then unrefs the NULL it left behind (a CRITICAL per frame).
            gst::PadProbeReturn::Handled
        }
    });

    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |appsink| {
                let sample = appsink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let image = match to_rgb(&sample) {
                    Ok(i) => i,
                    Err(e) => {
                        tracing::warn!(error = %e, "undecodable frame skipped");
                        return Ok(gst::FlowSuccess::Ok);
                    }
                };
                let pts = sample.buffer().and_then(|b| b.pts()).map(gst::ClockTime::nseconds).unwrap_or(0);
                let ts = sink.epoch + time::Duration::nanoseconds(pts as i64);
                sink.slot.put(Frame { ts, image, arrived: std::time::Instant::now() }, sink.wait);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    Ok(Decoder { pipeline, appsrc: None, last_pts, end })
}

/// Handles the pipeline's bus messages synchronously, in the thread that posts them: lowers the
/// priority of every streaming thread as it starts (`nice` more than the calling thread's), and
/// reports the end of the pipeline (EOS or its first error). Other messages are dropped.
fn watch_bus(pipeline: &gst::Pipeline, nice: i32) -> watch::Receiver<Option<Result<(), String>>> {
    let (tx, rx) = watch::channel(None);
    let nice = (nice > 0).then(|| thread_nice() + nice);
    let bus = pipeline.bus().expect("pipelines have a bus");
    bus.set_sync_handler(move |_, msg| {
        let end = match msg.view() {
            gst::MessageView::StreamStatus(s) => {
                if let (gst::StreamStatusType::Enter, Some(nice)) = (s.get().0, nice) {
                    lower_thread_priority(nice);
                }
                None
            }
            gst::MessageView::Eos(_) => Some(Ok(())),
            gst::MessageView::Error(e) => {
                let from = e.src().map(|s| s.path_string().to_string()).unwrap_or_default();
                let debug = e.debug().map(|d| format!(" ({d})")).unwrap_or_default();
                Some(Err(format!("{from}: {}{debug}", e.error())))
            }
            _ => None,
        };
        if let Some(end) = end {
            // the first end is the one that counts
            tx.send_if_modified(|slot| {
                let first = slot.is_none();
                if first {
                    *slot = Some(end);
                }
                first
            });
        }
        gst::BusSyncReply::Drop
    });
    rx
}

/// The calling thread's nice value (Linux keeps one per thread).
fn thread_nice() -> i32 {
    // SAFETY: plain syscall; with `who = 0` it cannot fail (a nice of -1 is returned as is)
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

/// Sets the calling thread's nice value (capped at 19). Called by each decoding thread as it
/// starts; the decoder library's worker threads, created later by that thread, inherit it.
///
/// Why: ONNX Runtime splits each inference over its intra-op threads and every parallel section
/// waits for its slowest thread. A decoder thread that preempts one of them stalls them all, so
/// at equal priority decoding costs the analysis more than its own CPU time. Nicer, the decoders
/// run mostly in the gaps the analysis leaves (between sections, between frames) and still get
/// their weighted share of the cores when both want them.
fn lower_thread_priority(nice: i32) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    // SAFETY: plain syscalls on the calling thread
    let failed = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice.min(19)) } != 0;
    if failed && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(error = %std::io::Error::last_os_error(), nice, "cannot lower the decoding threads' priority");
    }
}

/// Picks the frames due for analysis at a fixed rate from a stream of PTS values.
#[derive(Debug)]
pub struct RateSampler {
    interval: u64,
    next_due: Option<u64>,
}

impl RateSampler {
    pub fn new(interval_ns: u64) -> Self {
        RateSampler { interval: interval_ns, next_due: None }
    }

    /// Whether the frame at `pts` (ns) is due. A frame early by up to a quarter interval counts
    /// as due (timestamp jitter); after a gap or a jump backwards the schedule restarts.
    pub fn admit(&mut self, pts: u64) -> bool {
        match self.next_due {
            // not yet due (a frame more than two intervals before its due time is a timeline restart)
            Some(due) if pts + self.interval / 4 < due && due - pts <= 2 * self.interval => false,
            _ => {
                let on_schedule = |due: &u64| pts < due + self.interval && pts + 2 * self.interval >= *due;
                let base = self.next_due.filter(on_schedule).unwrap_or(pts);
                self.next_due = Some(base + self.interval);
                true
            }
        }
    }
}

/// Copies an RGB sample (rows padded to 4 bytes by GStreamer) into a tightly packed image.
fn to_rgb(sample: &gst::Sample) -> Result<RgbImage, String> {
    let caps = sample.caps().ok_or("sample without caps")?;
    let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| e.to_string())?;
    let buffer = sample.buffer().ok_or("sample without buffer")?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).map_err(|e| e.to_string())?;
    let (w, h) = (info.width() as usize, info.height() as usize);
    let stride = frame.plane_stride()[0] as usize;
    let data = frame.plane_data(0).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(w * h * 3);
    for row in data.chunks(stride).take(h) {
        out.extend_from_slice(&row[..w * 3]);
    }
    RgbImage::from_raw(w as u32, h as u32, out).ok_or_else(|| "short frame".to_owned())
}

#[cfg(test)]
mod tests {
    use super::RateSampler;

    const MS: u64 = 1_000_000;

    fn admitted(fps_in: f64, fps_out: f64, secs: f64) -> usize {
        let mut s = RateSampler::new((1e9 / fps_out) as u64);
        let n = (fps_in * secs) as u64;
        (0..n).filter(|i| s.admit((*i as f64 * 1e9 / fps_in) as u64)).count()
    }

    #[test]
    fn samples_at_the_configured_rate() {
        // 10 s at 5 fps: 50 frames, ±1 for where the last interval falls
        for fps_in in [29.97, 25.0, 10.0, 60.0] {
            let n = admitted(fps_in, 5.0, 10.0);
            assert!((49..=51).contains(&n), "{fps_in} fps in: {n} admitted");
        }
        // a source slower than the analysis rate: every frame is analysed
        assert_eq!(admitted(3.0, 5.0, 10.0), 30);
    }

    #[test]
    fn restarts_after_gaps_and_backward_jumps() {
        let mut s = RateSampler::new(200 * MS);
        assert!(s.admit(0));
        assert!(!s.admit(100 * MS));
        assert!(s.admit(200 * MS));
        assert!(s.admit(5_000 * MS), "after a gap the next frame is due at once");
        assert!(!s.admit(5_100 * MS));
        assert!(s.admit(10 * MS), "a timeline restart (new stream) is admitted");
        assert!(!s.admit(110 * MS));
    }
}
