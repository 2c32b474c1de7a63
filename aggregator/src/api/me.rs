//! `GET /me`: who the token is (its name, role and sites), for a client to adapt to them. Any
//! valid token; not audited.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::request::{ApiResult, BadParameter, Params, Refused, Unanswered, authorize};
use super::state::ApiState;
use crate::auth::Role;

/// `GET /me`: who the token is.
#[derive(Serialize, ToSchema)]
pub(super) struct Me {
    /// The token's name.
    name: String,
    role: Role,
    /// The sites it is scoped to (each with the sites below it); `null`: every site.
    #[schema(required = true)]
    sites: Option<Vec<String>>,
}

#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "operator",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the token's name, role and sites (any valid token; not audited)", body = Me),
        BadParameter,
        Refused,
        Unanswered
    )
)]
pub(super) async fn me(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let token = authorize(&state, &headers, Role::Operator).await?;
    Params::parse(query, &[])?;
    Ok(Json(Me { name: token.name, role: token.role, sites: token.sites }).into_response())
}
