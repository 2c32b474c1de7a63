//! `GET /cameras`: every camera with its position (site metres and WGS84), its live status and
//! its latest crowd measurement with the density grid the ingest thread holds.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde::Serialize;
use sightline_contract::ts;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::request::{ApiResult, BadParameter, Params, Refused, SITE_DOC, Unanswered, authorize, blocking};
use super::scope::scope;
use super::state::ApiState;
use crate::auth::Role;
use crate::store::CameraRecord;

/// A camera with its position in WGS84 when the site has a georeference, and its latest crowd
/// measurement.
#[derive(Serialize, ToSchema)]
pub(super) struct CameraOut {
    #[serde(flatten)]
    record: CameraRecord,
    /// `state`, `state_detail`, `agent`: derived from the camera's status and its agent's liveness.
    #[serde(flatten)]
    live: crate::liveness::CameraLive,
    /// `[lon, lat]` (GeoJSON order), degrees.
    #[serde(skip_serializing_if = "Option::is_none")]
    wgs84: Option<[f64; 2]>,
    /// The latest crowd measurement (by `ts`); `null` when the camera has none.
    #[schema(required = true)]
    latest_crowd: Option<LatestCrowdOut>,
}

/// A camera's latest crowd measurement.
#[derive(Serialize, ToSchema)]
pub(super) struct LatestCrowdOut {
    #[serde(with = "ts::rfc3339_ms")]
    #[schema(value_type = String, format = DateTime)]
    ts: OffsetDateTime,
    method: sightline_contract::CrowdMethod,
    /// People in the whole frame.
    total: f32,
    /// People per zone, in the camera's zone order.
    zones: Vec<ZoneCountOut>,
    /// Where the people are in the frame (`cols` × `rows` cells, row-major from the top-left);
    /// `null` when the agent sends none, or after a restart until the next measurement.
    #[schema(required = true)]
    grid: Option<GridOut>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct ZoneCountOut {
    zone: String,
    count: f32,
}

/// A coarse density grid: people per cell.
#[derive(Serialize, ToSchema)]
pub(super) struct GridOut {
    cols: u16,
    rows: u16,
    /// `cols × rows` values, row-major from the top-left cell.
    cells: Vec<f32>,
}

impl From<sightline_contract::Crowd> for LatestCrowdOut {
    fn from(c: sightline_contract::Crowd) -> Self {
        LatestCrowdOut {
            ts: c.ts,
            method: c.method,
            total: c.total,
            zones: c.zones.into_iter().map(|z| ZoneCountOut { zone: z.zone, count: z.count }).collect(),
            grid: c.grid.map(|g| GridOut { cols: g.cols, rows: g.rows, cells: g.cells }),
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/cameras",
    tag = "operator",
    security(("bearer" = [])),
    params(("site" = Option<String>, Query, description = SITE_DOC)),
    responses(
        (status = 200, description = "`{items}`: cameras, positions (site metres; `wgs84` [lon, lat]), last status, derived `state` (its edge agent offline: `unknown`), latest crowd", body = CameraList),
        BadParameter,
        Refused,
        Unanswered
    )
)]
pub(super) async fn cameras(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let token = authorize(&state, &headers, Role::Operator).await?;
    let p = Params::parse(query, &["site"])?;
    let scope = scope(&state, &token, p.str("site")?.as_deref(), "GET /api/v1/cameras").await?;
    let (records, fleet, crowds) = blocking(&state, "listing cameras", |s| {
        let (records, fleet) = crate::liveness::Fleet::load(s)?;
        Ok((records, fleet, s.latest_crowd()?))
    })
    .await?;
    let mut crowds: HashMap<(String, String), sightline_contract::Crowd> =
        crowds.into_iter().map(|c| ((c.site.clone(), c.camera.clone()), c)).collect();
    let items: Vec<CameraOut> = records
        .into_iter()
        .filter(|record| scope.allows(&record.site))
        .map(|record| {
            let model = state.sites.get(&record.site).map(|s| &s.model);
            let wgs84 = record.position.zip(model).and_then(|(p, m)| m.lon_lat(p));
            let stored = crowds.remove(&(record.site.clone(), record.camera.clone()));
            let latest_crowd = state.latest_crowd.newest(stored, &record.site, &record.camera).map(Into::into);
            CameraOut { live: fleet.camera(&record), record, wgs84, latest_crowd }
        })
        .collect();
    Ok(Json(CameraList { items }).into_response())
}

/// `GET /cameras`.
#[derive(Serialize, ToSchema)]
pub(super) struct CameraList {
    items: Vec<CameraOut>,
}
