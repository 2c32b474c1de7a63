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
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Health))
)]
pub(super) async fn healthz() -> Response {
    Json(Health { status: "ok" }).into_response()
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
    /// Always `ok`.
    status: &'static str,
}
