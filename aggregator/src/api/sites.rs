//! `GET /sites`: the sites the token may see, as a tree, for a client's site picker.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::request::{ApiResult, BadParameter, Params, Refused, Unanswered, authorize};
use super::scope::scope;
use super::state::ApiState;
use crate::auth::Role;

/// `GET /sites`.
#[derive(Serialize, ToSchema)]
pub(super) struct SiteList {
    /// In tree order: depth first, a parent before its children.
    items: Vec<SiteNode>,
}

/// One site of the tree.
#[derive(Serialize, ToSchema)]
pub(super) struct SiteNode {
    id: String,
    /// What people call it.
    #[schema(required = true)]
    name: Option<String>,
    /// The site above it, when the token may see that one too.
    #[schema(required = true)]
    parent: Option<String>,
    /// 0 at the top of what the token sees.
    depth: usize,
    /// How many cameras it has itself (not counting the sites below).
    cameras: usize,
}

#[utoipa::path(
    get,
    path = "/api/v1/sites",
    tag = "operator",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`{items}`: the sites the token may see, in tree order", body = SiteList),
        BadParameter,
        Refused,
        Unanswered
    )
)]
pub(super) async fn sites(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let token = authorize(&state, &headers, Role::Operator).await?;
    Params::parse(query, &[])?;
    let scope = scope(&state, &token, None, "GET /api/v1/sites").await?;
    let visible: Vec<_> = state.sites.iter().filter(|s| scope.allows(s.id())).collect();
    // depths restart at the top of what is visible
    let top = visible.iter().map(|s| s.depth).min().unwrap_or(0);
    let items = visible
        .iter()
        .map(|s| SiteNode {
            id: s.id().to_owned(),
            name: s.name.clone(),
            parent: s.parent.clone().filter(|p| scope.allows(p)),
            depth: s.depth - top,
            cameras: s.model.cameras().len(),
        })
        .collect();
    Ok(Json(SiteList { items }).into_response())
}
