//! `aggregator run`: the embedded broker (optional), the store, the correlator rebuilt from the
//! store, MQTT ingest (`crate::ingest`), trajectory updates published back on MQTT, the HTTP API
//! and the retention job (`crate::retention`), wired together. Nothing here but the start-up
//! order and the shutdown.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rumqttc::AsyncClient;
use sightline_contract::Clock;
use tokio::sync::{mpsc, watch};

use crate::alerts::AlertPublisher;
use crate::config::Config;
use crate::correlate::{Observation, SiteCorrelators};
use crate::events::Events;
use crate::ingest::{self, Ingest};
use crate::metrics::{Metrics, Outcome};
use crate::retention::{self, Retention};
use crate::search::SearchIndex;
use crate::store::Store;
use crate::watchlist::Watchlist;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
    #[error("site model: `{}`: {}", .0.key, .0.reason)]
    Site(crate::site::SiteError),
    #[error("HTTP API: cannot listen on {addr}: {source} (set [http] listen)")]
    HttpListen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Runs until `shutdown` turns true.
pub async fn run(cfg: Config, clock: Arc<dyn Clock>, mut shutdown: watch::Receiver<bool>) -> Result<(), ServiceError> {
    // SQLite or PostgreSQL (whose blocking client steps off the async threads itself)
    let location = cfg.store.location();
    let store: Arc<dyn Store> = location.open()?;
    let sites = Arc::new(cfg.sites().map_err(ServiceError::Site)?);
    // an SQLite file is this aggregator's own: its tree follows the config; a PostgreSQL database
    // may be shared, and holds one tree
    store.claim_sites(&sites.rows(), matches!(location, crate::store::StoreLocation::Sqlite(_)))?;
    for (site, c) in cfg.all_cameras() {
        store.put_camera(site, &c.id, Some(c.position))?;
    }
    let horizon = time::Duration::seconds_f64(cfg.correlation.horizon_s);
    // as much as a running correlator may hold: the retention job makes it forget trajectories
    // two horizons old each time it runs (`crate::retention`)
    let replay = horizon * 2 + time::Duration::seconds(cfg.store.retention_every_s.min(7 * 86_400) as i64);
    let metrics = Arc::new(Metrics::new());
    // on a node of a cluster, sites are taken one by one (`crate::cluster`); otherwise every
    // site's correlator replays its trajectories now
    let correlators = match &cfg.cluster {
        Some(_) => SiteCorrelators::none(&cfg.correlation, &sites).map_err(ServiceError::Site)?,
        None => {
            let (c, replayed) = restore_all(&cfg, &sites, store.as_ref(), clock.now() - replay)?;
            tracing::info!(
                store = %location,
                sites = sites.len(),
                sightings = replayed,
                trajectories = c.live(),
                "correlators restored from the store"
            );
            metrics.sites_owned.set(sites.iter().filter(|s| !s.model.cameras().is_empty()).count() as i64);
            c
        }
    };
    metrics.live_trajectories.set(correlators.live() as i64);

    // the search index loads from the store beside ingest (searches wait for it: `search/load.rs`)
    let since = crate::store::RetentionPolicy::cutoff(clock.now(), cfg.retention.sightings_days);
    let mut index = SearchIndex::new(sightline_vision::EMBEDDING_MODEL, sightline_vision::EMBEDDING_DIM);
    index.begin_load();
    let index = Arc::new(RwLock::new(index));
    {
        let (index, store, metrics) = (index.clone(), store.clone(), metrics.clone());
        tokio::task::spawn_blocking(move || match SearchIndex::load_into(&index, store.as_ref(), since) {
            Ok(r) => {
                let len = index.read().unwrap().len();
                metrics.search_index_embeddings.set(len as i64);
                let per_s = (r.loaded as f64 / r.seconds.max(1e-9)).round();
                tracing::info!(
                    loaded = r.loaded,
                    skipped = r.skipped,
                    seconds = r.seconds,
                    per_s,
                    embeddings = len,
                    "search index loaded"
                );
            }
            Err(e) => tracing::error!(error = %e, "search index NOT loaded: searches are refused until a restart"),
        });
    }
    let watchlist = Arc::new(Watchlist::load(store.as_ref(), cfg.watchlist.clone(), clock.now())?);
    metrics.watchlist_entries.set(watchlist.len() as i64);
    let liveness = crate::liveness::Liveness::load(store.as_ref())?;
    let faces = load_faces(&cfg);
    if let Err(e) = &faces {
        tracing::warn!(error = %e, "photos cannot be embedded: POST /search and the watchlist take embeddings only");
    }
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .map_err(|source| ServiceError::HttpListen { addr: cfg.http.listen, source })?;
    let events = Events::default();
    let latest_crowd = crate::latest::LatestCrowd::default();

    if cfg.broker.embedded {
        crate::broker::start(&cfg, metrics.clone()).await?;
    }
    let (host, port) = cfg.mqtt_address();
    // TLS and credentials (`[mqtt] username`, `password_file`, `[mqtt.tls]`): the edge agent's
    // implementation, shared in the contract crate; the files are read once, at start
    let security = crate::config::BrokerSecurity::load(&cfg.mqtt).map_err(crate::config::ConfigError::from)?;
    // one persistent session ingesting every site; on a node of a cluster, the node's own clean
    // session (what other nodes announce, what this one publishes), each owned site having its
    // persistent session (`crate::cluster`)
    let opts = match &cfg.cluster {
        None => ingest::options(&cfg, &security, &cfg.mqtt.client_id, false),
        Some(c) => ingest::options(&cfg, &security, &format!("{}-{}", cfg.mqtt.client_id, c.node), true),
    };
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if security.username().is_some() && !security.tls() && !loopback {
        tracing::warn!("mqtt.username without [mqtt.tls]: the password crosses the network in clear text");
    }
    tracing::info!(%host, port, tls = security.tls(), user = security.username().unwrap_or("-"), "MQTT client");
    let (client, mut eventloop) = AsyncClient::new(opts, ingest::QUEUE);
    let alerts = Arc::new(AlertPublisher::new(store.clone(), events.clone(), Some(client.clone()), clock.clone()));

    let api = crate::api::ApiState {
        metrics: metrics.clone(),
        events: events.clone(),
        index: index.clone(),
        faces: faces.map(|f| Arc::new(Mutex::new(f))).map_err(|e| e.to_string()),
        watchlist: watchlist.clone(),
        alerts: alerts.clone(),
        search: cfg.search.clone(),
        shutdown: Some(shutdown.clone()),
        latest_crowd: latest_crowd.clone(),
        ..crate::api::ApiState::new(store.clone(), clock.clone(), sites.clone())
    };
    let url = listener.local_addr().map(|a| format!("http://{a}/api/v1")).unwrap_or_default();
    let http = tokio::spawn(crate::api::serve(listener, Arc::new(api), shutdown.clone()));
    tracing::info!(%url, "HTTP API listening");
    if crate::api::ui::BUILT {
        tracing::info!("operator dashboard served at /");
    } else {
        tracing::warn!(
            "the operator dashboard was not built into this aggregator (run scripts/setup.sh, then rebuild): / serves a placeholder"
        );
    }

    let (work, work_rx) = mpsc::channel(ingest::QUEUE);
    let plausible = crate::plausible::Plausibility::new(
        cfg.ingest.clone(),
        cfg.retention,
        cfg.all_cameras().map(|(site, c)| (site.to_owned(), c.id.clone())),
    );
    let owned = Arc::new(RwLock::new(std::collections::BTreeSet::new()));
    let follower = crate::cluster::Follower {
        store: store.clone(),
        owned: owned.clone(),
        events: events.clone(),
        latest_crowd: latest_crowd.clone(),
        index: index.clone(),
        plausible: plausible.clone(),
        max_bytes: cfg.broker.max_payload_bytes,
        clock: clock.clone(),
    };
    let node_watchlist = watchlist.clone();
    let ingest = Ingest {
        max_bytes: cfg.broker.max_payload_bytes,
        plausible,
        store: store.clone(),
        correlators,
        owned_sites_only: cfg.cluster.is_some(),
        replay,
        client: client.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
        events,
        latest_crowd,
        index: index.clone(),
        watchlist,
        alerts,
        liveness,
        batch: Default::default(),
    };
    let ingest = ingest.spawn(work_rx);

    let elected = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let retention = tokio::spawn(retention::run(Retention {
        store: store.clone(),
        policy: cfg.retention,
        every: Duration::from_secs(cfg.store.retention_every_s),
        compact_every: Duration::from_secs(cfg.store.compact_every_h * 3600),
        horizon,
        clock: clock.clone(),
        work: work.clone(),
        index,
        metrics: metrics.clone(),
        elected: cfg.cluster.is_some().then(|| elected.clone()),
    }));

    let broker = format!("{host}:{port}");
    let mut node = None;
    match &cfg.cluster {
        None => {
            let subscriptions = ingest::subscriptions(None);
            let deliver = ingest::Deliver::Wait(&work);
            ingest::receive(&mut eventloop, &client, &subscriptions, &broker, deliver, &metrics, &mut shutdown).await;
        }
        Some(c) => {
            let crate::store::StoreLocation::Postgres { url, password_file } = &location else {
                unreachable!("[cluster] needs store.url (Config::parse)")
            };
            let password = password_file.as_deref().map(crate::store::read_password_file).transpose()?;
            let (stop, stopped) = std::sync::mpsc::channel::<()>();
            let sessions = session_factory(&cfg, &security, &broker, &work, &metrics);
            node = Some((
                stop,
                crate::cluster::Node {
                    name: c.node.clone(),
                    every: Duration::from_secs_f64(c.claim_every_s),
                    target: crate::store::PgTarget::new(url, password.as_deref())?,
                    sites: sites.iter().filter(|s| !s.model.cameras().is_empty()).map(|s| s.id().to_owned()).collect(),
                    work: work.clone(),
                    sessions,
                    runtime: tokio::runtime::Handle::current(),
                    owned,
                    store: store.clone(),
                    watchlist: node_watchlist,
                    clock: clock.clone(),
                    metrics: metrics.clone(),
                    elected,
                }
                .spawn(stopped),
            ));
            // (bounded: 16,384 announcements of at most `ingest.max_message_bytes` each)
            let (follow, follow_rx) = mpsc::channel(16 * ingest::QUEUE);
            let following = tokio::spawn(follower.run(follow_rx));
            let subscriptions = crate::cluster::Follower::subscriptions();
            let deliver = ingest::Deliver::OrDrop(&follow, &metrics.follower_dropped);
            ingest::receive(&mut eventloop, &client, &subscriptions, &broker, deliver, &metrics, &mut shutdown).await;
            drop(follow);
            let _ = following.await;
        }
    }
    tracing::info!("shutting down");
    retention.abort();
    let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    if let Some((stop, thread)) = node {
        // every owned site handed over (its session ended, its messages stored), before ingest ends
        drop(stop);
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    drop(work);
    let _ = tokio::task::spawn_blocking(move || ingest.join()).await;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(500), eventloop.poll()).await;
    tracing::info!(
        accepted = metrics.total(Outcome::Accepted),
        duplicates = metrics.total(Outcome::Duplicate),
        rejected = metrics.total(Outcome::Rejected),
        failed = metrics.total(Outcome::Failed),
        "stopped"
    );
    Ok(())
}

/// Starts one owned site's persistent MQTT session (`{mqtt.client_id}-{site}`), feeding `work`.
fn session_factory(
    cfg: &Config,
    security: &crate::config::BrokerSecurity,
    broker: &str,
    work: &mpsc::Sender<ingest::Work>,
    metrics: &Arc<Metrics>,
) -> crate::cluster::SessionFactory {
    let (cfg, security, broker, work, metrics) =
        (cfg.clone(), security.clone(), broker.to_owned(), work.clone(), metrics.clone());
    // (called from the cluster thread, outside the runtime)
    let runtime = tokio::runtime::Handle::current();
    Box::new(move |site: &str, mut stop: watch::Receiver<bool>| {
        let opts = ingest::options(&cfg, &security, &format!("{}-{site}", cfg.mqtt.client_id), false);
        let (client, mut eventloop) = AsyncClient::new(opts, ingest::QUEUE);
        let subscriptions = ingest::subscriptions(Some(site));
        let (broker, work, metrics) = (broker.clone(), work.clone(), metrics.clone());
        runtime.spawn(async move {
            let deliver = ingest::Deliver::Wait(&work);
            ingest::receive(&mut eventloop, &client, &subscriptions, &broker, deliver, &metrics, &mut stop).await;
            let _ = client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_millis(500), eventloop.poll()).await;
        })
    })
}

/// Every site's correlator, replaying the trajectories seen since `since`; with how many sightings.
fn restore_all(
    cfg: &Config,
    sites: &crate::sites::Sites,
    store: &dyn Store,
    since: time::OffsetDateTime,
) -> Result<(SiteCorrelators, usize), ServiceError> {
    let mut correlators = SiteCorrelators::new(&cfg.correlation, sites).map_err(ServiceError::Site)?;
    let replay = store.sightings_for_replay(since, None)?;
    let mut elsewhere = 0usize;
    for s in &replay {
        if !correlators.restore(&s.sighting.site, Observation::from_sighting(&s.sighting), s.trajectory) {
            elsewhere += 1;
        }
    }
    if elsewhere > 0 {
        tracing::warn!(sightings = elsewhere, "stored sightings of sites no longer in the config were not restored");
    }
    Ok((correlators, replay.len()))
}

/// The face pipeline for photos (`[faces]`, `[runtime]`).
fn load_faces(cfg: &Config) -> Result<sightline_vision::FacePipeline, sightline_vision::VisionError> {
    let rt = sightline_vision::Runtime::new(&cfg.runtime)?;
    let mut faces = sightline_vision::FacePipeline::load(&rt, &cfg.faces.model_dir, &cfg.faces.detector)?;
    faces.min_face_px = cfg.faces.min_face_px;
    Ok(faces)
}
