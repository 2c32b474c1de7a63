//! Which sites a request sees: the token's scope (`aggregator token create --sites`: each named
//! site with every site below it; no `--sites`: every site), narrowed by the request's `site`
//! filter to that site and the sites below it.
//!
//! A `site` that is not an id is a 400. A site the token may not see is refused with 403 naming
//! `site`, and the refusal is audited (action `out_of_scope`); to a scoped token an unknown site
//! and a site outside its scope look the same. An item outside the scope asked for by id (a trajectory, a sighting, an
//! alert) is a 404, as if it did not exist.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::json;

use super::purpose::refuse;
use super::request::{ApiError, ApiResult};
use super::state::ApiState;
use crate::sites::Scope;
use crate::store::{AuditAction, Token};

/// What `token` sees, narrowed to `site` (and the sites below it) when one is given.
pub(super) async fn scope(
    state: &Arc<ApiState>,
    token: &Token,
    site: Option<&str>,
    endpoint: &'static str,
) -> ApiResult<Scope> {
    let whole = state.sites.scope_of(token.sites.as_deref());
    let Some(site) = site else {
        return Ok(whole);
    };
    // not an id at all: malformed, refused before it is looked up, echoed or audited
    if sightline_contract::validate_id("site", site).is_err() {
        return Err(ApiError::param("site", "is not a site id ([a-z0-9][a-z0-9_-]{0,63})"));
    }
    if let Some(narrowed) = state.sites.narrow(&whole, site) {
        return Ok(narrowed);
    }
    if token.sites.is_none() {
        return Err(ApiError::param("site", format!("unknown site {site:?} (GET /api/v1/sites lists them)")));
    }
    let err = ApiError {
        parameter: Some("site".into()),
        ..ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("site {site:?} is not one token {:?} may see", token.name),
        )
    };
    let query = json!({ "endpoint": endpoint, "site": site });
    Err(refuse(state, token, AuditAction::OutOfScope, query, None, "scope", err).await)
}

/// Refuses tokens scoped to some sites, audited like a site outside the scope: what spans every
/// site (the watchlist) is for tokens of every site.
pub(super) async fn every_site(
    state: &Arc<ApiState>,
    token: &Token,
    what: &str,
    endpoint: &'static str,
) -> ApiResult<()> {
    if token.sites.is_none() {
        return Ok(());
    }
    let err = ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("{what} spans every site: token {:?} is scoped to some sites", token.name),
    );
    Err(refuse(state, token, AuditAction::OutOfScope, json!({ "endpoint": endpoint }), None, "scope", err).await)
}
