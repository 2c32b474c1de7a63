//! `edge-agent run`: loads the models, starts one task per camera, the analysis worker, the
//! status reporter and the MQTT publisher, and shuts them down in order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sightline_contract::CameraState;
use sightline_vision::{FacePipeline, Runtime};
use tokio::sync::{mpsc, watch};

use crate::analysis::Worker;
use crate::camera::{CameraHandle, CameraTask, StatusInfo, status_message};
use crate::config::Config;
use crate::frames::{Counters, Doorbell, FrameSlot};
use crate::mqtt::{MqttStats, run_publisher};
use crate::{AgentError, Clock};

/// Capacity of the event channel to the publisher (bounded: producers wait when it is full).
const EVENT_QUEUE: usize = 1024;

/// Loads the runtime and face models as configured.
pub fn load_faces(cfg: &Config) -> Result<FacePipeline, AgentError> {
    let rt = Runtime::new(&cfg.runtime)?;
    let mut faces = FacePipeline::load(&rt, &cfg.agent.model_dir, &cfg.faces.detector)?;
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
    let faces = load_faces(&cfg)?;
    tracing::info!(cameras = cfg.cameras.len(), "models loaded");

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
    ));

    let bell = Arc::new(Doorbell::default());
    let cameras: Vec<Arc<CameraHandle>> = cfg
        .cameras
        .iter()
        .filter(|c| c.enabled)
        .map(|c| {
            Arc::new(CameraHandle {
                cfg: c.clone(),
                slot: Arc::new(FrameSlot::new(Arc::new(Counters::default()), bell.clone())),
                status: Mutex::new(StatusInfo {
                    state: CameraState::Connecting,
                    codec: None,
                    resolution: None,
                    detail: None,
                }),
            })
        })
        .collect();
    for c in cfg.cameras.iter().filter(|c| !c.enabled) {
        let st = StatusInfo { state: CameraState::Disabled, codec: None, resolution: None, detail: None };
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
    let worker = Worker {
        site: cfg.agent.site.clone(),
        faces,
        cameras: cameras.clone(),
        tracker: cfg.tracker.clone(),
        bell: bell.clone(),
        clock: clock.clone(),
        events: events.clone(),
        done: done.clone(),
    };
    let worker =
        std::thread::Builder::new().name("analysis".into()).spawn(move || worker.run()).expect("spawn analysis thread");

    let reporter = tokio::spawn(report_status(
        cfg.agent.site.clone(),
        cfg.agent.id.clone(),
        cameras.clone(),
        clock.clone(),
        events.clone(),
        Duration::from_secs(cfg.mqtt.status_interval_s.max(1)),
    ));

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
    done.store(true, Ordering::Release);
    bell.ring();
    tokio::task::spawn_blocking(move || worker.join()).await.ok();
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
        "stopped"
    );
    Ok(())
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
