//! `POST /api/v1/alerts/{id}/close` (admin): closes a *stale* alert with a reason.
//!
//! A raised alert of an edge kind is stale when the edge agent that raised it went away (it is
//! offline, or a new process of it started since: [`crate::liveness::Fleet::stale`]): nobody is
//! left to clear it. An admin closes it: the aggregator stores a `cleared` event of the alert
//! (`details: {closed_by, reason}`), streams it live and publishes it like its own alerts; the
//! close is written to the audit log first (action `alert_close`, the reason as its purpose).
//! An alert that is not raised, or not stale, is refused with 409: a live agent clears its own.

use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;
use sightline_contract::{Alert, AlertState, new_event_id, ts};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::alerts::MAX_ALERT_ID_CHARS;
use super::request::{
    ApiError, ApiResult, BadParameter, ErrorBody, Params, Refused, Unanswered, audit_access, authorize, blocking,
};
use super::scope::scope;
use super::state::ApiState;
use crate::auth::Role;
use crate::liveness::{Fleet, Stale};
use crate::sites::Scope;
use crate::store::{AuditAction, Store, StoreError};

/// Longest `reason` accepted (characters).
pub const MAX_REASON_CHARS: usize = 500;

/// Most events of one alert read to decide (a raise and a clear; more are repeats).
const MAX_EVENTS: u32 = 100;

/// Largest request body (bytes).
pub const MAX_BODY_BYTES: usize = 8 << 10;

/// Why an admin closes a stale alert.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseRequest {
    /// REQUIRED: why (1 to 500 printable characters); kept in the audit log and in the clear's
    /// `details.reason`.
    pub reason: Option<String>,
}

/// What the store says of the alert.
enum Decision {
    NotFound,
    /// Cleared already (when).
    NotRaised(OffsetDateTime),
    NotStale(String),
    Close {
        raised: Box<Alert>,
        stale: Stale,
    },
}

fn decide(store: &dyn Store, alert: &str, scope: &Scope) -> Result<Decision, StoreError> {
    let events = store.alert_events(alert, MAX_EVENTS)?;
    // an alert of a site outside the token's scope is unknown to it
    if events.first().is_none_or(|e| !scope.allows(&e.alert.site)) {
        return Ok(Decision::NotFound);
    }
    if let Some(c) = events.iter().find(|e| e.alert.state == AlertState::Cleared) {
        return Ok(Decision::NotRaised(c.alert.ts));
    }
    // newest first: the latest raise
    let raised = events.into_iter().next().expect("not empty").alert;
    let (_, fleet) = Fleet::load(store)?;
    Ok(match fleet.stale(&raised) {
        Some(stale) => Decision::Close { raised: Box::new(raised), stale },
        None if !crate::liveness::raised_by_edge(raised.kind) => Decision::NotStale(format!(
            "a {} alert is the aggregator's own, never stale",
            serde_json::to_value(raised.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
        )),
        None => Decision::NotStale(match fleet.agent_of(&raised.site, &raised.camera) {
            Some(a) => format!("its edge agent {} is online and raised it: it clears it itself", a.status.agent),
            None => format!("no edge agent is known for camera {}", raised.camera),
        }),
    })
}

/// Serialises closes: two admins closing the same alert make one clear.
fn closing() -> &'static tokio::sync::Mutex<()> {
    static LOCK: OnceLock<tokio::sync::Mutex<()>> = OnceLock::new();
    LOCK.get_or_init(|| tokio::sync::Mutex::new(()))
}

fn conflict(message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "conflict", message)
}

#[utoipa::path(
    post,
    path = "/api/v1/alerts/{id}/close",
    tag = "admin",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "the alert's stable id (`alert` of its events)")),
    request_body = CloseRequest,
    responses(
        (status = 200, description = "the `cleared` event stored (`details`: `closed_by`, `reason`), also streamed as a live `alert` event; audited (`alert_close`)", body = sightline_contract::Alert),
        BadParameter,
        Refused,
        (status = 404, description = "no event of this alert is stored", body = ErrorBody),
        (status = 409, description = "the alert is cleared already, or not stale (its edge agent is online and raised it)", body = ErrorBody),
        Unanswered
    )
)]
pub async fn close(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Result<Json<CloseRequest>, JsonRejection>,
) -> ApiResult {
    let token = authorize(&state, &headers, Role::Admin).await?;
    Params::parse(query, &[])?;
    if id.is_empty() || id.chars().count() > MAX_ALERT_ID_CHARS || id.chars().any(char::is_control) {
        return Err(ApiError::param("id", format!("must be 1 to {MAX_ALERT_ID_CHARS} printable characters")));
    }
    let Json(req) = body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let reason = req.reason.map(|r| r.trim().to_owned()).unwrap_or_default();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control) {
        return Err(ApiError::param("reason", format!("is required: 1 to {MAX_REASON_CHARS} printable characters")));
    }

    let scope = scope(&state, &token, None, "POST /api/v1/alerts/{id}/close").await?;
    let _one_at_a_time = closing().lock().await;
    let alert = id.clone();
    let (raised, stale) = match blocking(&state, "closing an alert", move |s| decide(s, &alert, &scope)).await? {
        Decision::Close { raised, stale } => (*raised, stale),
        Decision::NotFound => return Err(ApiError::not_found("alert", format!("{id:?}"))),
        Decision::NotRaised(at) => {
            tracing::info!(alert = %id, token = %token.name, "alert close refused: cleared already");
            return Err(conflict(format!("alert {id:?} is not raised: it was cleared at {}", ts::format(at))));
        }
        Decision::NotStale(why) => {
            tracing::info!(alert = %id, token = %token.name, %why, "alert close refused: not stale");
            return Err(conflict(format!("alert {id:?} is not stale: {why}")));
        }
    };
    let audited = json!({
        "endpoint": "POST /api/v1/alerts/{id}/close",
        "alert": id,
        "kind": raised.kind,
        "camera": raised.camera,
        "agent": stale.agent,
        "stale_since": ts::format(stale.since),
    });
    audit_access(&state, &token, AuditAction::AlertClose, Some(reason.clone()), audited, 1).await?;
    // dated now, and never before its raise (the agent's clock may run ahead of ours)
    let clear = Alert {
        id: new_event_id(),
        ts: state.clock.now().max(raised.ts),
        state: AlertState::Cleared,
        message: format!("closed by {}: {reason} (stale: {} since {})", token.name, stale.why, ts::format(stale.since)),
        details: Some(json!({ "closed_by": token.name, "reason": reason })),
        ..raised
    };
    let publisher = state.alerts.clone();
    let stored = clear.clone();
    blocking(&state, "storing the clear of a closed alert", move |_| publisher.publish(&[stored])).await?;
    tracing::info!(alert = %id, token = %token.name, agent = %stale.agent, "stale alert closed");
    Ok(Json(clear).into_response())
}

/// For the router: the body limit of this endpoint.
pub fn body_limit() -> axum::extract::DefaultBodyLimit {
    axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES)
}
