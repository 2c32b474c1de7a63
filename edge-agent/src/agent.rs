//! `edge-agent run`: loads the models, starts one task per camera, the analysis worker, the
//! status reporter and the MQTT publisher, and shuts them down in order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sd_notify::NotifyState;
use sightline_contract::CameraState;
use sightline_vision::crowd::{DensityEstimator, FloorCorrection};
use sightline_vision::persons::PersonDetector;
use sightline_vision::{FacePipeline, Runtime};
use tokio::sync::{mpsc, watch};

use crate::analysis::{Heartbeat, Worker};
use crate::baseline::Baseline;
use crate::camera::{CameraHandle, CameraTask, StatusInfo, status_message};
use crate::config::Config;
use crate::crowd::{CrowdWorker, PERSON_HISTORY};
use crate::frames::{Counters, Doorbell, FrameSlot};
use crate::mqtt::{MqttStats, run_publisher};
use crate::outbox::Outbox;
use crate::rules::CameraRules;
use crate::{AgentError, Clock};

/// Capacity of the event channel to the publisher (bounded: producers wait when it is full).
const EVENT_QUEUE: usize = 1024;

/// The models the configuration needs, loaded once and shared by every camera.
pub struct Models {
    pub faces: FacePipeline,
    /// When a camera counts crowds or has a fence.
    pub persons: Option<PersonDetector>,
    /// When a camera counts crowds.
    pub density: Option<DensityEstimator>,
}

/// Loads the runtime and the models as configured (each sha256-verified).
pub fn load_models(cfg: &Config) -> Result<Models, AgentError> {
    let rt = Runtime::new(&cfg.runtime)?;
    let enabled = || cfg.cameras.iter().filter(|c| c.enabled);
    let persons = if enabled().any(|c| c.needs_persons()) {
        let mut p = PersonDetector::load(&rt, &cfg.model_path(&cfg.crowd.person_model))?;
        p.threshold = cfg.crowd.person_threshold;
        Some(p)
    } else {
        None
    };
    let density = if enabled().any(|c| c.crowd.enabled) { Some(density_model(&rt, cfg)?) } else { None };
    Ok(Models { faces: load_faces(&rt, cfg)?, persons, density })
}

/// The density model alone (`edge-agent crowd-baseline`).
pub fn load_density(cfg: &Config) -> Result<DensityEstimator, AgentError> {
    density_model(&Runtime::new(&cfg.runtime)?, cfg)
}

fn density_model(rt: &Runtime, cfg: &Config) -> Result<DensityEstimator, AgentError> {
    let rt = rt.with_threads(cfg.crowd.threads);
    let mut d = DensityEstimator::load(&rt, &cfg.model_path(&cfg.crowd.density_model))?;
    d.max_width = cfg.crowd.max_width;
    Ok(d)
}

fn load_faces(rt: &Runtime, cfg: &Config) -> Result<FacePipeline, AgentError> {
    let mut faces = FacePipeline::load(rt, &cfg.agent.model_dir, &cfg.faces.detector)?;
    faces.detector.threshold = cfg.faces.score_threshold;
    faces.detector.nms_iou = cfg.faces.nms_iou;
    faces.detector.max_width = cfg.faces.max_detect_width;
    faces.min_face_px = cfg.faces.min_face_px;
    Ok(faces)
}

/// Runs the agent until every source has finished (files without `loop`) or `shutdown` turns true.
pub async fn run(cfg: Config, clock: Arc<dyn Clock>, mut shutdown: watch::Receiver<bool>) -> Result<(), AgentError> {
    crate::decode::check_decoder(&cfg.decode.h264, "h264")?;
    crate::decode::check_decoder(&cfg.decode.h265, "h265")?;
    let models = load_models(&cfg)?;
    tracing::info!(
        cameras = cfg.cameras.len(),
        persons = models.persons.is_some(),
        density = models.density.is_some(),
        "models loaded"
    );

    let outbox = Outbox::open(&cfg.mqtt.outbox, cfg.mqtt.outbox_max_bytes)?;
    let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
    let stats = Arc::new(MqttStats::default());
    let publisher = tokio::spawn(run_publisher(
        cfg.mqtt.clone(),
        cfg.agent.clone(),
        clock.clone(),
        events_rx,
        stats.clone(),
        Duration::from_secs(10),
        Some(cfg.cameras.iter().map(|c| c.id.clone()).collect()),
        outbox,
    ));

    let bell = Arc::new(Doorbell::default());
    let crowd_bell = Arc::new(Doorbell::default());
    let cameras = cfg
        .cameras
        .iter()
        .filter(|c| c.enabled)
        .map(|c| {
            let rules = CameraRules::new(&cfg.agent.site, &c.id, &c.zones, &c.rules, &c.health)
                .map_err(|source| AgentError::Rules { camera: c.id.clone(), source })?;
            Ok(Arc::new(CameraHandle {
                cfg: c.clone(),
                slot: Arc::new(FrameSlot::new(Arc::new(Counters::default()), bell.clone())),
                crowd_slot: Arc::new(FrameSlot::new(Arc::new(Counters::default()), crowd_bell.clone())),
                status: Mutex::new(StatusInfo::new(CameraState::Connecting)),
                rules: Mutex::new(rules),
                persons: Mutex::new(VecDeque::with_capacity(PERSON_HISTORY)),
            }))
        })
        .collect::<Result<Vec<_>, AgentError>>()?;
    for c in cfg.cameras.iter().filter(|c| !c.enabled) {
        let st = StatusInfo::new(CameraState::Disabled);
        let _ = events.send(status_message(&cfg.agent.site, &cfg.agent.id, &c.id, &st, clock.now(), None)).await;
    }

    let (stop_cameras, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for handle in &cameras {
        let task = CameraTask {
            handle: handle.clone(),
            site: cfg.agent.site.clone(),
            agent: cfg.agent.id.clone(),
            decode: cfg.decode.clone(),
            clock: clock.clone(),
            events: events.clone(),
            shutdown: stop_rx.clone(),
        };
        tasks.spawn(task.run());
    }

    let done = Arc::new(AtomicBool::new(false));
    let heartbeat = Arc::new(Heartbeat::default());
    let worker = Worker {
        site: cfg.agent.site.clone(),
        agent: cfg.agent.id.clone(),
        faces: models.faces,
        persons: models.persons,
        cameras: cameras.clone(),
        tracker: cfg.tracker.clone(),
        bell: bell.clone(),
        clock: clock.clone(),
        events: events.clone(),
        done: done.clone(),
        heartbeat: heartbeat.clone(),
    };
    let worker =
        std::thread::Builder::new().name("analysis".into()).spawn(move || worker.run()).expect("spawn analysis thread");

    let corrections = cameras
        .iter()
        .map(|c| {
            let baseline = c.cfg.crowd.baseline.as_deref().map(Baseline::load).transpose()?;
            Ok(FloorCorrection {
                cell_threshold: cfg.crowd.cell_threshold,
                baseline: baseline.map(|b| b.cells),
                ..FloorCorrection::default()
            })
        })
        .collect::<Result<Vec<_>, AgentError>>()?;
    let crowd_worker = models.density.map(|density| {
        let w = CrowdWorker {
            corrections,
            site: cfg.agent.site.clone(),
            density,
            cfg: cfg.crowd.clone(),
            cameras: cameras.clone(),
            bell: crowd_bell.clone(),
            events: events.clone(),
            done: done.clone(),
        };
        std::thread::Builder::new().name("crowd".into()).spawn(move || w.run()).expect("spawn crowd thread")
    });

    let reporter = tokio::spawn(report_status(
        cfg.agent.site.clone(),
        cfg.agent.id.clone(),
        cameras.clone(),
        clock.clone(),
        events.clone(),
        Duration::from_secs(cfg.mqtt.status_interval_s.max(1)),
    ));

    let watchdog = sd_notify::watchdog_enabled().map(|period| tokio::spawn(feed_watchdog(period, heartbeat.clone())));
    let _ = sd_notify::notify(&[NotifyState::Ready]);

    // Until every camera finished, or shutdown.
    loop {
        tokio::select! {
            r = tasks.join_next() => match r {
                None => break,
                Some(Err(e)) => tracing::error!(error = %e, "camera task panicked"),
                Some(Ok(())) => {}
            },
            _ = shutdown.wait_for(|s| *s) => {
                tracing::info!("shutting down");
                let _ = stop_cameras.send(true);
                while tasks.join_next().await.is_some() {}
                break;
            }
        }
    }
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
    if let Some(w) = watchdog {
        w.abort();
    }
    done.store(true, Ordering::Release);
    bell.ring();
    crowd_bell.ring();
    tokio::task::spawn_blocking(move || {
        let _ = worker.join();
        if let Some(c) = crowd_worker {
            let _ = c.join();
        }
    })
    .await
    .ok();
    reporter.abort();
    for c in &cameras {
        let c = c.counters();
        tracing::info!(
            received = Counters::get(&c.received),
            decoded = Counters::get(&c.decoded),
            analyzed = Counters::get(&c.analyzed),
            dropped = Counters::get(&c.dropped),
            sightings = Counters::get(&c.sightings),
            "camera totals"
        );
    }
    drop(events);
    let _ = publisher.await;
    tracing::info!(
        published = stats.published.load(Ordering::Relaxed),
        acked = stats.acked.load(Ordering::Relaxed),
        outbox = stats.outbox_depth.load(Ordering::Relaxed),
        evicted = stats.evicted.load(Ordering::Relaxed),
        "stopped"
    );
    Ok(())
}

/// Feeds the systemd watchdog (`WatchdogSec`) while the analysis worker is alive: a stuck
/// pipeline stops the pings and systemd restarts the agent.
async fn feed_watchdog(period: Duration, heartbeat: Arc<Heartbeat>) {
    let mut tick = tokio::time::interval(period / 3);
    loop {
        tick.tick().await;
        if heartbeat.age() < period / 2 {
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
        } else {
            tracing::error!(stuck_for = ?heartbeat.age(), "analysis worker unresponsive: withholding the watchdog ping");
        }
    }
}

/// Refreshes each camera's retained status with rates measured over the last interval.
async fn report_status(
    site: String,
    agent: String,
    cameras: Vec<Arc<CameraHandle>>,
    clock: Arc<dyn Clock>,
    events: mpsc::Sender<crate::mqtt::Outgoing>,
    every: Duration,
) {
    let mut last: Vec<(u64, u64)> = vec![(0, 0); cameras.len()];
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        for (c, prev) in cameras.iter().zip(last.iter_mut()) {
            let n = c.counters();
            let (decoded, analyzed) = (Counters::get(&n.decoded), Counters::get(&n.analyzed));
            let secs = every.as_secs_f32();
            let rates =
                ((decoded - prev.0) as f32 / secs, (analyzed - prev.1) as f32 / secs, Counters::get(&n.dropped));
            *prev = (decoded, analyzed);
            let st = c.status.lock().unwrap().clone();
            if events.send(status_message(&site, &agent, &c.cfg.id, &st, clock.now(), Some(rates))).await.is_err() {
                return;
            }
        }
    }
}
