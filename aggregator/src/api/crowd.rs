//! `GET /crowd`: a camera's (or one of its zones') crowd counts averaged in buckets over a time
//! window; only the non-empty buckets.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde::Serialize;
use sightline_contract::ts;
use utoipa::ToSchema;

use super::request::{
    ApiError, ApiResult, BadParameter, Params, Refused, SITE_DOC, Unanswered, authorize, blocking, check_window,
};
use super::scope::scope;
use super::state::ApiState;
use crate::auth::Role;
use crate::store::{CrowdBucket, CrowdQuery};

/// Default crowd-series window (s) before `until` and bucket width (s).
pub const DEFAULT_CROWD_WINDOW_S: i64 = 3600;
pub const DEFAULT_CROWD_STEP_S: u32 = 60;
/// Most buckets one crowd-series request may span.
pub const MAX_CROWD_BUCKETS: i64 = 10_000;

#[utoipa::path(
    get,
    path = "/api/v1/crowd",
    tag = "operator",
    security(("bearer" = [])),
    params(
        ("camera" = String, Query, description = "required"),
        ("zone" = Option<String>, Query, description = "a zone; default the camera total"),
        ("site" = Option<String>, Query, description = SITE_DOC),
        ("since" = Option<String>, Query, description = "RFC 3339, inclusive; default `until` - 1 h"),
        ("until" = Option<String>, Query, description = "RFC 3339, exclusive; default now"),
        ("step" = Option<u32>, Query, description = "bucket width in seconds, 1 to 86400, default 60")
    ),
    responses(
        (status = 200, description = "`{camera, zone, since, until, step_s, items}`: non-empty buckets", body = CrowdSeries),
        BadParameter,
        Refused,
        Unanswered
    )
)]
pub(super) async fn crowd(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let token = authorize(&state, &headers, Role::Operator).await?;
    let p = Params::parse(query, &["site", "camera", "zone", "since", "until", "step"])?;
    let scope = scope(&state, &token, p.str("site")?.as_deref(), "GET /api/v1/crowd").await?;
    let camera = p.str("camera")?.ok_or_else(|| ApiError::param("camera", "is required"))?;
    let step_s = p.limit("step", DEFAULT_CROWD_STEP_S, 86_400)?;
    let until = p.time("until")?.unwrap_or_else(|| state.clock.now());
    let since = p.time("since")?.unwrap_or(until - time::Duration::seconds(DEFAULT_CROWD_WINDOW_S));
    check_window(Some(since), Some(until))?;
    if (until - since).whole_seconds() / i64::from(step_s) > MAX_CROWD_BUCKETS {
        return Err(ApiError::param("step", format!("too small for this window: at most {MAX_CROWD_BUCKETS} buckets")));
    }
    let q = CrowdQuery { sites: scope.filter(), camera, zone: p.str("zone")?, since, until, step_s };
    let (camera, zone) = (q.camera.clone(), q.zone.clone());
    let items = blocking(&state, "reading the crowd series", move |s| s.crowd_series(&q)).await?;
    Ok(Json(CrowdSeries { camera, zone, since: ts::format(since), until: ts::format(until), step_s, items })
        .into_response())
}

/// `GET /crowd`: the series' parameters and its non-empty buckets.
#[derive(Serialize, ToSchema)]
pub(super) struct CrowdSeries {
    camera: String,
    /// The zone; `null`: the camera's total.
    #[schema(required = true)]
    zone: Option<String>,
    #[schema(format = DateTime)]
    since: String,
    #[schema(format = DateTime)]
    until: String,
    /// Bucket width in seconds.
    step_s: u32,
    items: Vec<CrowdBucket>,
}
