//! `GET /site`: one site's model for the map: the georeference, the cameras' positions (site
//! metres and WGS84) and the links between them.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::request::{ApiError, ApiResult, BadParameter, Params, Refused, Unanswered, authorize};
use super::scope::scope;
use super::state::ApiState;
use crate::auth::Role;
use crate::site::GeoRef;

/// `GET /site`: the site model for the map.
#[derive(Serialize, ToSchema)]
pub(super) struct SiteOut {
    id: String,
    /// Where the site frame is on Earth; `null`: positions are site metres only.
    #[schema(required = true)]
    georef: Option<GeoRef>,
    cameras: Vec<SiteCamera>,
    links: Vec<SiteLink>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct SiteCamera {
    id: String,
    /// `[x, y]`, metres in the site frame.
    position: [f64; 2],
    /// How far from `position` the people it sees can stand (m).
    view_radius_m: f64,
    /// `[lon, lat]` (GeoJSON order), degrees; `null` without a georef.
    #[schema(required = true)]
    wgs84: Option<[f64; 2]>,
}

/// A walkway between two cameras with its transit time.
#[derive(Serialize, ToSchema)]
pub(super) struct SiteLink {
    from: String,
    to: String,
    /// Shortest transit (s).
    min_s: f64,
    /// Longest transit (s); `null`: no upper bound.
    #[schema(required = true)]
    max_s: Option<f64>,
    /// The window holds from `from` to `to` only.
    one_way: bool,
}

#[utoipa::path(
    get,
    path = "/api/v1/site",
    tag = "operator",
    security(("bearer" = [])),
    params(("site" = Option<String>, Query, description = "a site id; default the first site (tree order) with cameras the token may see")),
    responses(
        (status = 200, description = "the site: georeference, camera positions (site metres and WGS84), links", body = SiteOut),
        BadParameter,
        Refused,
        Unanswered
    )
)]
pub(super) async fn site(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let token = authorize(&state, &headers, Role::Operator).await?;
    let p = Params::parse(query, &["site"])?;
    let asked = p.str("site")?;
    let scope = scope(&state, &token, asked.as_deref(), "GET /api/v1/site").await?;
    let site = match &asked {
        Some(id) => state.sites.get(id),
        None => state.sites.iter().find(|s| scope.allows(s.id()) && !s.model.cameras().is_empty()),
    };
    let Some(site) = site else {
        return Err(ApiError::not_found("site", "with cameras this token may see"));
    };
    let model = &site.model;
    let cameras = model
        .cameras()
        .iter()
        .map(|c| SiteCamera {
            id: c.id.clone(),
            position: c.position,
            view_radius_m: c.view_radius_m,
            wgs84: model.lon_lat(c.position),
        })
        .collect();
    let links = model
        .links()
        .iter()
        .map(|l| SiteLink {
            from: l.from.clone(),
            to: l.to.clone(),
            min_s: l.min_s,
            max_s: l.max_s,
            one_way: l.one_way,
        })
        .collect();
    Ok(Json(SiteOut { id: model.site().id.clone(), georef: model.site().georef, cameras, links }).into_response())
}
