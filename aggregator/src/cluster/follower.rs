//! What other nodes store, as this node learns it from the broker: for a site another node owns,
//! its trajectory updates (each checked against the store: the sighting must be stored, on that
//! trajectory, before it reaches the live events and the search index), crowd measurements,
//! alerts and statuses reach this node's live events and latest crowd as they would on the
//! owner. A site this node owns is skipped: its ingest announces it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use rumqttc::Publish;
use sightline_contract::{Alert, Clock, Payload, TOPIC_ROOT, Trajectory, topic};
use tokio::sync::mpsc;

use crate::events::Events;
use crate::ingest::{self, Incoming, Rejected, Work};
use crate::latest::LatestCrowd;
use crate::plausible::Plausibility;
use crate::search::SearchIndex;
use crate::store::{Store, StoredSighting};

/// Messages followed at most per read of the store.
pub const BATCH: usize = 256;

/// What a message is to the follower.
enum Followed<'a> {
    /// Of a site this node owns, or not understood.
    Skip,
    /// Another node's trajectory update of `site`.
    Update(&'a str, Box<Trajectory>),
    /// Another node's site's crowd, alert or status.
    Other(&'a Publish),
}

/// The follower of a node of a cluster.
pub struct Follower {
    pub store: Arc<dyn Store>,
    /// The sites this node owns now ([`super::Node`]).
    pub owned: Arc<RwLock<BTreeSet<String>>>,
    pub events: Events,
    pub latest_crowd: LatestCrowd,
    pub index: Arc<RwLock<SearchIndex>>,
    pub plausible: Plausibility,
    pub max_bytes: usize,
    pub clock: Arc<dyn Clock>,
}

impl Follower {
    /// The topic filters the follower subscribes to: what an owner stores and announces.
    pub fn subscriptions() -> Vec<String> {
        let mut filters: Vec<String> =
            ingest::subscriptions(None).into_iter().filter(|f| !f.ends_with("/sighting")).collect();
        filters.push(format!("{TOPIC_ROOT}/+/trajectory"));
        filters
    }

    /// Follows the messages `rx` brings until every sender is gone, as many as are waiting (up
    /// to [`BATCH`]) at a time.
    pub async fn run(self, mut rx: mpsc::Receiver<Work>) {
        let mut batch: Vec<Publish> = Vec::with_capacity(BATCH);
        while let Some(w) = rx.recv().await {
            let mut next = Some(w);
            while let Some(w) = next {
                if let Work::Message(p, ..) = w {
                    batch.push(p);
                }
                next = if batch.len() < BATCH { rx.try_recv().ok() } else { None };
            }
            // (the PostgreSQL store's blocking client steps off the async threads itself)
            self.follow(&batch);
            batch.clear();
        }
    }

    /// Follows messages in order; the sightings of their trajectory updates are read from the
    /// store in one call.
    fn follow(&self, messages: &[Publish]) {
        let followed: Vec<Followed<'_>> = {
            let owned = self.owned.read().unwrap();
            messages
                .iter()
                .map(|p| match ingest::site_of(&p.topic) {
                    // a site this node owns: its ingest announces it
                    None => Followed::Skip,
                    Some(site) if owned.contains(site) => Followed::Skip,
                    Some(site) if p.topic == topic::trajectory(site) => match Trajectory::from_json(&p.payload) {
                        Ok(t) => Followed::Update(site, Box::new(t)),
                        Err(_) => Followed::Skip,
                    },
                    Some(_) => Followed::Other(p),
                })
                .collect()
        };
        let ids: Vec<uuid::Uuid> = followed
            .iter()
            .filter_map(|f| if let Followed::Update(_, t) = f { Some(t.sighting) } else { None })
            .collect();
        let stored: HashMap<uuid::Uuid, StoredSighting> = if ids.is_empty() {
            HashMap::new()
        } else {
            match self.store.sightings(&ids) {
                Ok(found) => found.into_iter().map(|s| (s.sighting.id, s)).collect(),
                Err(e) => {
                    tracing::warn!(updates = ids.len(), error = %e, "trajectory updates not followed: the store did not answer");
                    HashMap::new()
                }
            }
        };
        for f in followed {
            match f {
                Followed::Skip => {}
                Followed::Update(site, update) => {
                    let found = stored.get(&update.sighting);
                    self.trajectory(site, *update, found);
                }
                Followed::Other(p) => self.other(p),
            }
        }
    }

    /// A message of another node's site other than a trajectory update.
    fn other(&self, p: &Publish) {
        match ingest::parse(&p.topic, &p.payload, self.max_bytes, &self.plausible, self.clock.now()) {
            Ok((_, Incoming::Crowd(c))) => {
                self.latest_crowd.update(&c);
                self.events.crowd(&c);
            }
            Ok((_, Incoming::Alert(a))) => self.events.alert(&a),
            Ok((_, Incoming::CameraStatus(s))) => self.events.camera_status(&s),
            Ok((_, Incoming::AgentStatus(s))) => self.events.agent_status(&s),
            // an aggregator's own alert, raised by the site's owner: believed once stored
            Err(Rejected::AggregatorOnly { id, .. }) if self.store.seen(id).unwrap_or(false) => {
                if let Ok(a) = Alert::from_json(&p.payload) {
                    self.events.alert(&a);
                }
            }
            Ok((_, Incoming::Sighting(_))) | Err(_) => {}
        }
    }

    /// A trajectory update of `site`: announced and indexed when the store holds its sighting
    /// (`stored`) on that trajectory, or on the one it was merged into since.
    fn trajectory(&self, site: &str, update: Trajectory, stored: Option<&StoredSighting>) {
        // (a sighting's trajectory may have been merged into another since: then it is there)
        let moved_on = |s: &StoredSighting| matches!(self.store.merged_into(update.trajectory), Ok(Some(into)) if into == s.trajectory);
        let Some(stored) =
            stored.filter(|s| s.sighting.site == site && (s.trajectory == update.trajectory || moved_on(s)))
        else {
            tracing::debug!(sighting = %update.sighting, "trajectory update of a sighting not stored so: ignored");
            return;
        };
        let s = &stored.sighting;
        self.events.sighting(s);
        self.events.trajectory(&update);
        let mut index = self.index.write().unwrap();
        if index.model() == s.model
            && let Err(e) = index.insert(s.id, &s.site, &s.camera, s.last_seen, &s.embedding)
        {
            tracing::warn!(sighting = %s.id, error = %e, "sighting not indexed for search");
        }
    }
}
