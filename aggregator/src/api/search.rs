//! Face search (`POST /search`, integrator) and the watchlist (`/watchlist`, admin).
//!
//! Both take a *probe*: a photo (`image`, base64 JPEG or PNG, embedded by the same face
//! pipeline the edge agents run) or an `embedding` of the named `model`. The probe itself is
//! never stored or logged: the audit record keeps its SHA-256 digest, so an auditor can tell
//! whether two searches used the same photo without the aggregator keeping the photo. A
//! watchlist entry keeps the probe's embedding until it expires or is removed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use sightline_contract::ts;
use sightline_vision::{EMBEDDING_DIM, EMBEDDING_MODEL, PhotoError, PhotoLimits};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    ApiError, ApiResult, ApiState, Params, audit_access, authorize, blocking, check_purpose, check_window, parse_id,
};
use crate::auth::Role;
use crate::search::{Hit, SearchQuery};
use crate::store::{AuditAction, WatchlistEntry};

/// A JSON body, or a 400 saying what is wrong with it.
fn body<T>(b: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    b.map(|Json(t)| t).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))
}

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
    /// REQUIRED: why this search is made (kept in the audit log).
    pub purpose: Option<String>,
    /// RFC 3339: sightings last seen at or after.
    pub since: Option<String>,
    /// RFC 3339: sightings last seen before.
    pub until: Option<String>,
    /// Only this camera's sightings.
    pub camera: Option<String>,
    /// Largest distance of a match (default `[search] default_max_distance`, 0.6).
    pub max_distance: Option<f32>,
    /// Most sightings returned (default 20).
    pub limit: Option<u32>,
}

/// What a probe turned out to be.
#[derive(Serialize, ToSchema)]
pub struct Probe {
    /// `image` or `embedding`.
    pub source: &'static str,
    /// `sha256:…` of the photo bytes or of the embedding (little-endian f32): what the audit log keeps.
    pub digest: String,
    /// Faces found in the photo (the largest was used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub faces_found: Option<usize>,
    /// `[x, y, w, h]` of the face used, in photo pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f32; 4]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<f32>,
}

/// A matching sighting.
#[derive(Serialize, ToSchema)]
pub struct SightingMatch {
    pub sighting: Uuid,
    pub trajectory: Uuid,
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

/// The probe's embedding and its description.
async fn resolve_probe(
    state: &Arc<ApiState>,
    image: Option<String>,
    embedding: Option<Vec<f32>>,
    model: &str,
) -> ApiResult<(Vec<f32>, Probe)> {
    match (image, embedding) {
        (Some(_), Some(_)) => Err(ApiError::param("image", "give either `image` or `embedding`, not both")),
        (None, None) => Err(ApiError::param("image", "a probe is required: `image` (base64 JPEG/PNG) or `embedding`")),
        (None, Some(e)) => {
            if model == EMBEDDING_MODEL && e.len() != EMBEDDING_DIM {
                return Err(ApiError::param(
                    "embedding",
                    format!("has {} values; {EMBEDDING_MODEL} embeddings have {EMBEDDING_DIM}", e.len()),
                ));
            }
            if let Some(i) = e.iter().position(|v| !v.is_finite()) {
                return Err(ApiError::param("embedding", format!("value {i} is not a finite number")));
            }
            let mut h = Sha256::new();
            e.iter().for_each(|v| h.update(v.to_le_bytes()));
            let digest = format!("sha256:{}", hex::encode(h.finalize()));
            Ok((e, Probe { source: "embedding", digest, faces_found: None, bbox: None, quality: None }))
        }
        (Some(b64), None) => {
            if model != EMBEDDING_MODEL {
                return Err(ApiError::param("model", format!("photos are embedded with {EMBEDDING_MODEL} only")));
            }
            let faces = state.faces.clone().map_err(|why| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!("photos cannot be embedded here ({why}); send an `embedding` instead"),
                )
            })?;
            // `data:image/png;base64,` prefixes are accepted; whitespace (line breaks) too
            let raw = b64.split_once(";base64,").map_or(b64.as_str(), |(_, d)| d);
            let raw: String = raw.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            let max = state.search.max_photo_bytes;
            if raw.len() / 4 * 3 > max + 3 {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("`image` is larger than the {max} byte limit"),
                ));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(raw.as_bytes())
                .map_err(|e| ApiError::param("image", format!("is not valid base64: {e}")))?;
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
            let limits = PhotoLimits { max_bytes: max, ..PhotoLimits::default() };
            let face = tokio::task::spawn_blocking(move || faces.lock().unwrap().embed_photo(&bytes, &limits))
                .await
                .map_err(|e| ApiError::internal("embedding the photo", e))?;
            let face = face.map_err(photo_error)?;
            let probe = Probe {
                source: "image",
                digest,
                faces_found: Some(face.faces_found),
                bbox: Some(face.bbox),
                quality: Some(face.quality),
            };
            Ok((face.embedding, probe))
        }
    }
}

fn photo_error(e: PhotoError) -> ApiError {
    match e {
        PhotoError::NoFace | PhotoError::FaceTooSmall { .. } => ApiError {
            parameter: Some("image".into()),
            ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "no_usable_face", e.to_string())
        },
        PhotoError::TooLarge { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string()),
        PhotoError::Vision(v) => ApiError::internal("embedding the photo", v),
        other => ApiError::param("image", other.to_string()),
    }
}

/// A required `purpose`.
fn purpose_of(p: Option<String>) -> ApiResult<String> {
    let p = p.ok_or_else(|| {
        ApiError::param("purpose", "is required: why this is done (e.g. a case number); it is kept in the audit log")
    })?;
    check_purpose(p)
}

fn time_field(name: &str, v: Option<String>) -> ApiResult<Option<OffsetDateTime>> {
    v.map(|v| ts::parse(&v).map_err(|e| ApiError::param(name, format!("{v:?} is not an RFC 3339 time: {e}"))))
        .transpose()
}

#[utoipa::path(
    post,
    path = "/api/v1/search",
    tag = "integrator",
    security(("bearer" = [])),
    request_body = SearchRequest,
    responses(
        (status = 200, description = "matching sightings and trajectories, nearest first; audited", body = SearchResponse),
        (status = 400, description = "a bad field, named in `parameter` (`purpose` is required)", body = super::ErrorBody),
        super::Refused,
        (status = 413, description = "the photo is too large", body = super::ErrorBody),
        (status = 422, description = "no usable face in the photo (the attempt is audited)", body = super::ErrorBody),
        (status = 503, description = "photos cannot be embedded (no face models): send an embedding", body = super::ErrorBody)
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
    let purpose = purpose_of(req.purpose)?;
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
    let probe = resolve_probe(&state, req.image, req.embedding, &model).await;
    let mut audited = json!({
        "endpoint": "POST /api/v1/search",
        "since": super::opt_ts(since),
        "until": super::opt_ts(until),
        "camera": req.camera,
        "max_distance": max_distance,
        "limit": limit,
        "model": model,
    });
    let (embedding, probe) = match probe {
        Ok(p) => p,
        Err(e) => {
            // a photo that was looked at but held no usable face is a search attempt: audited
            if e.status == StatusCode::UNPROCESSABLE_ENTITY {
                audited["outcome"] = json!(e.message);
                audit_access(&state, &token, AuditAction::Search, Some(purpose), audited, 0).await?;
            }
            return Err(e);
        }
    };
    audited["probe"] = json!({ "source": probe.source, "digest": probe.digest });

    let query = SearchQuery {
        since,
        until,
        camera: req.camera,
        max_distance,
        limit: limit as usize,
        threads: state.search.threads,
    };
    let index = state.index.clone();
    let (hits, searched) = tokio::task::spawn_blocking(move || {
        let index = index.read().unwrap();
        if index.model() != model {
            return Ok((Vec::new(), 0));
        }
        index.search(&embedding, &query).map(|h| (h, index.len()))
    })
    .await
    .map_err(|e| ApiError::internal("searching", e))?
    .map_err(|e| ApiError::param("embedding", e.to_string()))?;

    audit_access(&state, &token, AuditAction::Search, Some(purpose), audited, hits.len() as u64).await?;
    let trajectories = by_trajectory(&hits);
    let sightings = hits
        .into_iter()
        .map(|h| SightingMatch {
            sighting: h.sighting,
            trajectory: h.trajectory,
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

// ---- watchlist ---------------------------------------------------------------------------------

/// A face to raise `watchlist_match` alerts for.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WatchlistRequest {
    /// Shown in the alerts (e.g. a case reference; avoid a person's full name).
    pub name: String,
    /// REQUIRED: why (kept with the entry and in the audit log).
    pub purpose: Option<String>,
    /// RFC 3339; at most `[watchlist] max_days` (30) ahead.
    pub expires_at: String,
    pub image: Option<String>,
    pub embedding: Option<Vec<f32>>,
}

/// A watchlist entry as listed (never its embedding).
#[derive(Serialize, ToSchema)]
pub struct WatchlistOut {
    pub id: Uuid,
    pub name: String,
    pub purpose: String,
    pub model: String,
    pub created_by: String,
    pub created_at: String,
    pub expires_at: String,
}

impl From<&WatchlistEntry> for WatchlistOut {
    fn from(e: &WatchlistEntry) -> Self {
        WatchlistOut {
            id: e.id,
            name: e.name.clone(),
            purpose: e.purpose.clone(),
            model: e.model.clone(),
            created_by: e.created_by.clone(),
            created_at: ts::format(e.created_at),
            expires_at: ts::format(e.expires_at),
        }
    }
}

/// `GET /watchlist`: active entries, without embeddings.
#[derive(Serialize, ToSchema)]
pub struct WatchlistList {
    pub items: Vec<WatchlistOut>,
}

/// The answer to `POST /watchlist`: the entry and what its probe turned out to be.
#[derive(Serialize, ToSchema)]
pub struct WatchlistAdded {
    #[serde(flatten)]
    pub entry: WatchlistOut,
    pub probe: Probe,
}

#[utoipa::path(
    post,
    path = "/api/v1/watchlist",
    tag = "admin",
    security(("bearer" = [])),
    request_body = WatchlistRequest,
    responses(
        (status = 201, description = "the entry (without its embedding) and the probe; audited", body = WatchlistAdded),
        (status = 400, description = "a bad field, named in `parameter`", body = super::ErrorBody),
        super::Refused,
        (status = 422, description = "no usable face in the photo", body = super::ErrorBody),
        (status = 503, description = "photos cannot be embedded: send an embedding", body = super::ErrorBody)
    )
)]
pub(super) async fn watchlist_add(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    req: Result<Json<WatchlistRequest>, JsonRejection>,
) -> ApiResult {
    let token = authorize(&state, &headers, Role::Admin).await?;
    let req = body(req)?;
    let purpose = purpose_of(req.purpose)?;
    let name = req.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::param("name", "must be 1 to 200 characters"));
    }
    let now = state.clock.now();
    let expires_at = time_field("expires_at", Some(req.expires_at))?.expect("given");
    let max_days = state.watchlist.config().max_days;
    if expires_at <= now || expires_at > now + time::Duration::seconds_f64(max_days * 86_400.0) {
        return Err(ApiError::param("expires_at", format!("must be in the future and at most {max_days} days ahead")));
    }
    let (embedding, probe) = resolve_probe(&state, req.image, req.embedding, EMBEDDING_MODEL).await?;
    let entry = WatchlistEntry {
        id: sightline_contract::new_event_id(),
        name,
        purpose: purpose.clone(),
        model: EMBEDDING_MODEL.to_owned(),
        embedding,
        created_by: token.name.clone(),
        created_at: now,
        expires_at,
    };
    let audited = json!({
        "endpoint": "POST /api/v1/watchlist",
        "id": entry.id,
        "name": entry.name,
        "expires_at": ts::format(expires_at),
        "probe": { "source": probe.source, "digest": probe.digest },
    });
    audit_access(&state, &token, AuditAction::WatchlistAdd, Some(purpose), audited, 1).await?;
    let stored = entry.clone();
    blocking(&state, "adding to the watchlist", move |s| s.watchlist_add(&stored)).await?;
    let out = WatchlistOut::from(&entry);
    state.watchlist.add(entry);
    state.metrics.watchlist_entries.set(state.watchlist.len() as i64);
    tracing::info!(id = %out.id, name = %out.name, by = %token.name, "watchlist entry added");
    Ok((StatusCode::CREATED, Json(WatchlistAdded { entry: out, probe })).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/watchlist",
    tag = "admin",
    security(("bearer" = [])),
    params(("purpose" = Option<String>, Query, description = "why (kept in the audit log)")),
    responses(
        (status = 200, description = "active entries, without embeddings; audited", body = WatchlistList),
        super::Refused
    )
)]
pub(super) async fn watchlist_list(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let token = authorize(&state, &headers, Role::Admin).await?;
    let purpose = Params::parse(query, &["purpose"])?.purpose()?;
    let now = state.clock.now();
    let entries = blocking(&state, "listing the watchlist", move |s| s.watchlist_active(now)).await?;
    let audited = json!({ "endpoint": "GET /api/v1/watchlist" });
    audit_access(&state, &token, AuditAction::WatchlistList, purpose, audited, entries.len() as u64).await?;
    Ok(Json(WatchlistList { items: entries.iter().map(WatchlistOut::from).collect() }).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/watchlist/{id}",
    tag = "admin",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "UUID"),
        ("purpose" = Option<String>, Query, description = "why (kept in the audit log)")
    ),
    responses(
        (status = 204, description = "removed, its embedding erased, its raised alerts cleared; audited"),
        super::Refused,
        (status = 404, description = "unknown id", body = super::ErrorBody)
    )
)]
pub(super) async fn watchlist_remove(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let token = authorize(&state, &headers, Role::Admin).await?;
    let purpose = Params::parse(query, &["purpose"])?.purpose()?;
    let id = parse_id(&raw)?;
    let audited = json!({ "endpoint": "DELETE /api/v1/watchlist/{id}", "id": id });
    audit_access(&state, &token, AuditAction::WatchlistRemove, purpose, audited, 1).await?;
    if !blocking(&state, "removing from the watchlist", move |s| s.watchlist_remove(id)).await? {
        return Err(ApiError::not_found("watchlist entry", id));
    }
    let cleared = state.watchlist.remove(id, state.clock.now());
    state.metrics.watchlist_entries.set(state.watchlist.len() as i64);
    tracing::info!(%id, by = %token.name, cleared = cleared.len(), "watchlist entry removed");
    let alerts = state.alerts.clone();
    blocking(&state, "clearing the entry's alerts", move |_| alerts.publish(&cleared)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
