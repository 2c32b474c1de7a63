//! Prometheus `/metrics` of the aggregator (OpenMetrics text), served on the API's listener
//! without a token: it holds counts and durations only, nothing about a person.
//!
//! The ingest thread, the API handlers and the retention job update the counters here directly;
//! gauges that describe state owned elsewhere (live trajectories, search index size, event
//! subscribers) are set by their owner when it changes.

use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What happened to an MQTT message (`outcome` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stored (or, for a status, considered).
    Accepted,
    /// An event already stored (edges deliver at least once).
    Duplicate,
    /// Failed a check (logged with the topic and the field).
    Rejected,
    /// Could not be stored: left unacknowledged, the broker delivers it again.
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    /// Topic kind: sighting, crowd, alert, camera_status, agent_status, or `unknown`.
    kind: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectedLabels {
    kind: String,
    /// The field at fault (`topic`, `size`, `payload` when the message is not even readable).
    field: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    /// The audit action (`trajectory_list`, `search`, …).
    action: &'static str,
    /// `purpose`, `probe`, `busy` or `scope`.
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhatLabel {
    what: &'static str,
}

/// The aggregator's metrics registry.
pub struct Metrics {
    registry: Registry,
    messages: Family<MessageLabels, Counter>,
    rejected: Family<RejectedLabels, Counter>,
    ingest_seconds: Family<KindLabel, Histogram, fn() -> Histogram>,
    pub trajectories_started: Counter,
    pub trajectories_joined: Counter,
    pub live_trajectories: Gauge,
    pub search_index_embeddings: Gauge,
    pub search_seconds: Histogram,
    pub watchlist_matches: Counter,
    pub watchlist_entries: Gauge,
    pub event_subscribers: Gauge,
    /// Live events a slow subscriber missed (its stream was told how many).
    pub events_dropped: Counter,
    http: Family<RouteLabels, Counter>,
    retention_deleted: Family<WhatLabel, Counter>,
    pub retention_last_run: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub retention_failures: Counter,
    pub mqtt_connected: Gauge,
    /// 1 while ingest waits for the store to come back.
    pub ingest_paused: Gauge,
    /// On a node of a cluster: the sites it correlates now, and the nodes it sees.
    pub sites_owned: Gauge,
    pub cluster_nodes: Gauge,
    /// On a node of a cluster: announcements of other nodes dropped because this node's follower
    /// was behind (its queue full), so that its own publications never wait for it.
    pub follower_dropped: Counter,
    broker_refused: Family<ReasonLabel, Counter>,
    refused: Family<RefusalLabels, Counter>,
    // totals kept for the log line at stop (reading a Family back is awkward)
    totals: [AtomicI64; 4],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let messages = Family::<MessageLabels, Counter>::default();
        r.register(
            "sightline_aggregator_messages",
            "MQTT messages by topic kind and outcome (accepted, duplicate, rejected, failed)",
            messages.clone(),
        );
        let rejected = Family::<RejectedLabels, Counter>::default();
        r.register(
            "sightline_aggregator_messages_rejected",
            "MQTT messages rejected at ingest, by topic kind and the field at fault",
            rejected.clone(),
        );
        // 100 µs .. 26 s in steps of 25 %: quantiles read from it are within a quarter
        let ingest_seconds: Family<KindLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 1.25, 56)));
        r.register(
            "sightline_aggregator_ingest_seconds",
            "MQTT message received by the aggregator's client to handled (stored, or refused as a duplicate or invalid), by topic kind; waiting for the ingest thread included",
            ingest_seconds.clone(),
        );
        let trajectories_started = Counter::default();
        r.register(
            "sightline_aggregator_trajectories_started",
            "Sightings that started a new trajectory",
            trajectories_started.clone(),
        );
        let trajectories_joined = Counter::default();
        r.register(
            "sightline_aggregator_trajectories_joined",
            "Sightings that joined an existing trajectory",
            trajectories_joined.clone(),
        );
        let live_trajectories = Gauge::default();
        r.register(
            "sightline_aggregator_live_trajectories",
            "Trajectories the correlator holds in memory (within twice the horizon)",
            live_trajectories.clone(),
        );
        let search_index_embeddings = Gauge::default();
        r.register(
            "sightline_aggregator_search_index_embeddings",
            "Embeddings in the in-memory search index (the retention window)",
            search_index_embeddings.clone(),
        );
        // 100 µs .. 3 s: an index scan, or a photo through the face pipeline
        let search_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        r.register(
            "sightline_aggregator_search_seconds",
            "Time per POST /search, photo embedding included",
            search_seconds.clone(),
        );
        let watchlist_matches = Counter::default();
        r.register(
            "sightline_aggregator_watchlist_matches",
            "watchlist_match alerts raised",
            watchlist_matches.clone(),
        );
        let watchlist_entries = Gauge::default();
        r.register("sightline_aggregator_watchlist_entries", "Active watchlist entries", watchlist_entries.clone());
        let event_subscribers = Gauge::default();
        r.register("sightline_aggregator_event_subscribers", "Open GET /events streams", event_subscribers.clone());
        let events_dropped = Counter::default();
        r.register(
            "sightline_aggregator_events_dropped",
            "Live events slow GET /events subscribers missed",
            events_dropped.clone(),
        );
        let http = Family::<RouteLabels, Counter>::default();
        r.register("sightline_aggregator_http_responses", "HTTP responses by route and status", http.clone());
        let retention_deleted = Family::<WhatLabel, Counter>::default();
        r.register(
            "sightline_aggregator_retention_deleted",
            "Rows deleted by the retention job, by table",
            retention_deleted.clone(),
        );
        let retention_last_run = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        r.register(
            "sightline_aggregator_retention_last_success_timestamp_seconds",
            "Unix time of the last successful retention run",
            retention_last_run.clone(),
        );
        let retention_failures = Counter::default();
        r.register(
            "sightline_aggregator_retention_failures",
            "Retention or compaction runs that failed",
            retention_failures.clone(),
        );
        let mqtt_connected = Gauge::default();
        r.register(
            "sightline_aggregator_mqtt_connected",
            "1 while the aggregator's MQTT client is connected and subscribed",
            mqtt_connected.clone(),
        );
        let ingest_paused = Gauge::default();
        r.register(
            "sightline_aggregator_ingest_paused",
            "1 while ingest is paused, retrying a message the store could not take (unreachable, restarting, busy, full)",
            ingest_paused.clone(),
        );
        let sites_owned = Gauge::default();
        r.register(
            "sightline_aggregator_sites_owned",
            "Sites this node correlates now (all sites with cameras, outside a cluster once started)",
            sites_owned.clone(),
        );
        let cluster_nodes = Gauge::default();
        r.register(
            "sightline_aggregator_cluster_nodes",
            "Nodes of the cluster connected to PostgreSQL, as this node last saw them (0 outside a cluster)",
            cluster_nodes.clone(),
        );
        let follower_dropped = Counter::default();
        r.register(
            "sightline_aggregator_follower_dropped",
            "Other nodes' announcements this node dropped because its follower was behind (their sightings miss this node's search index and live events)",
            follower_dropped.clone(),
        );
        let broker_refused = Family::<ReasonLabel, Counter>::default();
        r.register(
            "sightline_aggregator_broker_refused",
            "Connections the embedded broker's gate closed, by reason (a login's rights, a bad packet)",
            broker_refused.clone(),
        );
        let refused = Family::<RefusalLabels, Counter>::default();
        r.register(
            "sightline_aggregator_refused_accesses",
            "Accesses to personal data refused and audited as such, by audit action and reason (purpose, probe, busy, scope)",
            refused.clone(),
        );
        Metrics {
            refused,
            registry: r,
            messages,
            rejected,
            ingest_seconds,
            trajectories_started,
            trajectories_joined,
            live_trajectories,
            search_index_embeddings,
            search_seconds,
            watchlist_matches,
            watchlist_entries,
            event_subscribers,
            events_dropped,
            http,
            retention_deleted,
            retention_last_run,
            retention_failures,
            mqtt_connected,
            ingest_paused,
            sites_owned,
            cluster_nodes,
            follower_dropped,
            broker_refused,
            totals: Default::default(),
        }
    }

    /// Counts one refused access to personal data (audited with outcome `refused`).
    pub fn refused_access(&self, action: &'static str, reason: &'static str) {
        self.refused.get_or_create(&RefusalLabels { action, reason }).inc();
    }

    /// Counts one MQTT message of topic kind `kind`.
    pub fn message(&self, kind: &str, outcome: Outcome) {
        self.messages.get_or_create(&MessageLabels { kind: kind.to_owned(), outcome: outcome.as_str() }).inc();
        self.totals[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one rejected MQTT message by the field at fault (besides its `rejected` outcome).
    pub fn rejected(&self, kind: &str, field: &'static str) {
        self.rejected.get_or_create(&RejectedLabels { kind: kind.to_owned(), field }).inc();
    }

    /// Records the time from a message's receipt to its handling.
    pub fn ingested(&self, kind: &'static str, took: std::time::Duration) {
        self.ingest_seconds.get_or_create(&KindLabel { kind }).observe(took.as_secs_f64());
    }

    /// Messages so far with this outcome, all kinds.
    pub fn total(&self, outcome: Outcome) -> i64 {
        self.totals[outcome as usize].load(Ordering::Relaxed)
    }

    /// Counts one HTTP response; `route` is the matched route pattern (bounded cardinality).
    pub fn http_response(&self, route: &str, status: u16) {
        self.http.get_or_create(&RouteLabels { route: route.to_owned(), status }).inc();
    }

    /// Counts a client connection the embedded broker's gate closed.
    pub fn broker_refused(&self, reason: &'static str) {
        self.broker_refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn retention_deleted(&self, what: &'static str, n: u64) {
        self.retention_deleted.get_or_create(&WhatLabel { what }).inc_by(n);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind_and_outcome() {
        let m = Metrics::new();
        m.message("sighting", Outcome::Accepted);
        m.message("sighting", Outcome::Accepted);
        m.message("alert", Outcome::Rejected);
        m.rejected("alert", "details");
        m.http_response("/api/v1/cameras", 200);
        let text = m.encode();
        assert!(
            text.contains(r#"sightline_aggregator_messages_total{kind="sighting",outcome="accepted"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"sightline_aggregator_messages_total{kind="alert",outcome="rejected"} 1"#), "{text}");
        assert!(
            text.contains(r#"sightline_aggregator_messages_rejected_total{kind="alert",field="details"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"sightline_aggregator_http_responses_total{route="/api/v1/cameras",status="200"} 1"#));
        assert_eq!(m.total(Outcome::Accepted), 2);
        assert_eq!(m.total(Outcome::Rejected), 1);
        assert_eq!(m.total(Outcome::Failed), 0);
    }
}
