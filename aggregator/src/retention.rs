//! The retention job: deletes what the retention policy no longer allows from the store and
//! from the search index, compacts the store now and then, and tells the ingest thread to forget
//! what is past the correlation horizon and to expire watchlist entries. Of the nodes of a
//! cluster, one at a time purges the shared store and expires the watchlist (`crate::cluster`);
//! every node drops what expired from its own index and correlators.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sightline_contract::Clock;
use tokio::sync::mpsc;

use crate::ingest::Work;
use crate::metrics::Metrics;
use crate::search::SearchIndex;
use crate::store::{RetentionPolicy, Store, StoreError};

/// What the retention job works on.
pub struct Retention {
    pub store: Arc<dyn Store>,
    pub policy: RetentionPolicy,
    pub every: Duration,
    /// Zero: never compact.
    pub compact_every: Duration,
    /// The correlation horizon: the ingest thread keeps twice as much in memory.
    pub horizon: time::Duration,
    pub clock: Arc<dyn Clock>,
    pub work: mpsc::Sender<Work>,
    pub index: Arc<RwLock<SearchIndex>>,
    pub metrics: Arc<Metrics>,
    /// On a node of a cluster: set while this node is the one that purges the shared store and
    /// expires the watchlist; `None`: this process always does.
    pub elected: Option<Arc<AtomicBool>>,
}

/// Deletes what the retention policy no longer allows (at start, then every `every`), from the
/// store and the search index; compacts the store every `compact_every`; has the correlator
/// forget trajectories past the horizon and the watchlist its expired entries.
pub async fn run(r: Retention) {
    let mut tick = tokio::time::interval(r.every);
    let mut last_compaction = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let now = r.clock.now();
        // (on a node of a cluster that is not elected, another node purges the shared store)
        let elected = r.elected.as_ref().is_none_or(|e| e.load(Ordering::Relaxed));
        if elected {
            let compact = !r.compact_every.is_zero() && last_compaction.elapsed() >= r.compact_every;
            if purge(&r, now, compact).await && compact {
                last_compaction = tokio::time::Instant::now();
            }
        }
        // the index holds what the store holds: the same cutoff
        let cutoff = RetentionPolicy::cutoff(now, r.policy.sightings_days);
        let removed = {
            let mut index = r.index.write().unwrap();
            let removed = index.remove_before(cutoff);
            r.metrics.search_index_embeddings.set(index.len() as i64);
            removed
        };
        if removed > 0 {
            tracing::info!(removed, "retention: embeddings dropped from the search index");
        }
        // a sighting replayed late (an edge outbox after an outage) may still join a trajectory
        // that ended up to one horizon before it: keep twice the horizon in memory
        if r.work.send(Work::Tick { forget: now - r.horizon * 2, expire: elected }).await.is_err() {
            return;
        }
    }
}

/// Purges the store (and compacts it when `compact`); whether it succeeded.
async fn purge(r: &Retention, now: time::OffsetDateTime, compact: bool) -> bool {
    let (store, policy) = (r.store.clone(), r.policy);
    let run = tokio::task::spawn_blocking(move || {
        let report = store.purge(now, &policy)?;
        if compact {
            let start = std::time::Instant::now();
            store.compact()?;
            tracing::info!(took = ?start.elapsed(), "store compacted");
        }
        Ok::<_, StoreError>(report)
    });
    match run.await {
        Ok(Ok(report)) => {
            tracing::info!(?report, "retention: expired data deleted");
            for (what, n) in report.counts() {
                r.metrics.retention_deleted(what, n);
            }
            r.metrics.retention_last_run.set(now.unix_timestamp() as f64);
            true
        }
        Ok(Err(e)) => {
            r.metrics.retention_failures.inc();
            tracing::error!(error = %e, "retention job failed");
            false
        }
        Err(e) => {
            r.metrics.retention_failures.inc();
            tracing::error!(error = %e, "retention job panicked");
            false
        }
    }
}
