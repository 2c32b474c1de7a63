//! `GET /audit` (admin): the audit log, in write order, paged with `after`. Reading it is itself
//! an accountable access, audited like the others. An admin scoped to some sites reads the
//! records of accesses made by tokens scoped within its sites (a token of every site made the
//! others); `site` narrows the same way.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::purpose::require_purpose;
use super::request::{
    ApiResult, BadParameter, DEFAULT_LIMIT, MAX_LIMIT, PURPOSE_DOC, Params, Refused, Unanswered, audit_access,
    authorize, blocking, check_window, opt_ts,
};
use super::scope::scope;
use super::state::ApiState;
use crate::auth::Role;
use crate::store::{AuditAction, AuditQuery, AuditRecord};

#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "admin",
    security(("bearer" = [])),
    params(
        ("since" = Option<String>, Query, description = "RFC 3339, inclusive"),
        ("until" = Option<String>, Query, description = "RFC 3339, exclusive"),
        ("token" = Option<String>, Query, description = "a token name"),
        ("after" = Option<i64>, Query, description = "`next_after` of the previous page"),
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 100"),
        ("site" = Option<String>, Query, description = "records of tokens scoped within this site and the sites below it"),
        ("purpose" = String, Query, description = PURPOSE_DOC, min_length = 1, max_length = 500)
    ),
    responses(
        (status = 200, description = "`{items, next_after}`: audit records in write order; audited", body = AuditPage),
        BadParameter,
        Refused,
        Unanswered
    )
)]
pub(super) async fn audit(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let token = authorize(&state, &headers, Role::Admin).await?;
    let p = Params::parse(query, &["since", "until", "token", "after", "limit", "purpose", "site"])?;
    let purpose = require_purpose(&state, &token, &p, AuditAction::AuditRead, "GET /api/v1/audit").await?;
    let site = p.str("site")?;
    let scope = scope(&state, &token, site.as_deref(), "GET /api/v1/audit").await?;
    let after_seq = p.integer("after")?;
    let q = AuditQuery {
        since: p.time("since")?,
        until: p.time("until")?,
        token: p.str("token")?,
        after_seq,
        limit: p.limit("limit", DEFAULT_LIMIT, MAX_LIMIT)?,
        sites: scope.filter(),
    };
    check_window(q.since, q.until)?;
    let audited = json!({
        "endpoint": "GET /api/v1/audit",
        "since": opt_ts(q.since),
        "until": opt_ts(q.until),
        "token": q.token,
        "after": q.after_seq,
        "site": site,
        "limit": q.limit,
    });
    let limit = q.limit as usize;
    let items = blocking(&state, "reading the audit log", move |s| s.audit_log(&q)).await?;
    audit_access(&state, &token, AuditAction::AuditRead, Some(purpose), audited, items.len() as u64).await?;
    // A full page may have a next one: continue with `after`.
    let next = if items.len() == limit { items.last().map(|r| r.seq) } else { None };
    Ok(Json(AuditPage { items, next_after: next }).into_response())
}

/// `GET /audit`: one page of audit records in write order.
#[derive(Serialize, ToSchema)]
pub(super) struct AuditPage {
    items: Vec<AuditRecord>,
    /// `after` of the next page; `null` when this page was not full.
    #[schema(required = true)]
    next_after: Option<i64>,
}
