//! `GET /openapi.json`: the OpenAPI 3.1 document of the API, generated from the handlers'
//! annotations and the schemas of the types they answer with (the wire contract's types derive
//! theirs in `sightline-contract`, feature `openapi`). Served without a token.

use axum::Json;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;

use super::alert_close;
use super::alerts::{Acknowledgement, AlertList};
use super::audit::AuditPage;
use super::cameras::{CameraList, CameraOut, GridOut, LatestCrowdOut, ZoneCountOut};
use super::crowd::CrowdSeries;
use super::health::{Health, SearchIndexState};
use super::me::Me;
use super::merges::MergePage;
use super::request::ErrorBody;
use super::search::{SearchRequest, SearchResponse};
use super::site::{SiteCamera, SiteLink, SiteOut};
use super::sites::{SiteList, SiteNode};
use super::trajectories::SightingOut;
use super::watchlist::{WatchlistAdded, WatchlistList, WatchlistOut, WatchlistRequest};
use super::{alerts, audit, cameras, crowd, health, live, me, merges, search, site, sites, trajectories, watchlist};
use crate::auth::Role;
use crate::site::GeoRef;
use crate::store::{
    AuditAction, AuditEntry, AuditOutcome, AuditRecord, CameraRecord, CrowdBucket, MergeRecord, StoredAlert,
    TrajectoryDetail, TrajectoryPage, TrajectoryPoint, TrajectorySummary,
};
use sightline_contract::{
    Alert, AlertKind, AlertState, BestShot, CameraState, CameraStatus, CrowdMethod, Severity, Sighting,
};

/// The OpenAPI document of the API, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "sightline aggregator API",
        description = "JSON, bearer tokens (operator < integrator < admin); trajectory and sighting reads are audited."
    ),
    paths(
        health::healthz, health::metrics, cameras::cameras, me::me, alerts::alerts, alerts::acknowledge, alert_close::close, site::site,
        sites::sites,
        crowd::crowd, trajectories::trajectories, trajectories::trajectory, trajectories::trajectory_geojson,
        trajectories::sighting, audit::audit, merges::merges,
        search::search, watchlist::watchlist_add, watchlist::watchlist_list, watchlist::watchlist_remove, live::events,
        openapi_json
    ),
    components(schemas(
        ErrorBody, Health, SearchIndexState, CameraList, CameraOut, LatestCrowdOut, ZoneCountOut, GridOut, Me, Acknowledgement,
        SiteOut, SiteCamera, SiteLink, SiteList, SiteNode, GeoRef, CrowdMethod, AlertList, CrowdSeries, SightingOut, AuditPage, MergePage, MergeRecord, WatchlistList,
        CameraRecord, StoredAlert, CrowdBucket,
        crate::liveness::CameraLive, crate::liveness::LiveState, crate::liveness::CameraAgent,
        crate::liveness::AgentLiveness, crate::liveness::AlertOut, alert_close::CloseRequest,
        TrajectoryPage, TrajectorySummary, TrajectoryDetail,
        TrajectoryPoint, AuditRecord, AuditEntry, AuditAction, AuditOutcome, Role,
        Alert, AlertState, AlertKind, Severity, CameraStatus,
        CameraState, Sighting, BestShot,
        SearchRequest, SearchResponse, WatchlistRequest, WatchlistOut, WatchlistAdded
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("slt_…").build()),
        );
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "health",
    responses((status = 200, description = "this document (OpenAPI 3.1)", body = Object))
)]
pub(super) async fn openapi_json() -> Response {
    Json(ApiDoc::openapi()).into_response()
}
