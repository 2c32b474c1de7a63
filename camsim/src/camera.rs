//! One simulated camera: a video file behind an RTSP mount.
//!
//! Each mount is served by two GStreamer pipelines that meet at an `appsrc`:
//!
//! ```text
//!  file pipeline (ours)                         media pipeline (gst-rtsp-server's)
//!  filesrc ! parsebin|decodebin ! appsink  ==>  appsrc ! [h26xparse | x264enc] ! rtph26xpay name=pay0
//! ```
//!
//! * **Why two pipelines.** Looping is done with segment seeks on the *file*
//!   pipeline, whose bus we own; gst-rtsp-server never sees an EOS, a seek or
//!   a restart, so the RTSP session of a looping camera never ends. Every
//!   buffer is re-timestamped on the way across (see [`Retimer`]) so that the
//!   timestamps a client sees keep increasing across loops, like a real camera.
//! * **Pacing.** The `appsrc` is a non-live source that blocks when full, and
//!   gst-rtsp-server's network sinks synchronise on the clock, so buffers leave
//!   at the rate given by their timestamps (real time) and back-pressure holds
//!   the file pipeline back.
//! * **No re-encoding for H.264/H.265.** `parsebin` demuxes and parses, the
//!   parser in the media pipeline converts to what the payloader takes, and
//!   the payloader's `config-interval=-1` sends SPS/PPS(/VPS) in-band with
//!   every key frame (besides the SDP), so a client joining a shared stream
//!   mid-way can start decoding at the next key frame. Any other codec is
//!   decoded and re-encoded with `x264enc` (`tune=zerolatency`,
//!   `speed-preset=ultrafast`, a key frame every ~2 s), which is logged.
//! * **Fault injection.** `--scale WxH` decodes every file and re-encodes it
//!   at that size (same pipelines as other codecs, with a `videoscale`), so a
//!   camera can come back at another resolution. `--corrupt PROB` damages the
//!   encoded access units on their way into the payloader (a pad probe on
//!   `pay0`'s sink pad, see [`crate::corrupt`]), deterministically from
//!   `--seed`; the RTP packetisation stays valid.
//! * **Seeking.** The non-live `appsrc` is not seekable, so gst-rtsp-server
//!   ignores a client's PLAY `Range` and a second client joining a shared
//!   stream does not restart it for the first.
//! * **Lifetime.** gst-rtsp-server builds a media pipeline per shared media:
//!   clients of one mount share it, and when the last one leaves it is torn
//!   down. The file pipeline is started by the first `need-data` of the media's
//!   `appsrc` and stopped when the media is unprepared, so a client that comes
//!   back later gets a fresh pair that starts at the beginning of the file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer_app as gst_app;
use gstreamer_pbutils as gst_pbutils;
use gstreamer_rtsp_server as gst_rtsp_server;

use gst::glib;
use gst::prelude::*;
use gst_pbutils::prelude::*;
use gst_rtsp_server::prelude::*;
use tracing::{debug, error, info, warn};

use crate::corrupt::{self, Corrupter};

/// Everything that can go wrong before the server is up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("expected NAME=FILE, got '{0}' (no '=')")]
    MountSyntax(String),
    #[error("empty FILE in '{0}', expected NAME=FILE")]
    MountNoFile(String),
    #[error("invalid mount name '{0}': must match [a-z0-9][a-z0-9_-]{{0,63}}")]
    MountName(String),
    #[error("mount name '{0}' is given more than once")]
    DuplicateMount(String),
    #[error("cannot read video file {}", .path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("cannot read video file {}: not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("cannot play {}: {reason}", .path.display())]
    NotMedia { path: PathBuf, reason: String },
    #[error("{} contains no video stream (still images are not served)", .0.display())]
    NoVideo(PathBuf),
    #[error("cannot listen on {addr}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot start the RTSP server on {addr}: {reason}")]
    Server { addr: std::net::SocketAddr, reason: String },
    #[error("GStreamer: {0}")]
    Gst(String),
}

/// A `--scale WIDTHxHEIGHT` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    pub width: u32,
    pub height: u32,
}

/// Parses `WIDTHxHEIGHT`: even numbers (4:2:0 encoding) from 16 to 7680.
pub fn parse_scale(arg: &str) -> Result<Scale, String> {
    let syntax = || format!("expected WIDTHxHEIGHT such as 1280x720, got '{arg}'");
    let (w, h) = arg.split_once(['x', 'X']).ok_or_else(syntax)?;
    let (width, height) =
        (w.trim().parse::<u32>().map_err(|_| syntax())?, h.trim().parse::<u32>().map_err(|_| syntax())?);
    if !(16..=7680).contains(&width) || !(16..=7680).contains(&height) {
        return Err(format!("width and height must be between 16 and 7680, got {width}x{height}"));
    }
    if width % 2 != 0 || height % 2 != 0 {
        return Err(format!("width and height must be even (4:2:0 video), got {width}x{height}"));
    }
    Ok(Scale { width, height })
}

/// Parses a `--corrupt` probability: a number from 0 to 1.
pub fn parse_probability(arg: &str) -> Result<f64, String> {
    match arg.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("expected a probability from 0 to 1 (e.g. 0.05), got '{arg}'")),
    }
}

/// `--corrupt PROB --seed N`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Corruption {
    /// Probability that an encoded access unit is damaged.
    pub probability: f64,
    pub seed: u64,
}

impl From<glib::BoolError> for Error {
    fn from(e: glib::BoolError) -> Self {
        Error::Gst(e.to_string())
    }
}

/// A `--mount NAME=FILE` argument, checked for syntax only.
#[derive(Debug, Clone)]
pub struct MountArg {
    pub name: String,
    pub file: PathBuf,
}

/// Parses `NAME=FILE`; NAME must match `[a-z0-9][a-z0-9_-]{0,63}`.
pub fn parse_mount(arg: &str) -> Result<MountArg, Error> {
    let (name, file) = arg.split_once('=').ok_or_else(|| Error::MountSyntax(arg.to_owned()))?;
    if sightline_contract::validate_id("camera", name).is_err() {
        return Err(Error::MountName(name.to_owned()));
    }
    if file.is_empty() {
        return Err(Error::MountNoFile(arg.to_owned()));
    }
    Ok(MountArg { name: name.to_owned(), file: PathBuf::from(file) })
}

/// What the video stream of a file is, which decides the media pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Codec {
    H264,
    H265,
    /// Anything else; holds the caps name (e.g. `video/x-msmpeg`).
    Other(String),
}

/// A mount whose file was found readable and probed.
#[derive(Debug, Clone)]
pub struct Camera {
    pub name: String,
    /// The file as given on the command line (for messages).
    pub given: PathBuf,
    /// The file as an absolute path (for filesrc).
    pub path: PathBuf,
    pub codec: Codec,
    /// Frames per second of the video stream, when the file says.
    pub fps: Option<f64>,
    /// Serve at this size (decoded, scaled and re-encoded to H.264).
    pub scale: Option<Scale>,
    /// Damage the encoded stream.
    pub corrupt: Option<Corruption>,
}

impl Camera {
    /// Checks that the file is readable and finds its video codec.
    pub fn open(mount: &MountArg) -> Result<Camera, Error> {
        let given = mount.file.clone();
        let unreadable = |source| Error::Unreadable { path: given.clone(), source };
        let meta = std::fs::metadata(&given).map_err(unreadable)?;
        if !meta.is_file() {
            return Err(Error::NotAFile(given));
        }
        File::open(&given).map_err(unreadable)?;
        let path = std::fs::canonicalize(&given).map_err(unreadable)?;
        let (codec, fps) = probe(&path)
            .map_err(|reason| Error::NotMedia { path: given.clone(), reason })?
            .ok_or_else(|| Error::NoVideo(given.clone()))?;
        Ok(Camera { name: mount.name.clone(), given, path, codec, fps, scale: None, corrupt: None })
    }

    /// Whether the file is decoded and re-encoded (other codecs, or `--scale`).
    fn transcodes(&self) -> bool {
        self.scale.is_some() || matches!(self.codec, Codec::Other(_))
    }

    /// Launch line of the media pipeline gst-rtsp-server builds for each
    /// (shared) media of this mount.
    fn media_launch(&self) -> String {
        const SRC: &str = "appsrc name=src format=time block=true max-time=1000000000 max-bytes=4000000";
        match (&self.codec, self.scale) {
            (Codec::H264, None) => format!("( {SRC} ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )"),
            (Codec::H265, None) => format!("( {SRC} ! h265parse ! rtph265pay name=pay0 pt=96 config-interval=-1 )"),
            _ => {
                let gop = (self.fps.unwrap_or(30.0) * 2.0).round().max(1.0) as u32;
                // videoscale keeps the picture's aspect ratio (with borders when it changes)
                let (scale, size) = match self.scale {
                    Some(s) => {
                        ("videoscale ! ", format!(",width={},height={},pixel-aspect-ratio=1/1", s.width, s.height))
                    }
                    None => ("", String::new()),
                };
                format!(
                    "( {SRC} ! videoconvert ! {scale}video/x-raw,format=I420{size} ! x264enc tune=zerolatency \
                     speed-preset=ultrafast key-int-max={gop} ! video/x-h264,profile=baseline \
                     ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
                )
            }
        }
    }

    /// The factory to put on this camera's mount point.
    pub fn factory(&self, looping: bool) -> gst_rtsp_server::RTSPMediaFactory {
        match (&self.codec, self.scale) {
            (_, Some(s)) => info!(
                mount = %self.name,
                "{}: video is scaled to {}x{} and re-encoded to H.264 with x264enc",
                self.given.display(),
                s.width,
                s.height
            ),
            (Codec::Other(caps), None) => info!(
                mount = %self.name,
                "{}: {caps} video is transcoded to H.264 with x264enc",
                self.given.display()
            ),
            (codec, None) => info!(
                mount = %self.name,
                "{}: {codec:?} video is served as is (no re-encoding)",
                self.given.display()
            ),
        }
        if let Some(c) = self.corrupt {
            info!(
                mount = %self.name,
                "corrupting about {:.1} % of the encoded access units (seed {})",
                c.probability * 100.0,
                c.seed
            );
        }
        let factory = gst_rtsp_server::RTSPMediaFactory::new();
        factory.set_launch(&self.media_launch());
        factory.set_shared(true);
        let camera = self.clone();
        factory.connect_media_configure(move |_, media| {
            if let Err(e) = camera.attach_file_pipeline(media, looping) {
                error!(mount = %camera.name, "cannot start the file pipeline: {e}");
            }
        });
        factory
    }

    /// Builds the file pipeline feeding `media`'s appsrc and ties its life to
    /// the media's: started by the first need-data, stopped on unprepare.
    fn attach_file_pipeline(&self, media: &gst_rtsp_server::RTSPMedia, looping: bool) -> Result<(), Error> {
        let bin =
            media.element().downcast::<gst::Bin>().map_err(|_| Error::Gst("media element is not a bin".into()))?;
        let appsrc = bin
            .by_name("src")
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            .ok_or_else(|| Error::Gst("media pipeline has no appsrc".into()))?;
        if let Some(c) = self.corrupt {
            self.attach_corrupter(&bin, c)?;
        }
        let file = FilePipeline::new(self, &appsrc, looping).inspect_err(|_| {
            // Let the media fail now rather than wait for data that won't come.
            let _ = appsrc.end_of_stream();
        })?;
        let feeder = Arc::new(Mutex::new(Some(file)));

        let started = AtomicBool::new(false);
        let on_need = feeder.clone();
        let name = self.name.clone();
        appsrc.set_callbacks(
            gst_app::AppSrcCallbacks::builder()
                .need_data(move |_, _| {
                    if !started.swap(true, Ordering::SeqCst)
                        && let Some(f) = on_need.lock().unwrap().as_ref()
                        && let Err(e) = f.start()
                    {
                        error!(mount = %name, "cannot start the file pipeline: {e}");
                    }
                })
                .build(),
        );
        media.connect_unprepared(move |_| {
            if let Some(f) = feeder.lock().unwrap().take() {
                f.stop();
            }
        });
        Ok(())
    }
}

impl Camera {
    /// Damages the access units going into the payloader (`pay0`'s sink pad), from a fresh
    /// sequence per media: the same seed gives every new session the same damage.
    fn attach_corrupter(&self, bin: &gst::Bin, c: Corruption) -> Result<(), Error> {
        let pay = bin.by_name("pay0").ok_or_else(|| Error::Gst("media pipeline has no pay0".into()))?;
        let hevc = pay.factory().is_some_and(|f| f.name() == "rtph265pay");
        let pad = pay.static_pad("sink").ok_or_else(|| Error::Gst("payloader without sink pad".into()))?;
        // each mount its own sequence
        let seed =
            self.name.bytes().fold(c.seed ^ 0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        let corrupter = Mutex::new(Corrupter::new(c.probability, seed, hevc));
        let name = self.name.clone();
        let count = std::sync::atomic::AtomicU64::new(0);
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let framing = pad
                .current_caps()
                .and_then(|caps| {
                    let s = caps.structure(0)?;
                    let codec_data = s.get::<gst::Buffer>("codec_data").ok();
                    let map = codec_data.as_ref().and_then(|b| b.map_readable().ok());
                    Some(corrupt::framing(
                        s.get::<&str>("stream-format").ok(),
                        map.as_ref().map(|m| m.as_slice()),
                        hevc,
                    ))
                })
                .unwrap_or(corrupt::Framing::AnnexB);
            let Some(buffer) = info.buffer_mut() else { return gst::PadProbeReturn::Ok };
            let Ok(mut data) = buffer.map_readable().map(|m| m.to_vec()) else { return gst::PadProbeReturn::Ok };
            let Some(damage) = corrupter.lock().unwrap().process(&mut data, framing) else {
                return gst::PadProbeReturn::Ok;
            };
            let mut damaged = gst::Buffer::from_mut_slice(data);
            if buffer
                .copy_into(
                    damaged.get_mut().expect("fresh buffer"),
                    gst::BufferCopyFlags::FLAGS | gst::BufferCopyFlags::TIMESTAMPS | gst::BufferCopyFlags::META,
                    ..,
                )
                .is_ok()
            {
                *buffer = damaged;
                let count = count.fetch_add(1, Ordering::Relaxed) + 1;
                debug!(mount = %name, count, ?damage, pts = ?buffer.pts(), "corrupted an access unit");
            }
            gst::PadProbeReturn::Ok
        });
        Ok(())
    }
}

/// Probes `path` with the discoverer: `Ok(None)` if there is no video stream.
fn probe(path: &Path) -> Result<Option<(Codec, Option<f64>)>, String> {
    let uri = glib::filename_to_uri(path, None).map_err(|e| e.to_string())?;
    let discoverer = gst_pbutils::Discoverer::new(gst::ClockTime::from_seconds(10)).map_err(|e| e.to_string())?;
    let info = discoverer.discover_uri(&uri).map_err(|e| e.to_string())?;
    let Some(video) = info.video_streams().into_iter().find(|v| !v.is_image()) else {
        return Ok(None);
    };
    let caps = video.caps().ok_or("video stream without caps")?;
    let name = caps.structure(0).map(|s| s.name().to_string()).unwrap_or_default();
    let codec = match name.as_str() {
        "video/x-h264" => Codec::H264,
        "video/x-h265" => Codec::H265,
        _ => Codec::Other(name),
    };
    let rate = video.framerate();
    let fps = (rate.numer() > 0 && rate.denom() > 0).then(|| rate.numer() as f64 / rate.denom() as f64);
    debug!(%uri, ?codec, ?fps, "probed");
    Ok(Some((codec, fps)))
}

/// `filesrc ! parsebin|decodebin ! appsink`, pushing into a media's appsrc.
struct FilePipeline {
    pipeline: gst::Pipeline,
    watch: glib::Source,
}

impl FilePipeline {
    /// Builds the pipeline and, when looping, prerolls it and puts it in
    /// segment mode (so the demuxer posts SEGMENT_DONE instead of EOS).
    fn new(camera: &Camera, appsrc: &gst_app::AppSrc, looping: bool) -> Result<Self, Error> {
        let passthrough = !camera.transcodes();
        let pipeline = gst::Pipeline::with_name(&format!("file-{}", camera.name));
        let filesrc = gst::ElementFactory::make("filesrc")
            .property("location", camera.path.to_str().ok_or_else(|| Error::Gst("path is not UTF-8".into()))?)
            .build()?;
        let demux = gst::ElementFactory::make(if passthrough { "parsebin" } else { "decodebin" }).build()?;
        let sink_caps = if passthrough {
            "video/x-h264; video/x-h265".parse::<gst::Caps>().expect("valid caps")
        } else {
            gst::Caps::builder("video/x-raw").build()
        };
        let appsink = gst_app::AppSink::builder().caps(&sink_caps).sync(false).build();
        pipeline.add_many([&filesrc, &demux, appsink.upcast_ref()])?;
        filesrc.link(&demux)?;

        // Link the first video pad; others (audio, subtitles) stay unlinked.
        let sinkpad = appsink.static_pad("sink").expect("appsink has a sink pad");
        demux.connect_pad_added(move |_, pad| {
            if !sinkpad.is_linked() && pad.link(&sinkpad).is_ok() {
                debug!(pad = %pad.name(), "linked video pad");
            }
        });

        let mut retimer = Retimer::default();
        let mut caps: Option<gst::Caps> = None;
        let src = appsrc.clone();
        let eos_src = appsrc.clone();
        appsink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                    if sample.caps() != caps.as_ref().map(|c| c.as_ref()) {
                        caps = sample.caps_owned();
                        src.set_caps(caps.as_ref());
                    }
                    let Some(buffer) = sample.buffer_owned() else { return Ok(gst::FlowSuccess::Ok) };
                    let segment = sample.segment().and_then(|s| s.downcast_ref::<gst::ClockTime>().cloned());
                    // When looping, what was produced while prerolling, before
                    // the first segment seek, is replayed after it: drop it.
                    if looping && !segment.as_ref().is_some_and(|s| s.flags().contains(gst::SegmentFlags::SEGMENT)) {
                        return Ok(gst::FlowSuccess::Ok);
                    }
                    src.push_buffer(retimer.retime(buffer, segment.as_ref()))
                })
                .eos(move |_| {
                    debug!("end of file, ending the stream");
                    let _ = eos_src.end_of_stream();
                })
                .build(),
        );

        let weak = pipeline.downgrade();
        let err_src = appsrc.clone();
        let name = camera.name.clone();
        let watch =
            pipeline.bus().expect("pipeline has a bus").create_watch(None, glib::Priority::DEFAULT, move |_, msg| {
                match msg.view() {
                    gst::MessageView::SegmentDone(_) => {
                        debug!(mount = %name, "end of file, looping");
                        if let Some(p) = weak.upgrade()
                            && let Err(e) = seek_to_start(&p, gst::SeekFlags::SEGMENT)
                        {
                            error!(mount = %name, "cannot loop: {e}");
                            let _ = err_src.end_of_stream();
                        }
                    }
                    gst::MessageView::Error(e) => {
                        error!(mount = %name, "file pipeline: {} ({:?})", e.error(), e.debug());
                        let _ = err_src.end_of_stream();
                    }
                    gst::MessageView::Warning(w) => warn!(mount = %name, "file pipeline: {}", w.error()),
                    _ => {}
                }
                glib::ControlFlow::Continue
            });
        watch.attach(Some(&glib::MainContext::default()));
        let this = FilePipeline { pipeline, watch };

        if looping {
            this.pipeline.set_state(gst::State::Paused).map_err(|e| Error::Gst(e.to_string()))?;
            let (res, ..) = this.pipeline.state(gst::ClockTime::from_seconds(10));
            res.map_err(|e| Error::Gst(format!("file pipeline did not preroll: {e}")))?;
            seek_to_start(&this.pipeline, gst::SeekFlags::FLUSH | gst::SeekFlags::SEGMENT)?;
        }
        Ok(this)
    }

    fn start(&self) -> Result<(), Error> {
        self.pipeline.set_state(gst::State::Playing).map_err(|e| Error::Gst(e.to_string()))?;
        Ok(())
    }

    fn stop(self) {
        self.watch.destroy();
        let _ = self.pipeline.set_state(gst::State::Null);
        debug!(pipeline = %self.pipeline.name(), "file pipeline stopped");
    }
}

/// A segment seek back to the start: with SEGMENT the demuxer posts
/// SEGMENT_DONE at the end of the file instead of sending EOS downstream.
/// Without FLUSH (the loop case) data keeps flowing and the new segment
/// follows the old one.
fn seek_to_start(pipeline: &gst::Pipeline, flags: gst::SeekFlags) -> Result<(), Error> {
    pipeline.seek(1.0, flags, gst::SeekType::Set, gst::ClockTime::ZERO, gst::SeekType::None, gst::ClockTime::NONE)?;
    Ok(())
}

/// Turns the file pipeline's per-loop timestamps into one increasing timeline.
///
/// Times are taken relative to their segment's start, so the segment bases
/// the demuxer accumulates over loops do not matter. A new pass over the file
/// is recognised by a new segment whose decode (else presentation) time goes
/// back; it gets an offset so that its first frame is presented right after
/// the end of the previous pass. The output starts at 0, where the media
/// pipeline's (default) segment starts.
#[derive(Default)]
struct Retimer {
    segment: Option<gst::FormattedSegment<gst::ClockTime>>,
    /// Added to times relative to the segment start (ns).
    offset: i64,
    /// Last relative decode-or-presentation time seen.
    last_rel: Option<i64>,
    /// Gap between the last two buffers, a stand-in for missing durations.
    last_gap: i64,
    /// End of the latest buffer pushed, on the output timeline.
    end: i64,
}

impl Retimer {
    fn retime(
        &mut self,
        mut buffer: gst::Buffer,
        segment: Option<&gst::FormattedSegment<gst::ClockTime>>,
    ) -> gst::Buffer {
        let start = segment.and_then(|s| s.start()).map_or(0, |t| t.nseconds() as i64);
        let rel = |t: Option<gst::ClockTime>| t.map(|t| t.nseconds() as i64 - start);
        let (pts, dts) = (rel(buffer.pts()), rel(buffer.dts()));
        let Some(anchor) = dts.or(pts) else { return buffer };

        let new_segment = segment.is_some() && segment != self.segment.as_ref();
        if new_segment {
            debug!(?segment, anchor, last = ?self.last_rel, "new segment");
            self.segment = segment.cloned();
        }
        let buf = buffer.make_mut();
        match self.last_rel {
            None => self.offset = (-anchor.min(pts.unwrap_or(anchor))).max(0),
            Some(last) if new_segment && anchor < last => {
                // Next pass over the file: its first frame (a key frame, the
                // earliest to present) comes right after the previous pass.
                self.offset = self.end - pts.unwrap_or(anchor);
                buf.unset_flags(gst::BufferFlags::DISCONT);
                debug!(offset_ms = self.offset / 1_000_000, "new pass over the file");
            }
            Some(last) => self.last_gap = anchor - last,
        }
        self.last_rel = Some(anchor);

        let out = |t: i64| gst::ClockTime::from_nseconds((t + self.offset).max(0) as u64);
        buf.set_pts(pts.map(out));
        buf.set_dts(dts.map(out));
        let duration = buf.duration().map_or(self.last_gap, |d| d.nseconds() as i64);
        self.end = self.end.max(pts.unwrap_or(anchor).max(anchor) + self.offset + duration);
        buffer
    }
}
