//! The [`Store`](super::Store) impl both backends share in shape: each method calls the function
//! of the same name in the backend's module of that job (`records`, `queries`, `access`,
//! `watchlist`, `retention`, `sites`), with the store first. A backend writes those functions; this
//! writes the trait's forwarding once.

/// `impl Store for $store`, forwarding each method to the job modules in scope where it is
/// invoked.
macro_rules! store_by_jobs {
    ($store:ty) => {
        const _: () = {
            use sightline_contract::{AgentStatus, Alert, CameraStatus, Crowd};
            use time::OffsetDateTime;
            use uuid::Uuid;

            use $crate::store::{
                Acknowledged, AgentRecord, AlertQuery, AuditEntry, AuditQuery, AuditRecord, CameraRecord, CrowdBucket,
                CrowdQuery, EmbeddingRow, MergeQuery, MergeRecord, PurgeReport, Result, RetentionPolicy, Role,
                SightingPlacement, SiteRow, Store, StoredAlert, StoredSighting, Token, TrajectoryDetail,
                TrajectoryMerge, TrajectoryPage, TrajectoryQuery, WatchlistEntry,
            };

            impl Store for $store {
                fn seen_among(&self, ids: &[Uuid]) -> Result<std::collections::HashSet<Uuid>> {
                    records::seen_among(self, ids)
                }

                fn record_batch(
                    &self,
                    batch: &[SightingPlacement<'_>],
                    merges: &[TrajectoryMerge],
                ) -> Result<Vec<bool>> {
                    records::record_batch(self, batch, merges)
                }

                fn record_alert(&self, a: &Alert, received_at: OffsetDateTime) -> Result<bool> {
                    records::record_alert(self, a, received_at)
                }

                fn record_crowd(&self, c: &Crowd, received_at: OffsetDateTime) -> Result<bool> {
                    records::record_crowd(self, c, received_at)
                }

                fn record_camera_status(&self, s: &CameraStatus, received_at: OffsetDateTime) -> Result<bool> {
                    records::record_camera_status(self, s, received_at)
                }

                fn record_agent_status(&self, s: &AgentStatus, received_at: OffsetDateTime) -> Result<bool> {
                    records::record_agent_status(self, s, received_at)
                }

                fn claim_sites(&self, rows: &[SiteRow], replace: bool) -> Result<()> {
                    sites::claim_sites(self, rows, replace)
                }

                fn put_camera(&self, site: &str, camera: &str, position: Option<[f64; 2]>) -> Result<()> {
                    records::put_camera(self, site, camera, position)
                }

                fn acknowledge_alert(&self, alert: &str, by: &str, at: OffsetDateTime) -> Result<Acknowledged> {
                    records::acknowledge_alert(self, alert, by, at)
                }

                fn alert_events(&self, alert: &str, limit: u32) -> Result<Vec<StoredAlert>> {
                    queries::alert_events(self, alert, limit)
                }

                fn cleared_alerts(&self, alerts: &[String]) -> Result<std::collections::HashSet<String>> {
                    queries::cleared_alerts(self, alerts)
                }

                fn open_alerts(&self, kind: sightline_contract::AlertKind, limit: u32) -> Result<Vec<StoredAlert>> {
                    queries::open_alerts(self, kind, limit)
                }

                fn cameras(&self) -> Result<Vec<CameraRecord>> {
                    queries::cameras(self)
                }

                fn agents(&self) -> Result<Vec<AgentRecord>> {
                    queries::agents(self)
                }

                fn alerts(&self, q: &AlertQuery) -> Result<Vec<StoredAlert>> {
                    queries::alerts(self, q)
                }

                fn latest_crowd(&self) -> Result<Vec<Crowd>> {
                    queries::latest_crowd(self)
                }

                fn crowd_series(&self, q: &CrowdQuery) -> Result<Vec<CrowdBucket>> {
                    queries::crowd_series(self, q)
                }

                fn trajectories(&self, q: &TrajectoryQuery) -> Result<TrajectoryPage> {
                    queries::trajectories(self, q)
                }

                fn trajectory(&self, id: Uuid) -> Result<Option<TrajectoryDetail>> {
                    queries::trajectory(self, id)
                }

                fn merged_into(&self, id: Uuid) -> Result<Option<Uuid>> {
                    queries::merged_into(self, id)
                }

                fn merges(&self, q: &MergeQuery) -> Result<Vec<MergeRecord>> {
                    queries::merges(self, q)
                }

                fn sightings(&self, ids: &[Uuid]) -> Result<Vec<StoredSighting>> {
                    queries::sightings(self, ids)
                }

                fn for_each_embedding(
                    &self,
                    model: &str,
                    since: Option<OffsetDateTime>,
                    until: Option<OffsetDateTime>,
                    f: &mut dyn FnMut(EmbeddingRow),
                ) -> Result<u64> {
                    queries::for_each_embedding(self, model, since, until, f)
                }

                fn sightings_for_replay(
                    &self,
                    since: OffsetDateTime,
                    site: Option<&str>,
                ) -> Result<Vec<StoredSighting>> {
                    queries::sightings_for_replay(self, since, site)
                }

                fn create_token(
                    &self,
                    name: &str,
                    role: Role,
                    sites: Option<&[String]>,
                    hash: &str,
                    at: OffsetDateTime,
                ) -> Result<Token> {
                    access::create_token(self, name, role, sites, hash, at)
                }

                fn token_by_hash(&self, hash: &str) -> Result<Option<Token>> {
                    access::token_by_hash(self, hash)
                }

                fn revoke_token(&self, name: &str, at: OffsetDateTime) -> Result<bool> {
                    access::revoke_token(self, name, at)
                }

                fn list_tokens(&self) -> Result<Vec<Token>> {
                    access::list_tokens(self)
                }

                fn audit(&self, e: &AuditEntry) -> Result<i64> {
                    access::audit(self, e)
                }

                fn audit_log(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>> {
                    access::audit_log(self, q)
                }

                fn watchlist_add(&self, e: &WatchlistEntry) -> Result<bool> {
                    watchlist::watchlist_add(self, e)
                }

                fn watchlist_active(&self, at: OffsetDateTime) -> Result<Vec<WatchlistEntry>> {
                    watchlist::watchlist_active(self, at)
                }

                fn watchlist_remove(&self, id: Uuid) -> Result<bool> {
                    watchlist::watchlist_remove(self, id)
                }

                fn purge(&self, now: OffsetDateTime, policy: &RetentionPolicy) -> Result<PurgeReport> {
                    retention::purge(self, now, policy)
                }

                fn compact(&self) -> Result<()> {
                    retention::compact(self)
                }
            }
        };
    };
}

pub(crate) use store_by_jobs;
