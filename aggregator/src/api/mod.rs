//! The integrator API (`/api/v1`, JSON, bearer tokens): cameras, alerts, crowd series,
//! trajectories (list, detail, GeoJSON), sightings, the audit log and the trajectory merges, on
//! the store; face search
//! and the watchlist, on the in-memory search index; live events (Server-Sent Events);
//! Prometheus `/metrics`; the operator dashboard at `/` ([`ui`]). One file per resource; what
//! every request goes through (token, role, audit record, parameters, errors) is in `request`.
//!
//! Every request but `/healthz` carries `Authorization: Bearer slt_…`; the token is looked up by
//! its hash (`auth::token_hash`), revoked tokens are unknown. No or an unknown token: 401 with
//! `WWW-Authenticate: Bearer`; too low a role: 403. Roles are ordered operator < integrator < admin.
//!
//! Accountability: every trajectory read (list, detail, GeoJSON), sighting read, search, watchlist
//! read or change, live stream of sightings and audit-log read is written to the audit log
//! *before* it is answered, with the token's name and role, its required `purpose` (`purpose`:
//! without one it is refused and the refusal audited), the query and the result count. When that
//! write fails the request fails (500): nothing personal is answered without its audit record.
//!
//! Errors are JSON: `{"error": "bad_request", "message": "…", "parameter": "since"}`. A bad
//! query parameter (unparsable, out of range, unknown, repeated) is a 400 naming it; an unknown id
//! is a 404. Times are RFC 3339 with milliseconds (`sightline_contract::ts`); time windows are
//! half-open (`since` inclusive, `until` exclusive).

mod alert_close;
mod alerts;
mod audit;
mod cameras;
mod crowd;
mod health;
mod live;
mod me;
mod merges;
mod openapi;
pub mod photos;
mod probe;
mod purpose;
mod request;
mod scope;
mod search;
mod site;
mod sites;
mod state;
mod trajectories;
pub mod ui;
mod watchlist;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{delete, get, post};

pub use alerts::Acknowledgement;
pub use crowd::{DEFAULT_CROWD_STEP_S, DEFAULT_CROWD_WINDOW_S, MAX_CROWD_BUCKETS};
pub use openapi::ApiDoc;
pub use request::{ApiError, DEFAULT_LIMIT, ErrorBody, MAX_LIMIT, MAX_PURPOSE_CHARS};
pub use state::ApiState;

/// The API's routes: `/healthz`, `/metrics`, `/api/v1/…`, and the operator dashboard at `/`
/// ([`ui`]).
pub fn router(state: Arc<ApiState>) -> Router {
    // a photo in base64 is 4/3 of its size
    let upload_limit = state.search.max_photo_bytes / 3 * 4 + (64 << 10);
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .route("/api/v1/events", get(live::events))
        .route("/api/v1/search", post(search::search).layer(DefaultBodyLimit::max(upload_limit)))
        .route(
            "/api/v1/watchlist",
            get(watchlist::watchlist_list).post(watchlist::watchlist_add).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/api/v1/watchlist/{id}", delete(watchlist::watchlist_remove))
        .route("/api/v1/cameras", get(cameras::cameras))
        .route("/api/v1/alerts", get(alerts::alerts))
        .route("/api/v1/alerts/{id}/ack", post(alerts::acknowledge))
        .route("/api/v1/alerts/{id}/close", post(alert_close::close).layer(alert_close::body_limit()))
        .route("/api/v1/me", get(me::me))
        .route("/api/v1/site", get(site::site))
        .route("/api/v1/sites", get(sites::sites))
        .route("/api/v1/crowd", get(crowd::crowd))
        .route("/api/v1/trajectories", get(trajectories::trajectories))
        .route("/api/v1/trajectories/{id}", get(trajectories::trajectory))
        .route("/api/v1/trajectories/{id}/geojson", get(trajectories::trajectory_geojson))
        .route("/api/v1/sightings/{id}", get(trajectories::sighting))
        .route("/api/v1/audit", get(audit::audit))
        .route("/api/v1/merges", get(merges::merges))
        .route("/api/v1/openapi.json", get(openapi::openapi_json))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), count_response))
        .route("/", get(ui::root))
        .fallback(ui::fallback)
        .with_state(state)
}

/// Counts each response by its route pattern (not the path: ids would explode the label set).
async fn count_response(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let resp = next.run(req).await;
    if let Some(route) = route {
        state.metrics.http_response(&route, resp.status().as_u16());
    }
    resp
}

/// Serves [`router`] on `listener` until `shutdown` turns true (or its sender is dropped), then
/// finishes the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    axum::serve(listener, router(state)).with_graceful_shutdown(stop).await
}
