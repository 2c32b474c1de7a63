//! One node's ownership of sites: every `claim_every_s` it surveys the nodes and the sites'
//! holders in PostgreSQL, hands over a site when it holds more than its share, and takes free
//! sites while it holds fewer. Taking a site: its lock, then its correlator rebuilt from the store
//! (on the ingest thread), then its MQTT session. Handing it over: the session stops, the ingest
//! thread finishes what it queued of the site and drops the correlator, then the lock is
//! released, so that the next owner's rebuild sees every sighting this node stored.
//!
//! One node at a time also holds the retention lock: it purges the shared store and expires the
//! watchlist (`crate::retention`).
//!
//! Runs on a thread of its own: the lock connection is a blocking client.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sightline_contract::Clock;
use tokio::sync::{mpsc, oneshot, watch};

use crate::ingest::Work;
use crate::metrics::Metrics;
use crate::store::postgres::locks::{RETENTION_KEY, SiteLocks, site_key};
use crate::store::{PgTarget, Store};
use crate::watchlist::Watchlist;

/// Starts a site's MQTT session feeding the ingest thread; it ends when the sender turns true.
pub type SessionFactory = Box<dyn Fn(&str, watch::Receiver<bool>) -> tokio::task::JoinHandle<()> + Send>;

/// A site this node owns: its session's stop switch and task.
struct Owned {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// One node's ownership loop.
pub struct Node {
    pub name: String,
    pub every: Duration,
    pub target: PgTarget,
    /// The sites with cameras: the ones a node correlates.
    pub sites: Vec<String>,
    pub work: mpsc::Sender<Work>,
    pub sessions: SessionFactory,
    pub runtime: tokio::runtime::Handle,
    /// The sites owned now, read by the follower.
    pub owned: Arc<RwLock<BTreeSet<String>>>,
    pub store: Arc<dyn Store>,
    pub watchlist: Arc<Watchlist>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    /// Set while this node holds the retention lock (read by the retention job).
    pub elected: Arc<AtomicBool>,
}

/// The node's state between rounds.
struct State {
    locks: Option<SiteLocks>,
    held: BTreeMap<String, Owned>,
    /// The last failure was logged (logged once until things work again).
    warned: bool,
}

impl Node {
    /// Starts the loop on a thread; it hands every site over and ends when `stop` is dropped.
    pub fn spawn(self, stop: std::sync::mpsc::Receiver<()>) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("cluster".into())
            .spawn(move || self.run(stop))
            .expect("spawn the cluster thread")
    }

    fn run(self, stop: std::sync::mpsc::Receiver<()>) {
        let mut st = State { locks: None, held: BTreeMap::new(), warned: false };
        tracing::info!(node = %self.name, sites = self.sites.len(), "cluster node: claiming its share of the sites");
        loop {
            self.round(&mut st);
            match stop.recv_timeout(self.every) {
                Err(RecvTimeoutError::Timeout) => continue,
                _ => break,
            }
        }
        // leaving: hand every site over at once, so that the other nodes need not wait
        let sites: Vec<String> = st.held.keys().cloned().collect();
        for site in sites {
            self.hand_over(&mut st, &site, true);
        }
        tracing::info!(node = %self.name, "cluster node: every site handed over");
    }

    /// This node's sites in its order of preference (highest random weight first): each site
    /// prefers a different node, so nodes starting together spread the sites without talking.
    fn ranked(&self) -> Vec<&String> {
        let mut ranked: Vec<&String> = self.sites.iter().collect();
        ranked.sort_by_key(|s| std::cmp::Reverse(site_key(&format!("{}/{s}", self.name))));
        ranked
    }

    fn round(&self, st: &mut State) {
        if st.locks.is_none() {
            match SiteLocks::connect(&self.target, &self.name) {
                Ok(l) => st.locks = Some(l),
                Err(e) => {
                    if !st.warned {
                        tracing::error!(node = %self.name, error = %e, "cluster node: cannot reach PostgreSQL to claim sites; retrying");
                        st.warned = true;
                    }
                    return;
                }
            }
        }
        let survey = match st.locks.as_mut().map(SiteLocks::survey) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                // the connection, and every lock on it, is gone: another node may own our sites now
                tracing::error!(node = %self.name, error = %e, held = st.held.len(), "cluster node: lost its PostgreSQL session; stopping the ingest of every site it held");
                st.locks = None;
                self.elected.store(false, Ordering::Relaxed);
                let sites: Vec<String> = st.held.keys().cloned().collect();
                for site in sites {
                    self.hand_over(st, &site, false);
                }
                return;
            }
            None => return,
        };
        if st.warned {
            tracing::info!(node = %self.name, "cluster node: PostgreSQL reachable again");
            st.warned = false;
        }
        self.metrics.cluster_nodes.set(survey.nodes.len() as i64);
        let share = self.sites.len().div_ceil(survey.nodes.len().max(1));
        if st.held.len() > share {
            // one per round, the least preferred first: the others take it on their next round
            if let Some(site) = self.ranked().into_iter().rev().find(|s| st.held.contains_key(*s)).cloned() {
                tracing::info!(node = %self.name, %site, share, "cluster node: handing a site over to balance the nodes");
                self.hand_over(st, &site, true);
            }
        } else {
            for site in self.ranked() {
                if st.held.len() >= share {
                    break;
                }
                // (a site whose key collides with one this node holds is this node's too: the
                // lock is re-entrant, and no other node can take it)
                let elsewhere = survey.owners.get(&site_key(site)).is_some_and(|n| *n != self.name);
                if st.held.contains_key(site) || elsewhere {
                    continue;
                }
                self.take(st, site);
            }
        }
        if !self.elected.load(Ordering::Relaxed)
            && let Some(Ok(true)) = st.locks.as_mut().map(|l| l.try_take(RETENTION_KEY))
        {
            tracing::info!(node = %self.name, "cluster node: runs the retention job of the cluster");
            self.elected.store(true, Ordering::Relaxed);
        }
        if let Err(e) = self.watchlist.reload(self.store.as_ref(), self.clock.now()) {
            tracing::warn!(error = %e, "the watchlist was not reread from the store");
        }
        self.metrics.sites_owned.set(st.held.len() as i64);
    }

    /// Takes `site` if its lock is free: its correlator rebuilt, then its session started.
    fn take(&self, st: &mut State, site: &str) {
        let Some(locks) = st.locks.as_mut() else { return };
        let key = site_key(site);
        match locks.try_take(key) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(%site, error = %e, "cluster node: could not take a site's lock");
                return;
            }
        }
        let (done, rebuilt) = oneshot::channel();
        let restored = self
            .work
            .blocking_send(Work::Take { site: site.to_owned(), done })
            .ok()
            .and_then(|_| rebuilt.blocking_recv().ok());
        match restored {
            Some(Ok(sightings)) => {
                let (stop, stopped) = watch::channel(false);
                let task = (self.sessions)(site, stopped);
                st.held.insert(site.to_owned(), Owned { stop, task });
                self.owned.write().unwrap().insert(site.to_owned());
                tracing::info!(node = %self.name, %site, sightings, "cluster node: site owned");
            }
            failed => {
                if let Some(Err(e)) = failed {
                    tracing::error!(%site, error = %e, "cluster node: the site's correlator could not be rebuilt; the site is left to a later round");
                }
                let _ = locks.release(key);
            }
        }
    }

    /// Stops ingesting `site`: its session ends, the ingest thread finishes what it queued and
    /// drops the correlator; then its lock is released (`release`, when the lock is still held).
    fn hand_over(&self, st: &mut State, site: &str, release: bool) {
        let Some(owned) = st.held.remove(site) else { return };
        self.owned.write().unwrap().remove(site);
        let _ = owned.stop.send(true);
        let _ = self.runtime.block_on(owned.task);
        let (done, finished) = oneshot::channel();
        if self.work.blocking_send(Work::HandOver { site: site.to_owned(), done }).is_ok() {
            let _ = finished.blocking_recv();
        }
        if let (true, Some(locks)) = (release, st.locks.as_mut())
            && let Err(e) = locks.release(site_key(site))
        {
            tracing::warn!(%site, error = %e, "cluster node: a site's lock was not released (it ends with the session)");
        }
        self.metrics.sites_owned.set(st.held.len() as i64);
    }
}
