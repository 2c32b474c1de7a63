//! `GET /healthz` (no token: for load balancers and supervisors) and `GET /metrics`
//! (Prometheus/OpenMetrics text: counts and durations, nothing personal).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::state::ApiState;

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "`{\"status\": \"ok\", \"search_index\": \"ready\"}`", body = Health))
)]
pub(super) async fn healthz(State(state): State<Arc<ApiState>>) -> Response {
    let search_index = {
        let index = state.index.read().unwrap();
        if index.loading() {
            SearchIndexState::Loading
        } else if index.unavailable().is_some() {
            SearchIndexState::Unavailable
        } else {
            SearchIndexState::Ready
        }
    };
    Json(Health { status: "ok", search_index }).into_response()
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((
        status = 200,
        description = "Prometheus/OpenMetrics text: counts and durations, nothing personal",
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8",
        body = String
    ))
)]
pub(super) async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    let body = state.metrics.encode();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub(super) struct Health {
    /// Always `ok`: the process answers.
    status: &'static str,
    search_index: SearchIndexState,
}

/// Whether `POST /api/v1/search` can answer: after a start the search index loads from the store
/// (searches get 503 `unavailable` meanwhile); a load that failed leaves it unavailable until a
/// restart (the log says why).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum SearchIndexState {
    Loading,
    Ready,
    Unavailable,
}
