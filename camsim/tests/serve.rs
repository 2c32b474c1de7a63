//! End-to-end tests: run the real `camsim` binary on 127.0.0.1 and receive its
//! streams with a GStreamer RTSP client in this process.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer_app as gst_app;

use gst::prelude::*;

const CLIP: &str = "short_hamilton_clip.mp4"; // H.264 640x360 29.97 fps, 275 frames
const VTEST: &str = "vtest.avi"; // MS-MPEG4v3 768x576 10 fps

fn media(name: &str) -> PathBuf {
    let dir = std::env::var_os("SIGHTLINE_MEDIA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/media"));
    let path = dir.join(name);
    assert!(path.is_file(), "test media {} not found (set SIGHTLINE_MEDIA_DIR)", path.display());
    path
}

/// A running camsim; killed when dropped, whatever the test outcome.
struct Camsim {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Camsim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str]) -> (Child, Arc<Mutex<String>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_camsim"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn camsim");
    let stderr = Arc::new(Mutex::new(String::new()));
    let (mut pipe, sink) = (child.stderr.take().unwrap(), stderr.clone());
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut buf) {
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    (child, stderr)
}

/// Starts camsim and waits for its ready lines; returns it and the mount URLs.
fn start(args: &[&str]) -> (Camsim, Vec<String>) {
    let mounts = args.iter().filter(|a| **a == "--mount").count();
    let (mut child, stderr) = spawn(args);
    let stdout = child.stdout.take().unwrap();
    let cam = Camsim { child, stderr };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut urls = Vec::new();
    while urls.len() < mounts {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let rest = line.strip_prefix("camsim: serving ").unwrap_or_else(|| panic!("unexpected line {line:?}"));
                let url = rest.split(" (").next().unwrap();
                assert!(url.starts_with("rtsp://127.0.0.1:") && !url.starts_with("rtsp://127.0.0.1:0/"), "{line}");
                urls.push(url.to_owned());
            }
            Err(_) => panic!("camsim not ready in time; stderr:\n{}", cam.stderr.lock().unwrap()),
        }
    }
    (cam, urls)
}

/// Runs camsim expecting it to exit by itself; returns its status and stderr.
fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let (child, stderr) = spawn(args);
    let mut cam = Camsim { child, stderr };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = cam.child.try_wait().unwrap() {
            std::thread::sleep(Duration::from_millis(100)); // let the reader drain stderr
            let err = cam.stderr.lock().unwrap().clone();
            return (status, err);
        }
        assert!(Instant::now() < deadline, "camsim did not exit; stderr:\n{}", cam.stderr.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a client received.
#[derive(Debug, Default)]
struct Received {
    frames: usize,
    size: Option<(i32, i32)>,
    eos: bool,
    elapsed: Duration,
    /// Presentation times went strictly up from frame to frame.
    monotonic: bool,
}

/// Receives `url` over RTSP/TCP with `depay ! parse ! decoder` until `want`
/// frames were decoded, the stream ended, or `timeout` passed.
fn receive(url: &str, codec: &str, want: usize, timeout: Duration) -> Received {
    gst::init().unwrap();
    let launch = format!(
        "rtspsrc location={url} protocols=tcp latency=100 ! rtp{codec}depay ! {codec}parse ! avdec_{codec} \
         ! appsink name=sink sync=false max-buffers=10"
    );
    let pipeline = gst::parse::launch(&launch).unwrap().downcast::<gst::Pipeline>().unwrap();
    let sink = pipeline.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();

    let start = Instant::now();
    let mut got = Received { monotonic: true, ..Default::default() };
    let mut last_pts = None;
    while got.frames < want && start.elapsed() < timeout {
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
            let _ = pipeline.set_state(gst::State::Null);
            panic!("client error on {url}: {msg:?}");
        }
        match sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) {
            Some(sample) => {
                got.frames += 1;
                let pts = sample.buffer().and_then(|b| b.pts());
                if pts.is_none() || pts <= last_pts {
                    got.monotonic = false;
                }
                last_pts = pts;
                if let Some(s) = sample.caps().and_then(|c| c.structure(0)) {
                    got.size = Some((s.get("width").unwrap(), s.get("height").unwrap()));
                }
            }
            None if sink.is_eos() => {
                got.eos = true;
                break;
            }
            None => {}
        }
    }
    got.elapsed = start.elapsed();
    pipeline.set_state(gst::State::Null).unwrap();
    got
}

#[test]
fn h264_file_loops_in_real_time_without_reencoding() {
    let clip = media(CLIP);
    let (_cam, urls) = start(&["--listen", "127.0.0.1:0", "--loop", "--mount", &format!("cam={}", clip.display())]);
    assert!(urls[0].ends_with("/cam"), "{urls:?}");

    let got = receive(&urls[0], "h264", 301, Duration::from_secs(20));
    // 275 frames per pass: more than 300 means the file looped.
    assert!(got.frames > 300, "{got:?}");
    assert!(!got.eos, "{got:?}");
    assert_eq!(got.size, Some((640, 360)));
    assert!(got.monotonic, "timestamps must keep increasing across loops: {got:?}");
    // 301 frames at 29.97 fps take 10 s when paced like a camera.
    assert!(got.elapsed > Duration::from_secs(8), "not paced in real time: {got:?}");

    // Everyone left: a client coming back gets a working stream again.
    let again = receive(&urls[0], "h264", 10, Duration::from_secs(10));
    assert_eq!(again.frames, 10, "{again:?}");
}

#[test]
fn other_codecs_are_transcoded_to_h264() {
    let (cam, urls) = start(&["--listen", "127.0.0.1:0", "--mount", &format!("vtest={}", media(VTEST).display())]);
    let got = receive(&urls[0], "h264", 15, Duration::from_secs(15));
    assert_eq!(got.frames, 15, "{got:?}");
    assert_eq!(got.size, Some((768, 576)));
    assert!(cam.stderr.lock().unwrap().contains("transcoded"), "transcoding is logged");
    stops_cleanly_on_sigterm(cam);
}

fn stops_cleanly_on_sigterm(mut cam: Camsim) {
    let kill = Command::new("kill").args(["-TERM", &cam.child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = cam.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "camsim ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

/// Makes a ~2 s H.265 mp4 (no B-frames, like most cameras) out of the start
/// of the H.264 clip.
fn make_h265(dir: &Path) -> PathBuf {
    let out = dir.join("clip_h265.mp4");
    let mut child = Command::new("gst-launch-1.0")
        .args(["-q", "-e", "filesrc", &format!("location={}", media(CLIP).display())])
        .args(["!", "qtdemux", "!", "h264parse", "!", "avdec_h264", "!", "identity", "eos-after=60"])
        .args(["!", "videoconvert", "!", "x265enc", "speed-preset=ultrafast", "tune=zerolatency", "key-int-max=15"])
        .args(["!", "h265parse", "!", "mp4mux", "!", "filesink", &format!("location={}", out.display())])
        .stdin(Stdio::null())
        .spawn()
        .expect("gst-launch-1.0");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("making the H.265 file timed out");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success() && out.is_file(), "making the H.265 file failed: {status}");
    out
}

#[test]
fn h265_file_is_served_looped_or_until_eos() {
    let dir = tempfile::tempdir().unwrap();
    let file = make_h265(dir.path());
    let mount = format!("hevc={}", file.display());

    // Looping: 60 frames per pass, so 90 frames means at least one loop.
    let (_looping, urls) = start(&["--listen", "127.0.0.1:0", "--loop", "--mount", &mount]);
    let got = receive(&urls[0], "h265", 90, Duration::from_secs(15));
    assert_eq!(got.frames, 90, "{got:?}");
    assert_eq!(got.size, Some((640, 360)));
    assert!(got.monotonic, "{got:?}");

    // Not looping: the stream ends with the file.
    let (_once, urls) = start(&["--listen", "127.0.0.1:0", "--mount", &mount]);
    let got = receive(&urls[0], "h265", 1000, Duration::from_secs(15));
    assert!(got.eos, "stream should end at the end of the file: {got:?}");
    assert!((55..=60).contains(&got.frames), "{got:?}");
}

#[test]
fn missing_file_is_named() {
    let missing = "/nonexistent/dir/nothing-here.mp4";
    let (status, stderr) = run_to_exit(&["--listen", "127.0.0.1:0", "--mount", &format!("cam={missing}")]);
    assert!(!status.success());
    assert!(stderr.contains(missing), "{stderr}");
}

#[test]
fn bad_mount_arguments_are_named() {
    let clip = media(CLIP);
    for (arg, expect) in [
        ("camfoo".to_owned(), "camfoo"),
        (format!("Cam={}", clip.display()), "Cam"),
        (format!("-x={}", clip.display()), "-x"),
        ("cam=".to_owned(), "cam="),
    ] {
        let (status, stderr) = run_to_exit(&["--listen", "127.0.0.1:0", "--mount", &arg]);
        assert!(!status.success(), "{arg}");
        assert!(stderr.contains("--mount") && stderr.contains(expect), "{arg}: {stderr}");
    }
    let (status, stderr) = run_to_exit(&[
        "--listen",
        "127.0.0.1:0",
        "--mount",
        &format!("a={}", clip.display()),
        "--mount",
        &format!("a={}", clip.display()),
    ]);
    assert!(!status.success());
    assert!(stderr.contains("'a'"), "{stderr}");
}

#[test]
fn port_in_use_is_an_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, stderr) = run_to_exit(&["--listen", &addr, "--mount", &format!("cam={}", media(CLIP).display())]);
    assert!(!status.success());
    assert!(stderr.contains(&addr), "{stderr}");
}

#[test]
fn scale_serves_the_file_re_encoded_at_that_size() {
    let clip = media(CLIP);
    let (cam, urls) = start(&[
        "--listen",
        "127.0.0.1:0",
        "--loop",
        "--scale",
        "480x270",
        "--mount",
        &format!("small={}", clip.display()),
    ]);
    let got = receive(&urls[0], "h264", 15, Duration::from_secs(15));
    assert_eq!(got.frames, 15, "{got:?}");
    assert_eq!(got.size, Some((480, 270)));
    assert!(cam.stderr.lock().unwrap().contains("scaled to 480x270"), "the re-encoding is logged");
}

#[test]
fn a_corrupted_stream_is_still_served() {
    let clip = media(CLIP);
    let mount = format!("noisy={}", clip.display());
    let (cam, urls) =
        start(&["--listen", "127.0.0.1:0", "--loop", "--corrupt", "0.2", "--seed", "11", "--mount", &mount]);
    // a client decodes through the damage (the RTP packetisation stays valid)
    let got = receive(&urls[0], "h264", 60, Duration::from_secs(15));
    assert_eq!(got.frames, 60, "{got:?}");
    assert_eq!(got.size, Some((640, 360)));
    assert!(cam.stderr.lock().unwrap().contains("corrupting about 20.0 %"), "{}", cam.stderr.lock().unwrap());
}

#[test]
fn bad_fault_injection_values_are_named() {
    let mount = format!("cam={}", media(CLIP).display());
    for (args, expect) in [
        (vec!["--scale", "641x360"], "even"),
        (vec!["--scale", "wide"], "WIDTHxHEIGHT"),
        (vec!["--scale", "8x8"], "between 16 and 7680"),
        (vec!["--corrupt", "1.5"], "probability from 0 to 1"),
        (vec!["--corrupt", "often"], "probability from 0 to 1"),
        (vec!["--seed", "3"], "--corrupt"),
    ] {
        let mut all = vec!["--listen", "127.0.0.1:0", "--mount", &mount];
        all.extend(&args);
        let (status, stderr) = run_to_exit(&all);
        assert!(!status.success(), "{args:?}");
        assert!(stderr.contains(args[0]) && stderr.contains(expect), "{args:?}: {stderr}");
    }
}
