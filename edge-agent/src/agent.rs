//! `edge-agent run`: loads the models, starts one task per camera, the analysis worker, the
//! status reporter, the MQTT publisher and the metrics endpoint, applies reloads (SIGHUP) and
//! shuts everything down in order.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sd_notify::NotifyState;
use sightline_contract::{CameraState, Clock, topic};
use sightline_vision::crowd::{DensityEstimator, FloorCorrection};
use sightline_vision::persons::PersonDetector;
use sightline_vision::{FacePipeline, Runtime};
use tokio::sync::{mpsc, watch};

use crate::AgentError;
use crate::analysis::Worker;
use crate::baseline::Baseline;
use crate::camera::{CameraHandle, CameraSet, CameraTask, StatusInfo, status_message};
use crate::config::{CameraConfig, Config};
use crate::crowd::CrowdWorker;
use crate::frames::{Counters, Doorbell, FrameSlot};
use crate::heartbeat::Heartbeat;
use crate::message::Outgoing;
use crate::metrics::{self, Metrics};
use crate::mqtt::{MqttStats, run_publisher};
use crate::outbox::Outbox;
use crate::persons::PERSON_HISTORY;
use crate::rules::CameraRules;

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
    let persons = if enabled().any(|c| c.needs_persons()) { Some(person_model(&rt, cfg)?) } else { None };
    let density = if enabled().any(|c| c.crowd.enabled) { Some(density_model(&rt, cfg)?) } else { None };
    Ok(Models { faces: load_faces(&rt, cfg)?, persons, density })
}

/// The density model alone (`edge-agent crowd-baseline`).
pub fn load_density(cfg: &Config) -> Result<DensityEstimator, AgentError> {
    density_model(&Runtime::new(&cfg.runtime)?, cfg)
}

fn person_model(rt: &Runtime, cfg: &Config) -> Result<PersonDetector, AgentError> {
    let mut p = PersonDetector::load(rt, &cfg.model_path(&cfg.crowd.person_model))?;
    p.threshold = cfg.crowd.person_threshold;
    Ok(p)
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

/// What the agent listens to while it runs.
pub struct Control {
    /// Turns true to stop the agent (SIGTERM, Ctrl-C).
    pub shutdown: watch::Receiver<bool>,
    /// One message per reload request (SIGHUP): the config is read again from `config_path`.
    pub reload: mpsc::Receiver<()>,
    pub config_path: Option<PathBuf>,
}

/// Runs the agent until every source has finished (files without `loop`) or shutdown.
pub async fn run(cfg: Config, clock: Arc<dyn Clock>, mut control: Control) -> Result<(), AgentError> {
    crate::decode::check_decoder(&cfg.decode.h264, "h264")?;
    crate::decode::check_decoder(&cfg.decode.h265, "h265")?;
    let models = load_models(&cfg)?;
    tracing::info!(
        cameras = cfg.cameras.len(),
        persons = models.persons.is_some(),
        density = models.density.is_some(),
        "models loaded"
    );
    let metrics_listener = match cfg.metrics.enabled {
        true => Some(
            tokio::net::TcpListener::bind(cfg.metrics.listen)
                .await
                .map_err(|source| AgentError::MetricsListen { addr: cfg.metrics.listen, source })?,
        ),
        false => None,
    };

    let outbox = Outbox::open(&cfg.mqtt.outbox, cfg.mqtt.outbox_max_bytes)?;
    let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
    let stats = Arc::new(MqttStats::default());
    let (camera_list, camera_list_rx) = watch::channel(camera_ids(&cfg));
    let publisher = tokio::spawn(run_publisher(
        cfg.mqtt.clone(),
        cfg.agent.clone(),
        clock.clone(),
        events_rx,
        stats.clone(),
        Duration::from_secs(10),
        camera_list_rx,
        outbox,
    ));

    let set = Arc::new(CameraSet::default());
    let heartbeat = Arc::new(Heartbeat::default());
    let metrics = Arc::new(Metrics::new(set.clone(), stats.clone(), heartbeat.clone()));
    let (stop_http, stop_http_rx) = watch::channel(false);
    if let Some(listener) = metrics_listener {
        let addr =
            listener.local_addr().map_err(|source| AgentError::MetricsListen { addr: cfg.metrics.listen, source })?;
        tracing::info!(url = %format!("http://{addr}"), "metrics and health endpoint listening (/metrics, /healthz)");
        let health = metrics::Health {
            metrics: metrics.clone(),
            cameras: set.clone(),
            mqtt: stats.clone(),
            heartbeat: heartbeat.clone(),
        };
        tokio::spawn(metrics::serve(listener, Arc::new(health), stop_http_rx));
    }

    let (ended, mut ended_rx) = mpsc::unbounded_channel();
    let mut sup = Supervisor {
        cfg: cfg.clone(),
        clock: clock.clone(),
        events: events.clone(),
        set: set.clone(),
        running: HashMap::new(),
        ended,
        bell: Arc::new(Doorbell::default()),
        crowd_bell: Arc::new(Doorbell::default()),
        done: Arc::new(AtomicBool::new(false)),
        persons_loaded: models.persons.is_some(),
        late_persons: Arc::default(),
        crowd: None,
        camera_list,
        metrics: metrics.clone(),
    };
    let handles =
        cfg.cameras.iter().filter(|c| c.enabled).map(|c| sup.handle(c)).collect::<Result<Vec<_>, AgentError>>()?;
    for c in cfg.cameras.iter().filter(|c| !c.enabled) {
        sup.publish_disabled(&c.id, None).await;
    }
    set.replace(handles.clone());
    for h in handles {
        sup.start(h);
    }

    let worker = Worker {
        site: cfg.agent.site.clone(),
        agent: cfg.agent.id.clone(),
        faces: models.faces,
        persons: models.persons,
        late_persons: sup.late_persons.clone(),
        cameras: set.clone(),
        tracker: cfg.tracker.clone(),
        bell: sup.bell.clone(),
        clock: clock.clone(),
        events: events.clone(),
        done: sup.done.clone(),
        heartbeat: heartbeat.clone(),
        metrics: metrics.clone(),
    };
    let worker =
        std::thread::Builder::new().name("analysis".into()).spawn(move || worker.run()).expect("spawn analysis thread");
    if let Some(density) = models.density {
        sup.start_crowd(density);
    }

    let reporter = tokio::spawn(report_status(
        cfg.agent.site.clone(),
        cfg.agent.id.clone(),
        set.clone(),
        clock.clone(),
        events.clone(),
        Duration::from_secs(cfg.mqtt.status_interval_s.max(1)),
    ));

    let watchdog = sd_notify::watchdog_enabled().map(|period| tokio::spawn(feed_watchdog(period, heartbeat.clone())));
    let _ = sd_notify::notify(&[NotifyState::Ready]);

    // Until every camera finished, or shutdown.
    loop {
        tokio::select! {
            Some(handle) = ended_rx.recv() => {
                if sup.finished(&handle) && sup.running.is_empty() {
                    tracing::info!("every source finished");
                    break;
                }
            }
            Some(()) = control.reload.recv() => {
                let _ = sd_notify::notify(&[NotifyState::Reloading]);
                sup.reload(control.config_path.as_deref()).await;
                let _ = sd_notify::notify(&[NotifyState::Ready]);
            }
            _ = control.shutdown.wait_for(|s| *s) => {
                tracing::info!("shutting down");
                sup.stop_all().await;
                break;
            }
        }
    }
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
    if let Some(w) = watchdog {
        w.abort();
    }
    sup.done.store(true, Ordering::Release);
    sup.bell.ring();
    sup.crowd_bell.ring();
    let crowd_worker = sup.crowd.take();
    tokio::task::spawn_blocking(move || {
        let _ = worker.join();
        if let Some(c) = crowd_worker {
            let _ = c.join();
        }
    })
    .await
    .ok();
    reporter.abort();
    for c in set.snapshot().iter() {
        let n = c.counters();
        tracing::info!(
            camera = %c.cfg.id,
            received = Counters::get(&n.received),
            decoded = Counters::get(&n.decoded),
            analyzed = Counters::get(&n.analyzed),
            dropped = Counters::get(&n.dropped),
            sightings = Counters::get(&n.sightings),
            "camera totals"
        );
    }
    drop(sup);
    drop(events);
    let _ = publisher.await;
    let _ = stop_http.send(true);
    tracing::info!(
        published = stats.published.load(Ordering::Relaxed),
        acked = stats.acked.load(Ordering::Relaxed),
        outbox = stats.outbox_depth.load(Ordering::Relaxed),
        evicted = stats.evicted.load(Ordering::Relaxed),
        "stopped"
    );
    Ok(())
}

/// The `cameras` of the agent status: every configured camera, disabled ones included.
fn camera_ids(cfg: &Config) -> Vec<String> {
    cfg.cameras.iter().map(|c| c.id.clone()).collect()
}

/// A running camera task.
struct Running {
    handle: Arc<CameraHandle>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Owns the camera tasks and the crowd worker; applies reloads.
struct Supervisor {
    /// The running configuration (camera sections as last applied).
    cfg: Config,
    clock: Arc<dyn Clock>,
    events: mpsc::Sender<Outgoing>,
    set: Arc<CameraSet>,
    running: HashMap<String, Running>,
    /// Camera tasks report their handle here when they end.
    ended: mpsc::UnboundedSender<Arc<CameraHandle>>,
    bell: Arc<Doorbell>,
    crowd_bell: Arc<Doorbell>,
    done: Arc<AtomicBool>,
    persons_loaded: bool,
    late_persons: Arc<Mutex<Option<PersonDetector>>>,
    crowd: Option<std::thread::JoinHandle<()>>,
    camera_list: watch::Sender<Vec<String>>,
    metrics: Arc<Metrics>,
}

/// Stopping a camera task takes at most this long (then it is aborted).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

impl Supervisor {
    /// A fresh handle for a camera (new tracker, rules and slots): fails on a bad baseline or rule.
    fn handle(&self, c: &CameraConfig) -> Result<Arc<CameraHandle>, AgentError> {
        let rules = CameraRules::new(&self.cfg.agent.site, &c.id, &c.zones, &c.rules, &c.health)
            .map_err(|source| AgentError::Rules { camera: c.id.clone(), source })?;
        let baseline = c.crowd.baseline.as_deref().map(Baseline::load).transpose()?;
        Ok(Arc::new(CameraHandle {
            cfg: c.clone(),
            slot: Arc::new(FrameSlot::new(Arc::new(Counters::default()), self.bell.clone())),
            crowd_slot: Arc::new(FrameSlot::new(Arc::new(Counters::default()), self.crowd_bell.clone())),
            status: Mutex::new(StatusInfo::new(CameraState::Connecting)),
            rules: Mutex::new(rules),
            persons: Mutex::new(VecDeque::with_capacity(PERSON_HISTORY)),
            correction: FloorCorrection {
                cell_threshold: self.cfg.crowd.cell_threshold,
                baseline: baseline.map(|b| b.cells),
                ..FloorCorrection::default()
            },
        }))
    }

    fn start(&mut self, handle: Arc<CameraHandle>) {
        let (stop, stop_rx) = watch::channel(false);
        let task = CameraTask {
            handle: handle.clone(),
            site: self.cfg.agent.site.clone(),
            agent: self.cfg.agent.id.clone(),
            decode: self.cfg.decode.clone(),
            clock: self.clock.clone(),
            events: self.events.clone(),
            shutdown: stop_rx,
        };
        let (me, ended) = (handle.clone(), self.ended.clone());
        let task = tokio::spawn(async move {
            task.run().await;
            let _ = ended.send(me);
        });
        self.running.insert(handle.cfg.id.clone(), Running { handle, stop, task });
    }

    fn start_crowd(&mut self, density: DensityEstimator) {
        let w = CrowdWorker {
            site: self.cfg.agent.site.clone(),
            density,
            cfg: self.cfg.crowd.clone(),
            cameras: self.set.clone(),
            bell: self.crowd_bell.clone(),
            events: self.events.clone(),
            done: self.done.clone(),
            metrics: self.metrics.clone(),
        };
        self.crowd =
            Some(std::thread::Builder::new().name("crowd".into()).spawn(move || w.run()).expect("spawn crowd thread"));
    }

    /// A camera task ended: whether it finished by itself (a task that was stopped, or replaced
    /// by a reload, has left `running` already).
    fn finished(&mut self, handle: &Arc<CameraHandle>) -> bool {
        let id = &handle.cfg.id;
        match self.running.get(id) {
            Some(r) if Arc::ptr_eq(&r.handle, handle) => {
                self.running.remove(id);
                true
            }
            _ => false,
        }
    }

    /// Stops a camera's task and clears the alerts it has raised (`reason` says why), so no
    /// episode stays open for consumers: a camera that comes back raises them again.
    async fn stop(&mut self, id: &str, reason: &str) {
        let Some(mut r) = self.running.remove(id) else { return };
        let _ = r.stop.send(true);
        if tokio::time::timeout(STOP_TIMEOUT, &mut r.task).await.is_err() {
            tracing::error!(camera = %id, "camera task did not stop in time: aborted");
            r.task.abort();
        }
        let cleared = r.handle.rules.lock().unwrap().clear_all(self.clock.now(), reason);
        for a in cleared {
            tracing::info!(camera = %id, alert = %a.alert, "{}", a.message);
            let _ = self.events.send(Outgoing::event(topic::alert(&self.cfg.agent.site, id), &a)).await;
        }
    }

    async fn stop_all(&mut self) {
        for r in self.running.values() {
            let _ = r.stop.send(true);
        }
        let ids: Vec<String> = self.running.keys().cloned().collect();
        for id in ids {
            let handle = self.running.get(&id).map(|r| r.handle.clone());
            self.stop(&id, "the agent stopped").await;
            if let Some(h) = handle {
                self.publish_stopped(&h).await;
            }
        }
    }

    /// A camera stopped with the agent: its retained status says so (not `streaming` from its
    /// last report); the status reporter, which reads the same state, cannot say otherwise later.
    async fn publish_stopped(&self, h: &CameraHandle) {
        let msg = {
            let mut st = h.status.lock().unwrap();
            st.state = CameraState::Offline;
            st.detail = Some("the agent stopped".into());
            status_message(&self.cfg.agent.site, &self.cfg.agent.id, &h.cfg.id, &st, self.clock.now(), None)
        };
        let _ = self.events.send(msg).await;
    }

    async fn publish_disabled(&self, camera: &str, detail: Option<&str>) {
        let mut st = StatusInfo::new(CameraState::Disabled);
        st.detail = detail.map(str::to_owned);
        let msg = status_message(&self.cfg.agent.site, &self.cfg.agent.id, camera, &st, self.clock.now(), None);
        let _ = self.events.send(msg).await;
    }

    /// Reads the config again and applies its camera changes; on any error the running
    /// configuration stays as it is.
    async fn reload(&mut self, path: Option<&Path>) {
        let Some(path) = path else {
            tracing::warn!("reload requested, but the agent was not started from a config file");
            return;
        };
        tracing::info!(config = %path.display(), "reloading the configuration");
        let result = match Config::load(path) {
            Ok(new) => self.apply(new).await,
            Err(e) => Err(e.into()),
        };
        self.metrics.reload(result.is_ok());
        if let Err(e) = result {
            tracing::error!(error = %e, "configuration reload rejected; the running configuration is unchanged");
        }
    }

    /// Starts, stops and restarts only the cameras whose configuration changed. Changes outside
    /// the `[[camera]]` tables take effect at the next restart (logged).
    async fn apply(&mut self, new: Config) -> Result<(), AgentError> {
        let old = &self.cfg;
        let sections = [
            ("agent", old.agent != new.agent),
            ("runtime", old.runtime != new.runtime),
            ("mqtt", old.mqtt != new.mqtt),
            ("faces", old.faces != new.faces),
            ("tracker", old.tracker != new.tracker),
            ("decode", old.decode != new.decode),
            ("crowd", old.crowd != new.crowd),
            ("metrics", old.metrics != new.metrics),
        ];
        for (section, _) in sections.iter().filter(|(_, changed)| *changed) {
            tracing::warn!(section, "configuration section changed: it takes effect at the next restart");
        }

        let wanted: Vec<&CameraConfig> = new.cameras.iter().filter(|c| c.enabled).collect();
        let unchanged: Vec<String> = wanted
            .iter()
            .filter(|c| self.running.get(&c.id).is_some_and(|r| &r.handle.cfg == **c))
            .map(|c| c.id.clone())
            .collect();
        // everything that can fail happens before anything is stopped
        let fresh = wanted
            .iter()
            .filter(|c| !unchanged.contains(&c.id))
            .map(|c| self.handle(c))
            .collect::<Result<Vec<_>, AgentError>>()?;
        let need_persons = !self.persons_loaded && fresh.iter().any(|h| h.cfg.needs_persons());
        let need_density = self.crowd.is_none() && fresh.iter().any(|h| h.cfg.crowd.enabled);
        let (persons, density) = if need_persons || need_density {
            let cfg = self.cfg.clone();
            tokio::task::spawn_blocking(move || -> Result<_, AgentError> {
                let rt = Runtime::new(&cfg.runtime)?;
                let persons = need_persons.then(|| person_model(&rt, &cfg)).transpose()?;
                let density = need_density.then(|| density_model(&rt, &cfg)).transpose()?;
                Ok((persons, density))
            })
            .await
            .expect("model loading panicked")?
        } else {
            (None, None)
        };
        if let Some(p) = persons {
            *self.late_persons.lock().unwrap() = Some(p);
            self.persons_loaded = true;
        }
        if let Some(d) = density {
            self.start_crowd(d);
        }

        let leaving: Vec<String> = self.running.keys().filter(|id| !unchanged.contains(id)).cloned().collect();
        for id in &leaving {
            let reason = match new.cameras.iter().find(|c| &c.id == id) {
                None => "removed from the configuration",
                Some(c) if !c.enabled => "disabled in the configuration",
                Some(_) => "the camera was reconfigured",
            };
            self.stop(id, reason).await;
        }
        for id in leaving.iter().filter(|id| !wanted.iter().any(|c| &c.id == *id)) {
            let detail = match new.cameras.iter().any(|c| &c.id == id) {
                true => "disabled in the configuration",
                false => "removed from the configuration",
            };
            self.publish_disabled(id, Some(detail)).await;
        }
        let kept: Vec<Arc<CameraHandle>> = self.running.values().map(|r| r.handle.clone()).collect();
        let set: Vec<Arc<CameraHandle>> =
            wanted.iter().filter_map(|c| kept.iter().chain(fresh.iter()).find(|h| h.cfg.id == c.id).cloned()).collect();
        self.set.replace(set);
        let started: Vec<String> = fresh.iter().map(|h| h.cfg.id.clone()).collect();
        for h in fresh {
            self.start(h);
        }
        tracing::info!(
            started = ?started,
            stopped = ?leaving.iter().filter(|id| !started.contains(id)).collect::<Vec<_>>(),
            unchanged = kept.len(),
            "configuration reloaded"
        );
        self.cfg.cameras = new.cameras;
        let _ = self.camera_list.send(camera_ids(&self.cfg));
        Ok(())
    }
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
    cameras: Arc<CameraSet>,
    clock: Arc<dyn Clock>,
    events: mpsc::Sender<Outgoing>,
    every: Duration,
) {
    // (decoded, analysed) at the previous report, per camera handle
    let mut last: HashMap<usize, (u64, u64)> = HashMap::new();
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let set = cameras.snapshot();
        last.retain(|k, _| set.iter().any(|c| Arc::as_ptr(c) as usize == *k));
        for c in set.iter() {
            let prev = last.entry(Arc::as_ptr(c) as usize).or_default();
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
