//! [`ApiState`]: what every handler of the API serves from.

use std::sync::{Arc, Mutex, RwLock};

use sightline_contract::Clock;

use crate::alerts::AlertPublisher;
use crate::config::SearchConfig;
use crate::events::Events;
use crate::latest::LatestCrowd;
use crate::metrics::Metrics;
use crate::search::SearchIndex;
use crate::sites::Sites;
use crate::store::Store;
use crate::watchlist::{Watchlist, WatchlistConfig};

/// What the API serves from.
pub struct ApiState {
    pub store: Arc<dyn Store>,
    /// The time of audit records and of default time windows.
    pub clock: Arc<dyn Clock>,
    /// The sites and their tree: what a token may see, camera positions and the georeferences
    /// (GeoJSON, WGS84 positions).
    pub sites: Arc<Sites>,
    pub metrics: Arc<Metrics>,
    /// What the ingest thread stores, live (`GET /events`).
    pub events: Events,
    /// Each camera's latest crowd measurement with its density grid, from the ingest thread
    /// (`GET /cameras`; the store keeps no grid).
    pub latest_crowd: LatestCrowd,
    /// The embeddings inside the retention window (`POST /search`).
    pub index: Arc<RwLock<SearchIndex>>,
    /// The face pipeline for photos, or why there is none.
    pub faces: Result<Arc<Mutex<sightline_vision::FacePipeline>>, String>,
    pub watchlist: Arc<Watchlist>,
    /// Where clears of removed watchlist entries go.
    pub alerts: Arc<AlertPublisher>,
    pub search: SearchConfig,
    /// Photos in progress (`super::photos`).
    pub photos: super::photos::PhotoGate,
    /// Ends the live event streams at shutdown (`None`: they end when the client leaves).
    pub shutdown: Option<tokio::sync::watch::Receiver<bool>>,
}

impl ApiState {
    /// A state on `store` with an empty search index and watchlist, no face pipeline and live
    /// events nobody publishes; `aggregator run` fills these in.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, sites: Arc<Sites>) -> Self {
        let events = Events::default();
        let model = sightline_vision::EMBEDDING_MODEL;
        Self {
            alerts: Arc::new(AlertPublisher::new(store.clone(), events.clone(), None, clock.clone())),
            watchlist: Arc::new(Watchlist::empty(WatchlistConfig::default())),
            index: Arc::new(RwLock::new(SearchIndex::new(model, sightline_vision::EMBEDDING_DIM))),
            faces: Err("no face models loaded".into()),
            metrics: Arc::new(Metrics::new()),
            search: SearchConfig::default(),
            photos: super::photos::PhotoGate::default(),
            shutdown: None,
            latest_crowd: LatestCrowd::default(),
            events,
            store,
            clock,
            sites,
        }
    }
}
