//! `GET /trajectories` (summaries, newest first, keyset-paged), `GET /trajectories/{id}` (one
//! with its sightings), `GET /trajectories/{id}/geojson` (the same as a GeoJSON Feature) and
//! `GET /sightings/{id}` (one sighting, never its embedding): integrator reads of where people
//! went, each audited before it is answered (a 404 too).

use std::str::FromStr;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::{Value, json};
use sightline_contract::ts;
use utoipa::ToSchema;
use uuid::Uuid;

use super::purpose::require_purpose;
use super::request::{
    ApiError, ApiResult, BadParameter, DEFAULT_LIMIT, ErrorBody, MAX_LIMIT, PURPOSE_DOC, Params, Refused, SITE_DOC,
    Unanswered, audit_access, authorize, blocking, check_window, opt_ts, parse_id,
};
use super::scope::scope;
use super::state::ApiState;
use crate::auth::Role;
use crate::store::{AuditAction, Cursor, TrajectoryDetail, TrajectoryPage, TrajectoryQuery};

#[utoipa::path(
    get,
    path = "/api/v1/trajectories",
    tag = "integrator",
    security(("bearer" = [])),
    params(
        ("site" = Option<String>, Query, description = SITE_DOC),
        ("since" = Option<String>, Query, description = "RFC 3339, inclusive"),
        ("until" = Option<String>, Query, description = "RFC 3339, exclusive"),
        ("camera" = Option<String>, Query),
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 100"),
        ("cursor" = Option<String>, Query, description = "`next` of the previous page"),
        ("purpose" = String, Query, description = PURPOSE_DOC, min_length = 1, max_length = 500)
    ),
    responses(
        (status = 200, description = "`{items, next}`: trajectory summaries, newest first; audited", body = TrajectoryPage),
        BadParameter,
        Refused,
        Unanswered
    )
)]
pub(super) async fn trajectories(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let token = authorize(&state, &headers, Role::Integrator).await?;
    let p = Params::parse(query, &["site", "since", "until", "camera", "limit", "cursor", "purpose"])?;
    let purpose = require_purpose(&state, &token, &p, AuditAction::TrajectoryList, "GET /api/v1/trajectories").await?;
    let site = p.str("site")?;
    let scope = scope(&state, &token, site.as_deref(), "GET /api/v1/trajectories").await?;
    let cursor = p
        .str("cursor")?
        .map(|c| Cursor::from_str(&c).map_err(|_| ApiError::param("cursor", "not a cursor of this API")))
        .transpose()?;
    let q = TrajectoryQuery {
        sites: scope.filter(),
        since: p.time("since")?,
        until: p.time("until")?,
        camera: p.str("camera")?,
        limit: p.limit("limit", DEFAULT_LIMIT, MAX_LIMIT)?,
        cursor,
    };
    check_window(q.since, q.until)?;
    let audited = json!({
        "endpoint": "GET /api/v1/trajectories",
        "site": site,
        "since": opt_ts(q.since),
        "until": opt_ts(q.until),
        "camera": q.camera,
        "limit": q.limit,
        "cursor": q.cursor.map(|c| c.to_string()),
    });
    let page = blocking(&state, "listing trajectories", move |s| s.trajectories(&q)).await?;
    audit_access(&state, &token, AuditAction::TrajectoryList, Some(purpose), audited, page.items.len() as u64).await?;
    Ok(Json(page).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/trajectories/{id}",
    tag = "integrator",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "UUID"),
        ("purpose" = String, Query, description = PURPOSE_DOC, min_length = 1, max_length = 500)
    ),
    responses(
        (
            status = 200,
            description = "a trajectory and its sightings in order; for the id of a trajectory merged into another, that one, with `merged_from`; audited",
            body = TrajectoryDetail
        ),
        BadParameter,
        Refused,
        (status = 404, description = "unknown id", body = ErrorBody),
        Unanswered
    )
)]
pub(super) async fn trajectory(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let detail = read_trajectory(&state, &headers, &raw, query, "GET /api/v1/trajectories/{id}").await?;
    Ok(Json(detail).into_response())
}

/// One trajectory for an integrator, the read audited (a 404 too) before it is answered.
async fn read_trajectory(
    state: &Arc<ApiState>,
    headers: &HeaderMap,
    raw: &str,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    endpoint: &'static str,
) -> Result<TrajectoryDetail, ApiError> {
    let token = authorize(state, headers, Role::Integrator).await?;
    let p = Params::parse(query, &["purpose"])?;
    let purpose = require_purpose(state, &token, &p, AuditAction::TrajectoryRead, endpoint).await?;
    let id = parse_id(raw)?;
    let scope = scope(state, &token, None, endpoint).await?;
    let detail = blocking(state, "reading a trajectory", move |s| {
        if let Some(found) = s.trajectory(id)? {
            return Ok(Some(found));
        }
        // a trajectory merged into another answers with the one it is part of now
        let Some(into) = s.merged_into(id)? else { return Ok(None) };
        Ok(s.trajectory(into)?.map(|d| TrajectoryDetail { merged_from: Some(id), ..d }))
    })
    .await?
    .filter(|d| scope.allows(&d.summary.site));
    let audited = json!({ "endpoint": endpoint, "id": id });
    let results = detail.as_ref().map_or(0, |d| d.sightings.len() as u64);
    audit_access(state, &token, AuditAction::TrajectoryRead, Some(purpose), audited, results).await?;
    detail.ok_or_else(|| ApiError::not_found("trajectory", id))
}

#[utoipa::path(
    get,
    path = "/api/v1/trajectories/{id}/geojson",
    tag = "integrator",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "UUID"),
        ("purpose" = String, Query, description = PURPOSE_DOC, min_length = 1, max_length = 500)
    ),
    responses(
        (
            status = 200,
            description = "GeoJSON Feature (WGS84 with a georef, else site metres); audited",
            content_type = "application/geo+json",
            body = Object
        ),
        BadParameter,
        Refused,
        (status = 404, description = "unknown id", body = ErrorBody),
        Unanswered
    )
)]
pub(super) async fn trajectory_geojson(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let detail = read_trajectory(&state, &headers, &raw, query, "GET /api/v1/trajectories/{id}/geojson").await?;

    // Positions: the sighting's ground point when the camera is calibrated, else the camera's
    // position; site-frame metres, turned into WGS84 when the trajectory's site is in the
    // config and has a georeference.
    let model = state.sites.get(&detail.summary.site).map(|s| &s.model);
    let georef = model.is_some_and(|m| m.site().georef.is_some());
    let mut coordinates = Vec::new();
    let mut points = Vec::new();
    let mut unplaced = 0u32;
    for s in &detail.sightings {
        let (source, site_xy) = match s.ground {
            Some(g) => ("ground", Some(g)),
            None => ("camera", model.and_then(|m| m.camera(&s.camera)).map(|c| c.position)),
        };
        let coord = site_xy.and_then(|xy| match model {
            Some(m) if georef => m.lon_lat(xy),
            _ => Some(xy),
        });
        match coord {
            Some(c) => coordinates.push(c),
            None => unplaced += 1,
        }
        points.push(json!({
            "sighting": s.id,
            "camera": s.camera,
            "first_seen": ts::format(s.first_seen),
            "last_seen": ts::format(s.last_seen),
            "position": coord.map(|_| source),
        }));
    }
    let geometry = match coordinates.len() {
        0 => Value::Null,
        1 => json!({ "type": "Point", "coordinates": coordinates[0] }),
        _ => json!({ "type": "LineString", "coordinates": coordinates }),
    };
    let mut properties = json!({
        "trajectory": detail.summary.id,
        "site": detail.summary.site,
        "first_seen": ts::format(detail.summary.first_seen),
        "last_seen": ts::format(detail.summary.last_seen),
        "cameras": detail.summary.cameras,
        "crs": if georef { "WGS84" } else { "site" },
        "sightings": points,
    });
    if !georef {
        properties["note"] =
            Value::String("coordinates are metres in the site frame (x, y), not WGS84: the site has no georef".into());
    }
    if unplaced > 0 {
        properties["unplaced"] = json!(unplaced);
    }
    let feature = json!({
        "type": "Feature",
        "id": detail.summary.id,
        "geometry": geometry,
        "properties": properties,
    });
    let mut resp = Json(feature).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/geo+json"));
    Ok(resp)
}

#[utoipa::path(
    get,
    path = "/api/v1/sightings/{id}",
    tag = "integrator",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "UUID"),
        ("purpose" = String, Query, description = PURPOSE_DOC, min_length = 1, max_length = 500)
    ),
    responses(
        (status = 200, description = "`{sighting (no embedding), trajectory, distance, received_at}`; audited", body = SightingOut),
        BadParameter,
        Refused,
        (status = 404, description = "unknown id", body = ErrorBody),
        Unanswered
    )
)]
pub(super) async fn sighting(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let token = authorize(&state, &headers, Role::Integrator).await?;
    let p = Params::parse(query, &["purpose"])?;
    let purpose = require_purpose(&state, &token, &p, AuditAction::SightingRead, "GET /api/v1/sightings/{id}").await?;
    let id = parse_id(&raw)?;
    let scope = scope(&state, &token, None, "GET /api/v1/sightings/{id}").await?;
    let stored = blocking(&state, "reading a sighting", move |s| s.sighting(id))
        .await?
        .filter(|s| scope.allows(&s.sighting.site));
    let audited = json!({ "endpoint": "GET /api/v1/sightings/{id}", "id": id });
    audit_access(&state, &token, AuditAction::SightingRead, Some(purpose), audited, u64::from(stored.is_some()))
        .await?;
    let stored = stored.ok_or_else(|| ApiError::not_found("sighting", id))?;
    // The embedding is biometric data: it is never served.
    let mut sighting = serde_json::to_value(&stored.sighting).map_err(|e| ApiError::internal("a sighting", e))?;
    if let Some(obj) = sighting.as_object_mut() {
        obj.remove("embedding");
    }
    Ok(Json(SightingOut {
        sighting,
        trajectory: stored.trajectory,
        distance: stored.distance,
        received_at: ts::format(stored.received_at),
    })
    .into_response())
}

/// `GET /sightings/{id}`: the sighting (without its embedding) and where it was placed.
#[derive(Serialize, ToSchema)]
pub(super) struct SightingOut {
    /// The contract's sighting with `embedding` removed.
    #[schema(value_type = sightline_contract::Sighting)]
    sighting: Value,
    trajectory: Uuid,
    /// Embedding distance to the trajectory it joined; `null` when it started it.
    #[schema(required = true)]
    distance: Option<f32>,
    #[schema(format = DateTime)]
    received_at: String,
}
