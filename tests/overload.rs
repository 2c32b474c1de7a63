//! Overload: four RTSP cameras asking for more analysis than two cores deliver, for two
//! minutes. The agent must drop frames (and count them), never events, and keep its memory
//! flat within the bound documented in docs/design.md ("Memory"). Its decoding threads run at
//! `[decode] nice` (10) below the analysis, and must still decode everything the cameras send.

use std::time::{Duration, Instant};

use sightline_tests::*;

const CAMERAS: [&str; 4] = ["north", "south", "east", "west"];
const RUN: Duration = Duration::from_secs(120);
/// Resident memory bound of the agent with four cameras (docs/design.md, "Memory").
const RSS_BOUND_MIB: f64 = 512.0;
/// Growth allowed between the first and the second half of the run (allocator noise).
const GROWTH_MIB: f64 = 64.0;

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/pid/status");
    kib / 1024.0
}

/// (name, nice) of every thread of a process.
fn thread_nices(pid: u32) -> Vec<(String, i64)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .filter_map(|t| {
            let t = t.ok()?.path();
            let name = std::fs::read_to_string(t.join("comm")).ok()?.trim().to_owned();
            let stat = std::fs::read_to_string(t.join("stat")).ok()?;
            // fields after "(comm) ": state is field 3, nice field 19
            let nice = stat.rsplit_once(") ")?.1.split_whitespace().nth(16)?.parse().ok()?;
            Some((name, nice))
        })
        .collect()
}

fn total(exposition: &str, metric: &str) -> f64 {
    CAMERAS.iter().map(|c| sample(exposition, &format!("{metric}{{camera=\"{c}\"}}")).unwrap_or(0.0)).sum()
}

#[test]
fn four_cameras_on_two_cores_drop_frames_not_events_and_memory_stays_flat() {
    let broker = Mosquitto::start().unwrap();
    let mut sub = Subscriber::connect(broker.port).unwrap();
    let clip = media("short_hamilton_clip.mp4");
    let mounts: Vec<(&str, &std::path::Path)> = CAMERAS.iter().map(|c| (*c, clip.as_path())).collect();
    let camsim = Camsim::start(&mounts, true).unwrap();
    // 4 × 15 fps of face analysis: more than two cores can do
    let cameras: String = CAMERAS
        .iter()
        .map(|c| format!("[[camera]]\nid = \"{c}\"\nrtsp = \"{}\"\nanalysis_fps = 15\n\n", camsim.url(c)))
        .collect();
    let agent = Agent::start(&agent_config(broker.port, &cameras)).unwrap();
    let pid = agent.proc.0.id();
    let base = agent.metrics_url().unwrap();
    for c in CAMERAS {
        wait_metric(&base, &format!("sightline_camera_frames_analyzed_total{{camera=\"{c}\"}}"), 0.0, RUN)
            .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", agent.log()));
    }

    let start = Instant::now();
    let mut samples: Vec<(Duration, f64)> = Vec::new();
    while start.elapsed() < RUN {
        samples.push((start.elapsed(), rss_mib(pid)));
        // the subscriber keeps draining while we sample
        let _ = sub.wait_until(Duration::from_secs(1), |_| false);
    }
    let (_, text) = http_get(&format!("{base}/metrics")).unwrap();
    let peak = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    let half = |second: bool| samples.iter().filter(|s| (s.0 >= RUN / 2) == second).map(|s| s.1).fold(0.0, f64::max);
    let (first, second) = (half(false), half(true));
    let analysed = total(&text, "sightline_camera_frames_analyzed_total");
    let dropped = total(&text, "sightline_camera_frames_dropped_total");
    let sightings = total(&text, "sightline_camera_sightings_total");
    eprintln!(
        "overload: RSS peak {peak:.0} MiB (first half {first:.0}, second half {second:.0}); \
         {analysed} frames analysed, {dropped} dropped, {sightings} sightings"
    );

    // decoding: the appsrc streaming threads (one per camera, `src:src`) run 10 nicer than the
    // analysis thread, and kept up: what is not decoded yet fits in the appsrc queue
    let nices = thread_nices(pid);
    let analysis = nices.iter().find(|t| t.0 == "analysis").map(|t| t.1).expect("an `analysis` thread");
    let decoders: Vec<i64> = nices.iter().filter(|t| t.0 == "src:src").map(|t| t.1).collect();
    assert!(decoders.len() >= CAMERAS.len(), "fewer decoding threads than cameras: {nices:?}");
    assert!(decoders.iter().all(|n| *n == analysis + 10), "decoding threads not at nice analysis + 10: {nices:?}");
    for c in CAMERAS {
        let get = |m: &str| sample(&text, &format!("sightline_camera_frames_{m}_total{{camera=\"{c}\"}}")).unwrap();
        let (received, decoded) = (get("received"), get("decoded"));
        assert!(
            received - decoded <= 120.0,
            "camera {c}: decoding fell behind: {received} received, {decoded} decoded"
        );
    }
    assert!(peak < RSS_BOUND_MIB, "RSS peak {peak:.0} MiB over the {RSS_BOUND_MIB} MiB bound");
    assert!(second < first + GROWTH_MIB, "memory grows: {first:.0} MiB → {second:.0} MiB");
    assert!(dropped > 0.0, "overloaded, yet no frame was dropped:\n{text}");
    for c in CAMERAS {
        let n = sample(&text, &format!("sightline_camera_frames_analyzed_total{{camera=\"{c}\"}}")).unwrap();
        assert!(n > analysed / 8.0, "camera {c} starved: {n} of {analysed} frames");
    }
    // every sighting counted was published and reached the broker
    sub.wait_until(Duration::from_secs(30), |m| {
        m.iter().filter(|m| m.topic.ends_with("/sighting")).count() as f64 >= sightings
    })
    .unwrap_or_else(|e| panic!("{e}: sightings lost under overload"));
    assert_eq!(sample(&text, "sightline_outbox_evictions_total"), Some(0.0));
}
