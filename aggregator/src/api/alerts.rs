//! `GET /alerts` (alert events, newest first, with their acknowledgement) and
//! `POST /alerts/{id}/ack` (an operator acknowledges an alert: the first acknowledgement is kept,
//! and open event streams get `alert_ack`).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde::Serialize;
use sightline_contract::{AlertKind, AlertState, ts};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::request::{
    ApiError, ApiResult, BadParameter, DEFAULT_LIMIT, ErrorBody, MAX_LIMIT, Params, Refused, SITE_DOC, Unanswered,
    authorize, blocking, check_window,
};
use super::scope::scope;
use super::state::ApiState;
use crate::auth::Role;
use crate::store::{Acknowledged, AlertQuery};

#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    tag = "operator",
    security(("bearer" = [])),
    params(
        ("since" = Option<String>, Query, description = "RFC 3339, inclusive"),
        ("until" = Option<String>, Query, description = "RFC 3339, exclusive"),
        ("kind" = Option<String>, Query, description = "an alert kind, e.g. camera_offline"),
        ("state" = Option<String>, Query, description = "raised or cleared"),
        ("site" = Option<String>, Query, description = SITE_DOC),
        ("camera" = Option<String>, Query),
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 100")
    ),
    responses(
        (status = 200, description = "`{items}`: alert events, newest first, with acknowledgement; raised ones whose edge agent went away are `stale`", body = AlertList),
        BadParameter,
        Refused,
        Unanswered
    )
)]
pub(super) async fn alerts(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let token = authorize(&state, &headers, Role::Operator).await?;
    let p = Params::parse(query, &["since", "until", "kind", "state", "site", "camera", "limit"])?;
    let scope = scope(&state, &token, p.str("site")?.as_deref(), "GET /api/v1/alerts").await?;
    let q = AlertQuery {
        since: p.time("since")?,
        until: p.time("until")?,
        kind: p.enumerated::<AlertKind>("kind")?,
        state: p.enumerated::<AlertState>("state")?,
        sites: scope.filter(),
        camera: p.str("camera")?,
        limit: p.limit("limit", DEFAULT_LIMIT, MAX_LIMIT)?,
    };
    check_window(q.since, q.until)?;
    let items = blocking(&state, "listing alerts", move |s| crate::liveness::list_alerts(s, &q)).await?;
    Ok(Json(AlertList { items }).into_response())
}

/// Longest alert id accepted by `POST /alerts/{id}/ack` (characters).
pub(super) const MAX_ALERT_ID_CHARS: usize = 256;

/// `POST /alerts/{id}/ack`: the alert's acknowledgement (also sent as the live event `alert_ack`).
#[derive(Serialize, ToSchema)]
pub struct Acknowledgement {
    /// The alert's stable id (the `alert` field of its events).
    pub alert: String,
    /// The token name that acknowledged it first.
    pub acknowledged_by: String,
    #[serde(with = "ts::rfc3339_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub acknowledged_at: OffsetDateTime,
    /// True when it already was acknowledged (the first acknowledgement is kept, unchanged).
    pub already: bool,
}

#[utoipa::path(
    post,
    path = "/api/v1/alerts/{id}/ack",
    tag = "operator",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "the alert's stable id (`alert` of its events)")),
    responses(
        (status = 200, description = "the acknowledgement (who and when; the first one is kept); every event of the alert carries it, and open event streams get `alert_ack`", body = Acknowledgement),
        BadParameter,
        Refused,
        (status = 404, description = "no event of this alert is stored", body = ErrorBody),
        Unanswered
    )
)]
pub(super) async fn acknowledge(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let token = authorize(&state, &headers, Role::Operator).await?;
    Params::parse(query, &[])?;
    if id.is_empty() || id.chars().count() > MAX_ALERT_ID_CHARS || id.chars().any(char::is_control) {
        return Err(ApiError::param("id", format!("must be 1 to {MAX_ALERT_ID_CHARS} printable characters")));
    }
    let now = state.clock.now();
    let scope = scope(&state, &token, None, "POST /api/v1/alerts/{id}/ack").await?;
    let (alert, by) = (id.clone(), token.name.clone());
    let (outcome, site) = blocking(&state, "acknowledging an alert", move |s| {
        // an alert of a site outside the token's scope is unknown to it
        let site = s.alert_events(&alert, 1)?.pop().map(|e| e.alert.site).filter(|site| scope.allows(site));
        let Some(site) = site else {
            return Ok((Acknowledged::NotFound, String::new()));
        };
        Ok((s.acknowledge_alert(&alert, &by, now)?, site))
    })
    .await?;
    let ack = match outcome {
        Acknowledged::Now => {
            Acknowledgement { alert: id, acknowledged_by: token.name, acknowledged_at: now, already: false }
        }
        Acknowledged::Already { by, at } => {
            Acknowledgement { alert: id, acknowledged_by: by, acknowledged_at: at, already: true }
        }
        Acknowledged::NotFound => return Err(ApiError::not_found("alert", format!("{id:?}"))),
    };
    if !ack.already {
        match serde_json::to_string(&ack) {
            Ok(json) => state.events.alert_ack(&site, &ack.alert, json),
            Err(e) => tracing::error!(error = %e, "alert acknowledgement not streamed"),
        }
    }
    Ok(Json(ack).into_response())
}

/// `GET /alerts`: newest first.
#[derive(Serialize, ToSchema)]
pub(super) struct AlertList {
    items: Vec<crate::liveness::AlertOut>,
}
