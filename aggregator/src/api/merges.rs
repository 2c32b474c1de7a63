//! `GET /merges` (admin): the trajectory merges the correlators made (repair after the fact), in
//! the order they were made, with their evidence, paged with `after`. A merge names trajectories
//! and a sighting, no biometric data; an admin scoped to some sites sees theirs.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::request::{
    ApiResult, BadParameter, DEFAULT_LIMIT, MAX_LIMIT, Params, Refused, Unanswered, authorize, blocking,
};
use super::scope::scope;
use super::state::ApiState;
use crate::auth::Role;
use crate::store::{MergeQuery, MergeRecord};

#[utoipa::path(
    get,
    path = "/api/v1/merges",
    tag = "admin",
    security(("bearer" = [])),
    params(
        ("after" = Option<i64>, Query, description = "`next_after` of the previous page"),
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 100"),
        ("site" = Option<String>, Query, description = "merges of this site and the sites below it")
    ),
    responses(
        (status = 200, description = "`{items, next_after}`: trajectory merges in the order they were made", body = MergePage),
        BadParameter,
        Refused,
        Unanswered
    )
)]
pub(super) async fn merges(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let token = authorize(&state, &headers, Role::Admin).await?;
    let p = Params::parse(query, &["after", "limit", "site"])?;
    let site = p.str("site")?;
    let scope = scope(&state, &token, site.as_deref(), "GET /api/v1/merges").await?;
    let after_seq = p.integer("after")?;
    let q = MergeQuery { after_seq, sites: scope.filter(), limit: p.limit("limit", DEFAULT_LIMIT, MAX_LIMIT)? };
    let limit = q.limit as usize;
    let items = blocking(&state, "reading the trajectory merges", move |s| s.merges(&q)).await?;
    // A full page may have a next one: continue with `after`.
    let next = if items.len() == limit { items.last().map(|r| r.seq) } else { None };
    Ok(Json(MergePage { items, next_after: next }).into_response())
}

/// `GET /merges`: one page of trajectory merges.
#[derive(Serialize, ToSchema)]
pub(super) struct MergePage {
    items: Vec<MergeRecord>,
    /// `after` of the next page; `null` when this page was not full.
    #[schema(required = true)]
    next_after: Option<i64>,
}
