//! The durable outbox end to end: camsim (looping clip) → `edge-agent` → mosquitto, with the
//! broker away for ~20 s (and the agent `kill -9`'d meanwhile). Nothing the agent enqueued may
//! be lost.
//!
//! Method: the agent logs every message it stored in its outbox (`enqueued seq=… topic=… id=…`,
//! debug level). A recorder subscriber with a persistent session (`clean_session = false`, QoS 1)
//! on a broker with persistence: the broker keeps the recorder's session across its own restart
//! and queues for it whatever the agent publishes before the recorder is back, so the recorder
//! sees everything published after the broker returns, whoever reconnects first. After the
//! broker is back, every event id enqueued so far must reach the recorder (bounded wait), the
//! backlog in the order it was enqueued, and the camera statuses produced during the outage
//! (they have no id) must arrive too.
//!
//! The bound: with a 64 KiB outbox and the broker away, evictions are counted (metrics) and
//! logged, statuses go before sightings, and alerts are kept and delivered once the broker is
//! back (the order within the bound is unit-tested in `edge-agent/src/outbox.rs`).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use sightline_contract::{CameraState, CameraStatus, Payload};
use sightline_tests::*;
use time::OffsetDateTime;

const OUTAGE: Duration = Duration::from_secs(20);

/// One `enqueued` line of the agent's log.
#[derive(Clone, Debug)]
struct Enqueued {
    seq: i64,
    topic: String,
    id: Option<String>,
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    line[at..].split_whitespace().next()
}

fn enqueued(log: &str) -> Vec<Enqueued> {
    log.lines()
        .filter(|l| l.contains(" enqueued "))
        .map(|l| Enqueued {
            seq: field(l, "seq").and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no seq in {l}")),
            topic: field(l, "topic").unwrap_or_else(|| panic!("no topic in {l}")).to_owned(),
            id: field(l, "id").map(str::to_owned),
        })
        .collect()
}

/// The `id` of an event message.
fn id_of(m: &Message) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&m.payload).ok()?;
    v.get("id")?.as_str().map(str::to_owned)
}

fn rtsp_camera(url: &str) -> String {
    format!("[[camera]]\nid = \"stage\"\nrtsp = \"{url}\"\nsilence_timeout_s = 5\n")
}

fn streaming(m: &[Message]) -> bool {
    m.iter()
        .filter(|m| m.topic.ends_with("/stage/status"))
        .any(|m| CameraStatus::from_json(&m.payload).is_ok_and(|s| s.state == CameraState::Streaming))
}

/// Waits until the agent streams and has published a sighting.
fn wait_producing(sub: &mut Subscriber, agent: &Agent) {
    sub.wait_until(Duration::from_secs(60), |m| streaming(m) && m.iter().any(|m| m.topic.ends_with("/sighting")))
        .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", agent.log()));
}

/// Asserts every event of `expected` (enqueued by the agent) reaches `sub` (received from index
/// `after_restart` on, unless received before), the backlog in `seq` order.
fn assert_all_arrive(sub: &mut Subscriber, expected: &[Enqueued], after_restart: usize, log: &dyn Fn() -> String) {
    let events: Vec<&Enqueued> = expected.iter().filter(|e| e.id.is_some()).collect();
    let wanted: HashSet<&str> = events.iter().map(|e| e.id.as_deref().unwrap()).collect();
    let before: HashSet<String> = sub.seen[..after_restart].iter().filter_map(id_of).collect();
    let backlog: Vec<&Enqueued> =
        events.iter().copied().filter(|e| !before.contains(e.id.as_deref().unwrap())).collect();
    assert!(
        backlog.iter().any(|e| e.topic.ends_with("/sighting")),
        "no sighting was produced while the broker was away: {backlog:?}"
    );
    let r = sub.wait_until(Duration::from_secs(90), |m| {
        let got: HashSet<String> = m.iter().filter_map(id_of).collect();
        wanted.iter().all(|id| got.contains(*id))
    });
    if let Err(e) = r {
        let got: HashSet<String> = sub.seen.iter().filter_map(id_of).collect();
        let lost: Vec<_> = events.iter().filter(|e| !got.contains(e.id.as_deref().unwrap())).collect();
        panic!("{e}; {} of {} events lost: {lost:?}\nagent log:\n{}", lost.len(), events.len(), log());
    }
    // the backlog is replayed in the order it was enqueued
    let seq: HashMap<&str, i64> = backlog.iter().map(|e| (e.id.as_deref().unwrap(), e.seq)).collect();
    let mut first = HashSet::new();
    let order: Vec<i64> = sub.seen[after_restart..]
        .iter()
        .filter_map(id_of)
        .filter(|id| first.insert(id.clone()))
        .filter_map(|id| seq.get(id.as_str()).copied())
        .collect();
    assert_eq!(order.len(), backlog.len());
    eprintln!("{} events enqueued, {} of them delivered only after the outage, in order", events.len(), backlog.len());
    assert!(order.windows(2).all(|w| w[0] < w[1]), "backlog replayed out of order: {order:?}");
}

/// Camera statuses stamped within `from..to` among `m`.
fn statuses_between(m: &[Message], from: OffsetDateTime, to: OffsetDateTime) -> usize {
    m.iter()
        .filter(|m| m.topic.ends_with("/stage/status"))
        .filter_map(|m| CameraStatus::from_json(&m.payload).ok())
        .filter(|s| s.ts > from && s.ts < to)
        .count()
}

#[test]
fn broker_outage_loses_nothing() {
    let mut broker = Mosquitto::start_persistent().unwrap();
    let mut sub = Subscriber::connect_persistent(broker.port, "outbox-recorder-1").unwrap();
    let camsim = Camsim::start(&[("stage", &media("short_hamilton_clip.mp4"))], true).unwrap();
    let agent = Agent::start(&agent_config(broker.port, &rtsp_camera(&camsim.url("stage")))).unwrap();
    wait_producing(&mut sub, &agent);

    broker.stop().unwrap();
    let down = OffsetDateTime::now_utc();
    std::thread::sleep(OUTAGE);
    // everything received so far was received before the outage
    sub.wait_until(Duration::from_millis(200), |_| false).ok();
    let after_restart = sub.seen.len();
    broker.restart().unwrap();
    let up = OffsetDateTime::now_utc();
    let expected = enqueued(&agent.log());

    assert_all_arrive(&mut sub, &expected, after_restart, &|| agent.log());
    // statuses (no ids) of the outage arrive too: one every 2 s
    let _ = sub.wait_until(Duration::from_secs(30), |m| statuses_between(m, down, up) >= 5);
    let n = statuses_between(&sub.seen, down, up);
    assert!(n >= 5, "{n} camera statuses of the {OUTAGE:?} outage arrived; agent log:\n{}", agent.log());
    assert!(agent.log().contains("sending the outbox backlog"), "{}", agent.log());
}

#[test]
fn agent_killed_during_outage_resends_after_restart() {
    let state = tempfile::tempdir().unwrap();
    let outbox = state.path().join("outbox.sqlite");
    let mut broker = Mosquitto::start_persistent().unwrap();
    let mut sub = Subscriber::connect_persistent(broker.port, "outbox-recorder-2").unwrap();
    let camsim = Camsim::start(&[("stage", &media("short_hamilton_clip.mp4"))], true).unwrap();
    let config = agent_config_with_outbox(broker.port, &rtsp_camera(&camsim.url("stage")), &outbox);
    let mut agent = Agent::start(&config).unwrap();
    wait_producing(&mut sub, &agent);

    broker.stop().unwrap();
    std::thread::sleep(OUTAGE);
    agent.proc.0.kill().unwrap(); // SIGKILL
    agent.proc.0.wait().unwrap();
    let first_log = agent.log();
    let expected = enqueued(&first_log);
    drop(agent);
    sub.wait_until(Duration::from_millis(200), |_| false).ok();
    let after_restart = sub.seen.len();

    let agent = Agent::start(&config).unwrap();
    let started = Instant::now();
    // the new agent finds the rows the killed one left
    while !agent.log().contains("outbox holds messages of a previous run") {
        assert!(started.elapsed() < Duration::from_secs(60), "agent log:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    broker.restart().unwrap();
    assert_all_arrive(&mut sub, &expected, after_restart, &|| {
        format!("{first_log}\n--- restarted ---\n{}", agent.log())
    });
}

/// `outbox full: message evicted` lines of the agent's log: the topics evicted, in order.
fn evicted(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("outbox full: message evicted"))
        .map(|l| field(l, "topic").unwrap_or_else(|| panic!("no topic in {l}")).to_owned())
        .collect()
}

#[test]
fn a_full_outbox_evicts_low_priority_messages_and_keeps_alerts() {
    let mut broker = Mosquitto::start_persistent().unwrap();
    let mut sub = Subscriber::connect_persistent(broker.port, "outbox-recorder-3").unwrap();
    broker.stop().unwrap();
    // a looping clip analysed as fast as possible fills the outbox with sightings and statuses;
    // a camera that never answers raises `camera_offline` after 2 s
    let cameras = format!(
        "[[camera]]\nid = \"stage\"\nfile = \"{clip}\"\nloop = true\npace = \"fast\"\n\n\
         [[camera]]\nid = \"door\"\nrtsp = \"rtsp://127.0.0.1:{port}/door\"\nsilence_timeout_s = 1\n\
         [camera.health]\noffline_after_s = 2\n",
        clip = media("short_hamilton_clip.mp4").display(),
        port = free_port(),
    );
    let config = agent_config(broker.port, &cameras).replace("status_interval_s = 2", "outbox_max_bytes = 65536");
    let agent = Agent::start(&config).unwrap();
    let base = agent.metrics_url().unwrap();
    // well past the bound: statuses went first, then the oldest sightings
    wait_metric(&base, "sightline_outbox_evictions_total", 30.0, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", agent.log()));
    let log = agent.log();
    let stored = enqueued(&log);
    let alerts: Vec<&Enqueued> = stored.iter().filter(|e| e.topic.ends_with("/door/alert")).collect();
    assert!(!alerts.is_empty(), "camera_offline was raised while the broker was away:\n{log}");
    let gone = evicted(&log);
    assert!(gone.len() > 30, "{gone:?}");
    assert!(gone.iter().all(|t| !t.ends_with("/alert")), "an alert was evicted: {gone:?}");
    let first_sighting = gone.iter().position(|t| t.ends_with("/sighting"));
    if let Some(i) = first_sighting {
        // a sighting is evicted only when no status is left to evict: none was stored before it
        assert!(gone[..i].iter().all(|t| t.ends_with("/status")), "{gone:?}");
    }

    broker.restart().unwrap();
    let wanted: HashSet<String> = alerts.iter().filter_map(|e| e.id.clone()).collect();
    sub.wait_until(Duration::from_secs(60), |m| {
        let got: HashSet<String> = m.iter().filter_map(id_of).collect();
        wanted.iter().all(|id| got.contains(id))
    })
    .unwrap_or_else(|e| panic!("{e}: alerts {wanted:?} lost\nagent log:\n{}", agent.log()));
    let (_, text) = http_get(&format!("{base}/metrics")).unwrap();
    let evictions = sample(&text, "sightline_outbox_evictions_total").unwrap();
    assert!(evictions >= gone.len() as f64, "metric {evictions} < {} logged", gone.len());
}
