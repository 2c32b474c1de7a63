//! The watchlist (`/watchlist`, admin): faces a new sighting raises a `watchlist_match` alert
//! for (the ingest thread matches them). An entry is added with a probe (`super::probe`) and
//! keeps the probe's embedding until it expires or is removed; listing never shows embeddings.
//! Every change and every listing is audited.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sightline_contract::ts;
use sightline_vision::EMBEDDING_MODEL;
use utoipa::ToSchema;
use uuid::Uuid;

use super::probe::{Probe, resolve_probe};
use super::purpose::{require_body_purpose, require_purpose};
use super::request::{
    ApiError, ApiResult, ErrorBody, PURPOSE_DOC, Params, Refused, audit_access, authorize, blocking, body, parse_id,
    time_field,
};
use super::scope::every_site;
use super::state::ApiState;
use crate::auth::Role;
use crate::store::{AuditAction, WatchlistEntry};

/// A face to raise `watchlist_match` alerts for.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WatchlistRequest {
    /// Shown in the alerts (e.g. a case reference; avoid a person's full name).
    pub name: String,
    /// REQUIRED: why (kept with the entry and in the audit log); without it the request is
    /// refused (400) and the refusal audited.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 500)]
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
        (status = 400, description = "a bad field, named in `parameter`", body = ErrorBody),
        Refused,
        (status = 422, description = "no usable face in the photo", body = ErrorBody),
        (status = 503, description = "photos cannot be embedded: send an embedding", body = ErrorBody)
    )
)]
pub(super) async fn watchlist_add(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    req: Result<Json<WatchlistRequest>, JsonRejection>,
) -> ApiResult {
    let token = authorize(&state, &headers, Role::Admin).await?;
    every_site(&state, &token, "the watchlist", "POST /api/v1/watchlist").await?;
    let req = body(req)?;
    let purpose =
        require_body_purpose(&state, &token, req.purpose, AuditAction::WatchlistAdd, "POST /api/v1/watchlist").await?;
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
    let (embedding, probe) = resolve_probe(&state, req.image, req.embedding, EMBEDDING_MODEL, &mut None).await?;
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
    params(("purpose" = String, Query, description = PURPOSE_DOC, min_length = 1, max_length = 500)),
    responses(
        (status = 200, description = "active entries, without embeddings; audited", body = WatchlistList),
        Refused
    )
)]
pub(super) async fn watchlist_list(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let token = authorize(&state, &headers, Role::Admin).await?;
    every_site(&state, &token, "the watchlist", "GET /api/v1/watchlist").await?;
    let p = Params::parse(query, &["purpose"])?;
    let purpose = require_purpose(&state, &token, &p, AuditAction::WatchlistList, "GET /api/v1/watchlist").await?;
    let now = state.clock.now();
    let entries = blocking(&state, "listing the watchlist", move |s| s.watchlist_active(now)).await?;
    let audited = json!({ "endpoint": "GET /api/v1/watchlist" });
    audit_access(&state, &token, AuditAction::WatchlistList, Some(purpose), audited, entries.len() as u64).await?;
    Ok(Json(WatchlistList { items: entries.iter().map(WatchlistOut::from).collect() }).into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/watchlist/{id}",
    tag = "admin",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "UUID"),
        ("purpose" = String, Query, description = PURPOSE_DOC, min_length = 1, max_length = 500)
    ),
    responses(
        (status = 204, description = "removed, its embedding erased, its raised alerts cleared; audited"),
        Refused,
        (status = 404, description = "unknown id", body = ErrorBody)
    )
)]
pub(super) async fn watchlist_remove(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let token = authorize(&state, &headers, Role::Admin).await?;
    every_site(&state, &token, "the watchlist", "DELETE /api/v1/watchlist/{id}").await?;
    let p = Params::parse(query, &["purpose"])?;
    let purpose =
        require_purpose(&state, &token, &p, AuditAction::WatchlistRemove, "DELETE /api/v1/watchlist/{id}").await?;
    let id = parse_id(&raw)?;
    let audited = json!({ "endpoint": "DELETE /api/v1/watchlist/{id}", "id": id });
    audit_access(&state, &token, AuditAction::WatchlistRemove, Some(purpose), audited, 1).await?;
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
