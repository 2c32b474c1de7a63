//! Face search (`POST /search`, integrator): the sightings whose embedding is within
//! `max_distance` of a probe (`super::probe`), nearest first, and the trajectories they belong to.
//! The search is audited with the probe's digest, its filters and the number of matches; a search
//! whose probe was refused (no usable face, too large, no free photo slot) is audited as refused.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sightline_contract::ts;
use sightline_vision::EMBEDDING_MODEL;
use utoipa::ToSchema;
use uuid::Uuid;

use super::probe::{Probe, resolve_probe};
use super::purpose::{refuse, require_body_purpose};
use super::request::{
    ApiError, ApiResult, ErrorBody, Refused, audit_access, authorize, body, check_window, opt_ts, time_field,
};
use super::scope::scope;
use super::state::ApiState;
use crate::auth::Role;
use crate::search::{Hit, SearchError, SearchQuery};
use crate::store::AuditAction;

/// A face to look for: a photo or an embedding.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// A photo: base64 JPEG or PNG (a `data:image/…;base64,` prefix is accepted). Either this or `embedding`.
    pub image: Option<String>,
    /// An embedding of `model` (128 floats for the default model).
    pub embedding: Option<Vec<f32>>,
    /// The embedding model; default the model the edge agents run.
    pub model: Option<String>,
    /// REQUIRED: why this search is made (kept in the audit log); without it the search is
    /// refused (400) and the refusal audited.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 500)]
    pub purpose: Option<String>,
    /// RFC 3339: sightings last seen at or after.
    pub since: Option<String>,
    /// RFC 3339: sightings last seen before.
    pub until: Option<String>,
    /// Only this site's sightings and those of the sites below it; default every site the
    /// token may see.
    pub site: Option<String>,
    /// Only this camera's sightings.
    pub camera: Option<String>,
    /// Largest distance of a match (default `[search] default_max_distance`, 0.6).
    pub max_distance: Option<f32>,
    /// Most sightings returned (default 20).
    pub limit: Option<u32>,
}

/// A matching sighting.
#[derive(Serialize, ToSchema)]
pub struct SightingMatch {
    pub sighting: Uuid,
    pub trajectory: Uuid,
    pub site: String,
    pub camera: String,
    pub last_seen: String,
    pub distance: f32,
}

/// A trajectory with matching sightings.
#[derive(Serialize, ToSchema)]
pub struct TrajectoryMatch {
    pub trajectory: Uuid,
    /// The smallest distance of its matching sightings.
    pub distance: f32,
    /// How many of its sightings matched (within `limit`).
    pub matches: usize,
    pub cameras: Vec<String>,
    pub first_match: String,
    pub last_match: String,
}

#[derive(Serialize, ToSchema)]
pub struct SearchResponse {
    pub probe: Probe,
    pub model: String,
    /// Embeddings held by the index (the retention window), before the request's filters.
    pub searched: usize,
    /// Nearest first.
    pub sightings: Vec<SightingMatch>,
    /// Best match first.
    pub trajectories: Vec<TrajectoryMatch>,
}

#[utoipa::path(
    post,
    path = "/api/v1/search",
    tag = "integrator",
    security(("bearer" = [])),
    request_body = SearchRequest,
    responses(
        (status = 200, description = "matching sightings and trajectories, nearest first; audited", body = SearchResponse),
        (status = 400, description = "a bad field, named in `parameter` (`purpose` is required)", body = ErrorBody),
        Refused,
        (status = 413, description = "the photo is too large (the attempt is audited)", body = ErrorBody),
        (status = 422, description = "no usable face in the photo (the attempt is audited)", body = ErrorBody),
        (status = 503, description = "photos cannot be embedded (no face models: send an embedding), `busy`: too many photos in progress, or `unavailable`: the search index is still loading from the store after a start; try again (the attempt is audited)", body = ErrorBody)
    )
)]
pub(super) async fn search(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    req: Result<Json<SearchRequest>, JsonRejection>,
) -> ApiResult {
    let started = Instant::now();
    let token = authorize(&state, &headers, Role::Integrator).await?;
    let req = body(req)?;
    let purpose = require_body_purpose(&state, &token, req.purpose, AuditAction::Search, "POST /api/v1/search").await?;
    let since = time_field("since", req.since)?;
    let until = time_field("until", req.until)?;
    check_window(since, until)?;
    let max_distance = req.max_distance.unwrap_or(state.search.default_max_distance);
    if !(max_distance > 0.0 && max_distance <= 2.0) {
        return Err(ApiError::param("max_distance", format!("must be in (0, 2], got {max_distance}")));
    }
    let limit = req.limit.unwrap_or(state.search.default_limit);
    if limit == 0 || limit > state.search.max_limit {
        return Err(ApiError::param("limit", format!("must be 1 to {}", state.search.max_limit)));
    }
    let model = req.model.unwrap_or_else(|| EMBEDDING_MODEL.to_owned());
    let mut digest = None;
    let probe = resolve_probe(&state, req.image, req.embedding, &model, &mut digest).await;
    let mut audited = json!({
        "endpoint": "POST /api/v1/search",
        "since": opt_ts(since),
        "until": opt_ts(until),
        "site": req.site,
        "camera": req.camera,
        "max_distance": max_distance,
        "limit": limit,
        "model": model,
    });
    let (embedding, probe) = match probe {
        Ok(p) => p,
        Err(e) => {
            // a search attempt whose probe was refused (a photo too large, undecodable, without a
            // usable face; no free photo slot) is audited, with the probe's digest when known
            audited["probe"] = json!({ "digest": digest });
            let reason = if e.code == "busy" { "busy" } else { "probe" };
            return Err(refuse(&state, &token, AuditAction::Search, audited, Some(purpose), reason, e).await);
        }
    };
    audited["probe"] = json!({ "source": probe.source, "digest": probe.digest });

    let scope = scope(&state, &token, req.site.as_deref(), "POST /api/v1/search").await?;
    let query = SearchQuery {
        since,
        until,
        sites: scope.filter(),
        camera: req.camera,
        max_distance,
        limit: limit as usize,
        threads: state.search.threads,
    };
    let (index, store) = (state.index.clone(), state.store.clone());
    let found = tokio::task::spawn_blocking(move || {
        let index = index.read().unwrap();
        if index.model() != model {
            return Ok((Vec::new(), 0));
        }
        index.search(&embedding, &query, store.as_ref()).map(|f| (f.hits, index.len()))
    })
    .await
    .map_err(|e| ApiError::internal("searching", e))?;
    let (hits, searched) = match found {
        Ok(found) => found,
        Err(SearchError::Exact(e)) => return Err(ApiError::internal("searching", e)),
        // the index is being built (or could not be): audited like any refused attempt
        Err(e @ (SearchError::Loading { .. } | SearchError::Unavailable(_))) => {
            let e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string());
            return Err(refuse(&state, &token, AuditAction::Search, audited, Some(purpose), "unavailable", e).await);
        }
        Err(e) => return Err(ApiError::param("embedding", e.to_string())),
    };

    audit_access(&state, &token, AuditAction::Search, Some(purpose), audited, hits.len() as u64).await?;
    let trajectories = by_trajectory(&hits);
    let sightings = hits
        .into_iter()
        .map(|h| SightingMatch {
            sighting: h.sighting,
            trajectory: h.trajectory,
            site: h.site.to_string(),
            camera: h.camera.to_string(),
            last_seen: ts::format(h.last_seen),
            distance: h.distance,
        })
        .collect();
    state.metrics.search_seconds.observe(started.elapsed().as_secs_f64());
    let model = state.index.read().unwrap().model().to_owned();
    Ok(Json(SearchResponse { probe, model, searched, sightings, trajectories }).into_response())
}

/// Hits grouped by trajectory, best (smallest distance) first.
fn by_trajectory(hits: &[Hit]) -> Vec<TrajectoryMatch> {
    let mut groups: HashMap<Uuid, Vec<&Hit>> = HashMap::new();
    for h in hits {
        groups.entry(h.trajectory).or_default().push(h);
    }
    let mut out: Vec<TrajectoryMatch> = groups
        .into_iter()
        .map(|(trajectory, hs)| {
            let mut cameras: Vec<String> = hs.iter().map(|h| h.camera.to_string()).collect();
            cameras.sort();
            cameras.dedup();
            TrajectoryMatch {
                trajectory,
                distance: hs.iter().map(|h| h.distance).fold(f32::INFINITY, f32::min),
                matches: hs.len(),
                cameras,
                first_match: ts::format(hs.iter().map(|h| h.last_seen).min().expect("a group has hits")),
                last_match: ts::format(hs.iter().map(|h| h.last_seen).max().expect("a group has hits")),
            }
        })
        .collect();
    out.sort_by(|a, b| a.distance.total_cmp(&b.distance).then(a.trajectory.cmp(&b.trajectory)));
    out
}
