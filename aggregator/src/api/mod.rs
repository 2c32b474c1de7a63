//! The integrator API (`/api/v1`, JSON, bearer tokens): cameras, alerts, crowd series,
//! trajectories (list, detail, GeoJSON), sightings and the audit log, on the [`Store`]; face
//! search and the watchlist ([`search`]); live events ([`live`]); Prometheus `/metrics`.
//!
//! Every request but `/healthz` carries `Authorization: Bearer slt_…`; the token is looked up by
//! its hash (`auth::token_hash`), revoked tokens are unknown. No or an unknown token: 401 with
//! `WWW-Authenticate: Bearer`; too low a role: 403. Roles are ordered operator < integrator < admin.
//!
//! Accountability: every trajectory read (list, detail, GeoJSON), sighting read, search, watchlist
//! change, live stream of sightings and audit-log read is written to the audit log *before* it is answered, with the token's name and
//! role, the optional `purpose` query parameter, the query and the result count. When that write
//! fails the request fails (500): nothing personal is answered without its audit record.
//!
//! Errors are JSON: `{"error": "bad_request", "message": "…", "parameter": "since"}`. A bad
//! query parameter (unparsable, out of range, unknown, repeated) is a 400 naming it; an unknown id
//! is a 404. Times are RFC 3339 with milliseconds (`sightline_contract::ts`); time windows are
//! half-open (`since` inclusive, `until` exclusive).

mod alert_close;
mod live;
mod search;
pub mod ui;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sightline_contract::{AlertKind, AlertState, Clock, ts};
use time::OffsetDateTime;
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use crate::auth::{Role, token_hash};
use crate::config::SearchConfig;
use crate::events::Events;
use crate::latest::LatestCrowd;
use crate::metrics::Metrics;
use crate::search::SearchIndex;
use crate::site::SiteModel;
use crate::store::{
    Acknowledged, AlertQuery, AuditAction, AuditEntry, AuditQuery, CameraRecord, CrowdQuery, Cursor, Store, StoreError,
    Token, TrajectoryQuery,
};
use crate::watchlist::{AlertPublisher, Watchlist, WatchlistConfig};

/// Default and largest page sizes.
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;
/// Default crowd-series window (s) before `until` and bucket width (s).
pub const DEFAULT_CROWD_WINDOW_S: i64 = 3600;
pub const DEFAULT_CROWD_STEP_S: u32 = 60;
/// Most buckets one crowd-series request may span.
pub const MAX_CROWD_BUCKETS: i64 = 10_000;
/// Longest `purpose` accepted (characters).
pub const MAX_PURPOSE_CHARS: usize = 500;

/// What the API serves from.
pub struct ApiState {
    pub store: Arc<dyn Store>,
    /// The time of audit records and of default time windows.
    pub clock: Arc<dyn Clock>,
    /// Camera positions and the georeference, for GeoJSON and WGS84 positions.
    pub site: SiteModel,
    pub metrics: Arc<Metrics>,
    /// What the ingest thread stores, live (`GET /events`).
    pub events: Events,
    /// Each camera's latest crowd measurement with its density grid, from the ingest thread
    /// (`GET /cameras`; the store keeps no grid).
    pub latest_crowd: LatestCrowd,
    /// The embeddings inside the retention window (`POST /search`).
    pub index: Arc<RwLock<SearchIndex>>,
    /// The face pipeline for photos, or why there is none.
    pub faces: Result<Arc<Mutex<sightline_vision::FacePipeline>>, String>,
    pub watchlist: Arc<Watchlist>,
    /// Where clears of removed watchlist entries go.
    pub alerts: Arc<AlertPublisher>,
    pub search: SearchConfig,
    /// Ends the live event streams at shutdown (`None`: they end when the client leaves).
    pub shutdown: Option<tokio::sync::watch::Receiver<bool>>,
}

impl ApiState {
    /// A state on `store` with an empty search index and watchlist, no face pipeline and live
    /// events nobody publishes; `aggregator run` fills these in.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, site: SiteModel) -> Self {
        let events = Events::default();
        let model = sightline_vision::EMBEDDING_MODEL;
        Self {
            alerts: Arc::new(AlertPublisher::new(store.clone(), events.clone(), None, clock.clone())),
            watchlist: Arc::new(Watchlist::empty(WatchlistConfig::default())),
            index: Arc::new(RwLock::new(SearchIndex::new(model, sightline_vision::EMBEDDING_DIM))),
            faces: Err("no face models loaded".into()),
            metrics: Arc::new(Metrics::new()),
            search: SearchConfig::default(),
            shutdown: None,
            latest_crowd: LatestCrowd::default(),
            events,
            store,
            clock,
            site,
        }
    }
}

/// The API's routes: `/healthz`, `/metrics`, `/api/v1/…`, and the operator dashboard at `/`
/// ([`ui`]).
pub fn router(state: Arc<ApiState>) -> Router {
    // a photo in base64 is 4/3 of its size
    let upload_limit = state.search.max_photo_bytes / 3 * 4 + (64 << 10);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/events", get(live::events))
        .route("/api/v1/search", post(search::search).layer(DefaultBodyLimit::max(upload_limit)))
        .route(
            "/api/v1/watchlist",
            get(search::watchlist_list).post(search::watchlist_add).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/api/v1/watchlist/{id}", delete(search::watchlist_remove))
        .route("/api/v1/cameras", get(cameras))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/alerts/{id}/ack", post(acknowledge))
        .route("/api/v1/alerts/{id}/close", post(alert_close::close).layer(alert_close::body_limit()))
        .route("/api/v1/me", get(me))
        .route("/api/v1/site", get(site))
        .route("/api/v1/crowd", get(crowd))
        .route("/api/v1/trajectories", get(trajectories))
        .route("/api/v1/trajectories/{id}", get(trajectory))
        .route("/api/v1/trajectories/{id}/geojson", get(trajectory_geojson))
        .route("/api/v1/sightings/{id}", get(sighting))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/openapi.json", get(openapi_json))
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

// ---- errors ------------------------------------------------------------------------------------

/// An error answer: status, a machine-readable `error`, a message, and the parameter at fault.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    parameter: Option<String>,
    www_authenticate: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), parameter: None, www_authenticate: None }
    }

    fn param(name: &str, message: impl Into<String>) -> Self {
        Self {
            parameter: Some(name.to_string()),
            ..Self::new(StatusCode::BAD_REQUEST, "bad_request", format!("`{name}`: {}", message.into()))
        }
    }

    fn not_found(what: &str, id: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no {what} {id}"))
    }

    fn internal(context: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "API: {context}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("{context} failed; see the aggregator's log"))
    }

    fn store(context: &str, e: StoreError) -> Self {
        match e {
            StoreError::NotFound { what, key } => Self::not_found(what, key),
            other => Self::internal(context, other),
        }
    }
}

/// The refusals of an authenticated request (for the OpenAPI document: `responses(Refused)`).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // describes answers, never built
enum Refused {
    #[response(status = 401, description = "no, unknown or revoked token")]
    Unauthorized(ErrorBody),
    #[response(status = 403, description = "too low a role")]
    Forbidden(ErrorBody),
}

/// A bad query parameter (for the OpenAPI document).
#[derive(utoipa::IntoResponses)]
#[response(status = 400, description = "a bad query parameter, named in `parameter`")]
#[allow(dead_code)]
struct BadParameter(ErrorBody);

/// The store or the audit log failed (for the OpenAPI document).
#[derive(utoipa::IntoResponses)]
#[response(status = 500, description = "the store or the audit log failed: nothing is answered")]
#[allow(dead_code)]
struct Unanswered(ErrorBody);

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found` or `internal`.
    pub error: &'static str,
    pub message: String,
    /// The query parameter at fault (400).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: self.code, message: self.message, parameter: self.parameter };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(challenge) = self.www_authenticate {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        resp
    }
}

type ApiResult<T = Response> = Result<T, ApiError>;

async fn not_found_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

// ---- blocking store calls, auth, audit -----------------------------------------------------------

/// Runs `f` on the store on a blocking thread.
async fn blocking<T, F>(state: &Arc<ApiState>, context: &'static str, f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
{
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || f(store.as_ref())).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ApiError::store(context, e)),
        Err(e) => Err(ApiError::internal(context, e)),
    }
}

/// The token of the request if it holds at least `role`.
async fn authorize(state: &Arc<ApiState>, headers: &HeaderMap, role: Role) -> ApiResult<Token> {
    let unauthorized = |message: &str, challenge: &'static str| ApiError {
        www_authenticate: Some(challenge),
        ..ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "an `Authorization: Bearer <token>` header is required",
            "Bearer realm=\"sightline\"",
        ));
    };
    let secret = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty());
    let invalid = "Bearer realm=\"sightline\", error=\"invalid_token\"";
    let Some(secret) = secret else {
        return Err(unauthorized("the `Authorization` header must be `Bearer <token>`", invalid));
    };
    let hash = token_hash(secret);
    let token = blocking(state, "token lookup", move |s| s.token_by_hash(&hash)).await?;
    let Some(token) = token else {
        return Err(unauthorized("unknown or revoked token", invalid));
    };
    if token.role < role {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this needs the {} role; token {:?} is {}", role.as_str(), token.name, token.role.as_str()),
        ));
    }
    Ok(token)
}

/// Writes the audit record of an access; fails the request when it cannot be written.
async fn audit_access(
    state: &Arc<ApiState>,
    token: &Token,
    action: AuditAction,
    purpose: Option<String>,
    query: Value,
    results: u64,
) -> ApiResult<()> {
    let entry = AuditEntry {
        ts: state.clock.now(),
        token: token.name.clone(),
        role: token.role,
        action,
        purpose,
        query,
        results,
    };
    match tokio::task::spawn_blocking({
        let store = state.store.clone();
        move || store.audit(&entry)
    })
    .await
    {
        Ok(Ok(_seq)) => Ok(()),
        Ok(Err(e)) => Err(ApiError::internal("writing the audit record", e)),
        Err(e) => Err(ApiError::internal("writing the audit record", e)),
    }
}

// ---- query parameters -------------------------------------------------------------------------

/// The query string's parameters, each at most once, only the known ones.
struct Params(HashMap<String, String>);

impl Params {
    fn parse(query: Result<Query<Vec<(String, String)>>, QueryRejection>, known: &[&str]) -> ApiResult<Self> {
        let Query(pairs) = query.map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("malformed query string: {}", e.body_text()))
        })?;
        let mut map = HashMap::with_capacity(pairs.len());
        for (k, v) in pairs {
            if !known.contains(&k.as_str()) {
                let detail = if known.is_empty() {
                    "unknown parameter (this endpoint takes none)".to_string()
                } else {
                    format!("unknown parameter (known: {})", known.join(", "))
                };
                return Err(ApiError::param(&k, detail));
            }
            if map.contains_key(&k) {
                return Err(ApiError::param(&k, "given more than once"));
            }
            map.insert(k, v);
        }
        Ok(Params(map))
    }

    fn str(&self, name: &str) -> ApiResult<Option<String>> {
        match self.0.get(name) {
            None => Ok(None),
            Some(v) if v.is_empty() => Err(ApiError::param(name, "must not be empty")),
            Some(v) => Ok(Some(v.clone())),
        }
    }

    fn time(&self, name: &str) -> ApiResult<Option<OffsetDateTime>> {
        self.str(name)?
            .map(|v| {
                ts::parse(&v).map_err(|_| {
                    ApiError::param(name, format!("{v:?} is not an RFC 3339 time (e.g. 2026-11-23T08:00:00.000Z)"))
                })
            })
            .transpose()
    }

    fn limit(&self, name: &str, default: u32, max: u32) -> ApiResult<u32> {
        match self.str(name)? {
            None => Ok(default),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::param(name, format!("{v:?} is not an integer from 1 to {max}"))),
            },
        }
    }

    /// A snake_case enum of the contract (`kind`, `state`).
    fn enumerated<T: DeserializeOwned>(&self, name: &str) -> ApiResult<Option<T>> {
        self.str(name)?
            .map(|v| {
                serde_json::from_value(Value::String(v.clone()))
                    .map_err(|_| ApiError::param(name, format!("{v:?} is not a known value")))
            })
            .transpose()
    }

    fn purpose(&self) -> ApiResult<Option<String>> {
        self.str("purpose")?.map(check_purpose).transpose()
    }
}

/// A `purpose`: 1 to [`MAX_PURPOSE_CHARS`] printable characters, trimmed.
fn check_purpose(p: String) -> ApiResult<String> {
    let p = p.trim().to_string();
    if p.is_empty() || p.chars().count() > MAX_PURPOSE_CHARS || p.chars().any(char::is_control) {
        return Err(ApiError::param("purpose", format!("must be 1 to {MAX_PURPOSE_CHARS} printable characters")));
    }
    Ok(p)
}

/// `since < until` when both are given.
fn check_window(since: Option<OffsetDateTime>, until: Option<OffsetDateTime>) -> ApiResult<()> {
    match (since, until) {
        (Some(s), Some(u)) if s >= u => Err(ApiError::param("until", "must be after `since`")),
        _ => Ok(()),
    }
}

fn parse_id(raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| ApiError::param("id", format!("{raw:?} is not a UUID")))
}

fn opt_ts(t: Option<OffsetDateTime>) -> Value {
    t.map_or(Value::Null, |t| Value::String(ts::format(t)))
}

// ---- handlers ----------------------------------------------------------------------------------

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Health))
)]
async fn healthz() -> Response {
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
async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    let body = state.metrics.encode();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

/// A camera with its position in WGS84 when the site has a georeference, and its latest crowd
/// measurement.
#[derive(Serialize, ToSchema)]
struct CameraOut {
    #[serde(flatten)]
    record: CameraRecord,
    /// `state`, `state_detail`, `agent`: derived from the camera's status and its agent's liveness.
    #[serde(flatten)]
    live: crate::liveness::CameraLive,
    /// `[lon, lat]` (GeoJSON order), degrees.
    #[serde(skip_serializing_if = "Option::is_none")]
    wgs84: Option<[f64; 2]>,
    /// The latest crowd measurement (by `ts`); `null` when the camera has none.
    #[schema(required = true)]
    latest_crowd: Option<LatestCrowdOut>,
}

/// A camera's latest crowd measurement.
#[derive(Serialize, ToSchema)]
struct LatestCrowdOut {
    #[serde(with = "ts::rfc3339_ms")]
    #[schema(value_type = String, format = DateTime)]
    ts: OffsetDateTime,
    #[schema(value_type = schema::CrowdMethod)]
    method: sightline_contract::CrowdMethod,
    /// People in the whole frame.
    total: f32,
    /// People per zone, in the camera's zone order.
    zones: Vec<ZoneCountOut>,
    /// Where the people are in the frame (`cols` × `rows` cells, row-major from the top-left);
    /// `null` when the agent sends none, or after a restart until the next measurement.
    #[schema(required = true)]
    grid: Option<GridOut>,
}

#[derive(Serialize, ToSchema)]
struct ZoneCountOut {
    zone: String,
    count: f32,
}

/// A coarse density grid: people per cell.
#[derive(Serialize, ToSchema)]
struct GridOut {
    cols: u16,
    rows: u16,
    /// `cols × rows` values, row-major from the top-left cell.
    cells: Vec<f32>,
}

impl From<sightline_contract::Crowd> for LatestCrowdOut {
    fn from(c: sightline_contract::Crowd) -> Self {
        LatestCrowdOut {
            ts: c.ts,
            method: c.method,
            total: c.total,
            zones: c.zones.into_iter().map(|z| ZoneCountOut { zone: z.zone, count: z.count }).collect(),
            grid: c.grid.map(|g| GridOut { cols: g.cols, rows: g.rows, cells: g.cells }),
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/cameras",
    tag = "operator",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`{items}`: cameras, positions (site metres; `wgs84` [lon, lat]), last status, derived `state` (its edge agent offline: `unknown`), latest crowd", body = CameraList),
        BadParameter,
        Refused,
        Unanswered
    )
)]
async fn cameras(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    authorize(&state, &headers, Role::Operator).await?;
    Params::parse(query, &[])?;
    let (records, fleet, crowds) = blocking(&state, "listing cameras", |s| {
        let (records, fleet) = crate::liveness::Fleet::load(s)?;
        Ok((records, fleet, s.latest_crowd()?))
    })
    .await?;
    let mut crowds: HashMap<(String, String), sightline_contract::Crowd> =
        crowds.into_iter().map(|c| ((c.site.clone(), c.camera.clone()), c)).collect();
    let site_id = state.site.site().id.as_str();
    let items: Vec<CameraOut> = records
        .into_iter()
        .map(|record| {
            let wgs84 = record
                .position
                .filter(|_| record.site == site_id)
                .and_then(|p| state.site.to_wgs84(p))
                .map(|(lat, lon)| [lon, lat]);
            let stored = crowds.remove(&(record.site.clone(), record.camera.clone()));
            let latest_crowd = state.latest_crowd.newest(stored, &record.site, &record.camera).map(Into::into);
            CameraOut { live: fleet.camera(&record), record, wgs84, latest_crowd }
        })
        .collect();
    Ok(Json(CameraList { items }).into_response())
}

/// `GET /me`: who the token is.
#[derive(Serialize, ToSchema)]
struct Me {
    /// The token's name.
    name: String,
    role: Role,
}

#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "operator",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the token's name and role (any valid token; not audited)", body = Me),
        BadParameter,
        Refused,
        Unanswered
    )
)]
async fn me(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let token = authorize(&state, &headers, Role::Operator).await?;
    Params::parse(query, &[])?;
    Ok(Json(Me { name: token.name, role: token.role }).into_response())
}

/// Longest alert id accepted by `POST /alerts/{id}/ack` (characters).
const MAX_ALERT_ID_CHARS: usize = 256;

/// `POST /alerts/{id}/ack`: the alert's acknowledgement (also sent as the live event `alert_ack`).
#[derive(Serialize, ToSchema)]
pub struct Acknowledgement {
    /// The alert's stable id (the `alert` field of its events).
    pub alert: String,
    /// The token name that acknowledged it first.
    pub acknowledged_by: String,
    #[serde(with = "ts::rfc3339_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub acknowledged_at: OffsetDateTime,
    /// True when it already was acknowledged (the first acknowledgement is kept, unchanged).
    pub already: bool,
}

#[utoipa::path(
    post,
    path = "/api/v1/alerts/{id}/ack",
    tag = "operator",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "the alert's stable id (`alert` of its events)")),
    responses(
        (status = 200, description = "the acknowledgement (who and when; the first one is kept); every event of the alert carries it, and open event streams get `alert_ack`", body = Acknowledgement),
        BadParameter,
        Refused,
        (status = 404, description = "no event of this alert is stored", body = ErrorBody),
        Unanswered
    )
)]
async fn acknowledge(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let token = authorize(&state, &headers, Role::Operator).await?;
    Params::parse(query, &[])?;
    if id.is_empty() || id.chars().count() > MAX_ALERT_ID_CHARS || id.chars().any(char::is_control) {
        return Err(ApiError::param("id", format!("must be 1 to {MAX_ALERT_ID_CHARS} printable characters")));
    }
    let now = state.clock.now();
    let (alert, by) = (id.clone(), token.name.clone());
    let outcome = blocking(&state, "acknowledging an alert", move |s| s.acknowledge_alert(&alert, &by, now)).await?;
    let ack = match outcome {
        Acknowledged::Now => {
            Acknowledgement { alert: id, acknowledged_by: token.name, acknowledged_at: now, already: false }
        }
        Acknowledged::Already { by, at } => {
            Acknowledgement { alert: id, acknowledged_by: by, acknowledged_at: at, already: true }
        }
        Acknowledged::NotFound => return Err(ApiError::not_found("alert", format!("{id:?}"))),
    };
    if !ack.already {
        match serde_json::to_string(&ack) {
            Ok(json) => state.events.alert_ack(&ack.alert, json),
            Err(e) => tracing::error!(error = %e, "alert acknowledgement not streamed"),
        }
    }
    Ok(Json(ack).into_response())
}

/// `GET /site`: the site model for the map.
#[derive(Serialize, ToSchema)]
struct SiteOut {
    id: String,
    /// Where the site frame is on Earth; `null`: positions are site metres only.
    #[schema(required = true)]
    georef: Option<crate::site::GeoRef>,
    cameras: Vec<SiteCamera>,
    links: Vec<SiteLink>,
}

#[derive(Serialize, ToSchema)]
struct SiteCamera {
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
struct SiteLink {
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
    responses(
        (status = 200, description = "the site: georeference, camera positions (site metres and WGS84), links", body = SiteOut),
        BadParameter,
        Refused,
        Unanswered
    )
)]
async fn site(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    authorize(&state, &headers, Role::Operator).await?;
    Params::parse(query, &[])?;
    let model = &state.site;
    let cameras = model
        .cameras()
        .iter()
        .map(|c| SiteCamera {
            id: c.id.clone(),
            position: c.position,
            view_radius_m: c.view_radius_m,
            wgs84: model.to_wgs84(c.position).map(|(lat, lon)| [lon, lat]),
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

#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    tag = "operator",
    security(("bearer" = [])),
    params(
        ("since" = Option<String>, Query, description = "RFC 3339, inclusive"),
        ("until" = Option<String>, Query, description = "RFC 3339, exclusive"),
        ("kind" = Option<String>, Query, description = "an alert kind, e.g. camera_offline"),
        ("state" = Option<String>, Query, description = "raised or cleared"),
        ("site" = Option<String>, Query),
        ("camera" = Option<String>, Query),
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 100")
    ),
    responses(
        (status = 200, description = "`{items}`: alert events, newest first, with acknowledgement; raised ones whose edge agent went away are `stale`", body = AlertList),
        BadParameter,
        Refused,
        Unanswered
    )
)]
async fn alerts(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    authorize(&state, &headers, Role::Operator).await?;
    let p = Params::parse(query, &["since", "until", "kind", "state", "site", "camera", "limit"])?;
    let q = AlertQuery {
        since: p.time("since")?,
        until: p.time("until")?,
        kind: p.enumerated::<AlertKind>("kind")?,
        state: p.enumerated::<AlertState>("state")?,
        site: p.str("site")?,
        camera: p.str("camera")?,
        limit: p.limit("limit", DEFAULT_LIMIT, MAX_LIMIT)?,
    };
    check_window(q.since, q.until)?;
    let items = blocking(&state, "listing alerts", move |s| crate::liveness::list_alerts(s, &q)).await?;
    Ok(Json(AlertList { items }).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/crowd",
    tag = "operator",
    security(("bearer" = [])),
    params(
        ("camera" = String, Query, description = "required"),
        ("zone" = Option<String>, Query, description = "a zone; default the camera total"),
        ("site" = Option<String>, Query),
        ("since" = Option<String>, Query, description = "RFC 3339, inclusive; default `until` - 1 h"),
        ("until" = Option<String>, Query, description = "RFC 3339, exclusive; default now"),
        ("step" = Option<u32>, Query, description = "bucket width in seconds, 1 to 86400, default 60")
    ),
    responses(
        (status = 200, description = "`{camera, zone, since, until, step_s, items}`: non-empty buckets", body = CrowdSeries),
        BadParameter,
        Refused,
        Unanswered
    )
)]
async fn crowd(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    authorize(&state, &headers, Role::Operator).await?;
    let p = Params::parse(query, &["site", "camera", "zone", "since", "until", "step"])?;
    let camera = p.str("camera")?.ok_or_else(|| ApiError::param("camera", "is required"))?;
    let step_s = p.limit("step", DEFAULT_CROWD_STEP_S, 86_400)?;
    let until = p.time("until")?.unwrap_or_else(|| state.clock.now());
    let since = p.time("since")?.unwrap_or(until - time::Duration::seconds(DEFAULT_CROWD_WINDOW_S));
    check_window(Some(since), Some(until))?;
    if (until - since).whole_seconds() / i64::from(step_s) > MAX_CROWD_BUCKETS {
        return Err(ApiError::param("step", format!("too small for this window: at most {MAX_CROWD_BUCKETS} buckets")));
    }
    let q = CrowdQuery { site: p.str("site")?, camera, zone: p.str("zone")?, since, until, step_s };
    let (camera, zone) = (q.camera.clone(), q.zone.clone());
    let items = blocking(&state, "reading the crowd series", move |s| s.crowd_series(&q)).await?;
    Ok(Json(CrowdSeries { camera, zone, since: ts::format(since), until: ts::format(until), step_s, items })
        .into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/trajectories",
    tag = "integrator",
    security(("bearer" = [])),
    params(
        ("site" = Option<String>, Query),
        ("since" = Option<String>, Query, description = "RFC 3339, inclusive"),
        ("until" = Option<String>, Query, description = "RFC 3339, exclusive"),
        ("camera" = Option<String>, Query),
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 100"),
        ("cursor" = Option<String>, Query, description = "`next` of the previous page"),
        ("purpose" = Option<String>, Query, description = "why (kept in the audit log)")
    ),
    responses(
        (status = 200, description = "`{items, next}`: trajectory summaries, newest first; audited", body = crate::store::TrajectoryPage),
        BadParameter,
        Refused,
        Unanswered
    )
)]
async fn trajectories(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let token = authorize(&state, &headers, Role::Integrator).await?;
    let p = Params::parse(query, &["site", "since", "until", "camera", "limit", "cursor", "purpose"])?;
    let cursor = p
        .str("cursor")?
        .map(|c| Cursor::from_str(&c).map_err(|_| ApiError::param("cursor", "not a cursor of this API")))
        .transpose()?;
    let q = TrajectoryQuery {
        site: p.str("site")?,
        since: p.time("since")?,
        until: p.time("until")?,
        camera: p.str("camera")?,
        limit: p.limit("limit", DEFAULT_LIMIT, MAX_LIMIT)?,
        cursor,
    };
    check_window(q.since, q.until)?;
    let purpose = p.purpose()?;
    let audited = json!({
        "endpoint": "GET /api/v1/trajectories",
        "site": q.site,
        "since": opt_ts(q.since),
        "until": opt_ts(q.until),
        "camera": q.camera,
        "limit": q.limit,
        "cursor": q.cursor.map(|c| c.to_string()),
    });
    let page = blocking(&state, "listing trajectories", move |s| s.trajectories(&q)).await?;
    audit_access(&state, &token, AuditAction::TrajectoryList, purpose, audited, page.items.len() as u64).await?;
    Ok(Json(page).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/trajectories/{id}",
    tag = "integrator",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "UUID"),
        ("purpose" = Option<String>, Query, description = "why (kept in the audit log)")
    ),
    responses(
        (status = 200, description = "a trajectory and its sightings in order; audited", body = crate::store::TrajectoryDetail),
        BadParameter,
        Refused,
        (status = 404, description = "unknown id", body = ErrorBody),
        Unanswered
    )
)]
async fn trajectory(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let detail = read_trajectory(&state, &headers, &raw, query, "GET /api/v1/trajectories/{id}").await?;
    Ok(Json(detail).into_response())
}

/// One trajectory for an integrator, the read audited (a 404 too) before it is answered.
async fn read_trajectory(
    state: &Arc<ApiState>,
    headers: &HeaderMap,
    raw: &str,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    endpoint: &'static str,
) -> Result<crate::store::TrajectoryDetail, ApiError> {
    let token = authorize(state, headers, Role::Integrator).await?;
    let p = Params::parse(query, &["purpose"])?;
    let id = parse_id(raw)?;
    let purpose = p.purpose()?;
    let detail = blocking(state, "reading a trajectory", move |s| s.trajectory(id)).await?;
    let audited = json!({ "endpoint": endpoint, "id": id });
    let results = detail.as_ref().map_or(0, |d| d.sightings.len() as u64);
    audit_access(state, &token, AuditAction::TrajectoryRead, purpose, audited, results).await?;
    detail.ok_or_else(|| ApiError::not_found("trajectory", id))
}

#[utoipa::path(
    get,
    path = "/api/v1/trajectories/{id}/geojson",
    tag = "integrator",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "UUID"),
        ("purpose" = Option<String>, Query, description = "why (kept in the audit log)")
    ),
    responses(
        (
            status = 200,
            description = "GeoJSON Feature (WGS84 with a georef, else site metres); audited",
            content_type = "application/geo+json",
            body = Object
        ),
        BadParameter,
        Refused,
        (status = 404, description = "unknown id", body = ErrorBody),
        Unanswered
    )
)]
async fn trajectory_geojson(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let detail = read_trajectory(&state, &headers, &raw, query, "GET /api/v1/trajectories/{id}/geojson").await?;

    // Positions: the sighting's ground point when the camera is calibrated, else the camera's
    // position; site-frame metres, turned into WGS84 when the trajectory's site is the configured
    // one and it has a georeference.
    let same_site = detail.summary.site == state.site.site().id;
    let georef = same_site && state.site.site().georef.is_some();
    let mut coordinates = Vec::new();
    let mut points = Vec::new();
    let mut unplaced = 0u32;
    for s in &detail.sightings {
        let (source, site_xy) = match s.ground {
            Some(g) => ("ground", Some(g)),
            None => ("camera", state.site.camera(&s.camera).filter(|_| same_site).map(|c| c.position)),
        };
        let coord =
            site_xy.and_then(|xy| if georef { state.site.to_wgs84(xy).map(|(lat, lon)| [lon, lat]) } else { Some(xy) });
        match coord {
            Some(c) => coordinates.push(c),
            None => unplaced += 1,
        }
        points.push(json!({
            "sighting": s.id,
            "camera": s.camera,
            "first_seen": ts::format(s.first_seen),
            "last_seen": ts::format(s.last_seen),
            "position": coord.map(|_| source),
        }));
    }
    let geometry = match coordinates.len() {
        0 => Value::Null,
        1 => json!({ "type": "Point", "coordinates": coordinates[0] }),
        _ => json!({ "type": "LineString", "coordinates": coordinates }),
    };
    let mut properties = json!({
        "trajectory": detail.summary.id,
        "site": detail.summary.site,
        "first_seen": ts::format(detail.summary.first_seen),
        "last_seen": ts::format(detail.summary.last_seen),
        "cameras": detail.summary.cameras,
        "crs": if georef { "WGS84" } else { "site" },
        "sightings": points,
    });
    if !georef {
        properties["note"] =
            Value::String("coordinates are metres in the site frame (x, y), not WGS84: the site has no georef".into());
    }
    if unplaced > 0 {
        properties["unplaced"] = json!(unplaced);
    }
    let feature = json!({
        "type": "Feature",
        "id": detail.summary.id,
        "geometry": geometry,
        "properties": properties,
    });
    let mut resp = Json(feature).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/geo+json"));
    Ok(resp)
}

#[utoipa::path(
    get,
    path = "/api/v1/sightings/{id}",
    tag = "integrator",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "UUID"),
        ("purpose" = Option<String>, Query, description = "why (kept in the audit log)")
    ),
    responses(
        (status = 200, description = "`{sighting (no embedding), trajectory, distance, received_at}`; audited", body = SightingOut),
        BadParameter,
        Refused,
        (status = 404, description = "unknown id", body = ErrorBody),
        Unanswered
    )
)]
async fn sighting(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let token = authorize(&state, &headers, Role::Integrator).await?;
    let p = Params::parse(query, &["purpose"])?;
    let id = parse_id(&raw)?;
    let purpose = p.purpose()?;
    let stored = blocking(&state, "reading a sighting", move |s| s.sighting(id)).await?;
    let audited = json!({ "endpoint": "GET /api/v1/sightings/{id}", "id": id });
    audit_access(&state, &token, AuditAction::SightingRead, purpose, audited, u64::from(stored.is_some())).await?;
    let stored = stored.ok_or_else(|| ApiError::not_found("sighting", id))?;
    // The embedding is biometric data: it is never served.
    let mut sighting = serde_json::to_value(&stored.sighting).map_err(|e| ApiError::internal("a sighting", e))?;
    if let Some(obj) = sighting.as_object_mut() {
        obj.remove("embedding");
    }
    Ok(Json(SightingOut {
        sighting,
        trajectory: stored.trajectory,
        distance: stored.distance,
        received_at: ts::format(stored.received_at),
    })
    .into_response())
}

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
        ("purpose" = Option<String>, Query, description = "why (kept in the audit log)")
    ),
    responses(
        (status = 200, description = "`{items, next_after}`: audit records in write order; audited", body = AuditPage),
        BadParameter,
        Refused,
        Unanswered
    )
)]
async fn audit(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let token = authorize(&state, &headers, Role::Admin).await?;
    let p = Params::parse(query, &["since", "until", "token", "after", "limit", "purpose"])?;
    let after_seq = p
        .str("after")?
        .map(|v| v.parse::<i64>().map_err(|_| ApiError::param("after", format!("{v:?} is not an integer"))))
        .transpose()?;
    let q = AuditQuery {
        since: p.time("since")?,
        until: p.time("until")?,
        token: p.str("token")?,
        after_seq,
        limit: p.limit("limit", DEFAULT_LIMIT, MAX_LIMIT)?,
    };
    check_window(q.since, q.until)?;
    let purpose = p.purpose()?;
    let audited = json!({
        "endpoint": "GET /api/v1/audit",
        "since": opt_ts(q.since),
        "until": opt_ts(q.until),
        "token": q.token,
        "after": q.after_seq,
        "limit": q.limit,
    });
    let limit = q.limit as usize;
    let items = blocking(&state, "reading the audit log", move |s| s.audit_log(&q)).await?;
    audit_access(&state, &token, AuditAction::AuditRead, purpose, audited, items.len() as u64).await?;
    // A full page may have a next one: continue with `after`.
    let next = if items.len() == limit { items.last().map(|r| r.seq) } else { None };
    Ok(Json(AuditPage { items, next_after: next }).into_response())
}

// ---- OpenAPI -----------------------------------------------------------------------------------

/// Schemas of the `sightline_contract` types the API serves, for the OpenAPI document only (the
/// contract crate does not depend on utoipa). Each mirrors the JSON of its contract type.
pub mod schema {
    use utoipa::ToSchema;
    use uuid::Uuid;

    /// `sightline.alert/1` (without its `schema` field): raised / cleared pairs sharing `alert`.
    #[derive(ToSchema)]
    pub struct Alert {
        pub id: Uuid,
        pub site: String,
        pub camera: String,
        #[schema(format = DateTime)]
        pub ts: String,
        /// Stable id shared by the raise and its clear.
        pub alert: String,
        pub state: AlertState,
        pub kind: AlertKind,
        pub severity: Severity,
        /// Absent when the alert is not about a zone.
        pub zone: Option<String>,
        pub message: String,
        /// Kind-specific details; absent when there are none.
        #[schema(value_type = Option<Object>)]
        pub details: Option<serde_json::Value>,
    }

    #[derive(ToSchema)]
    #[schema(rename_all = "snake_case")]
    pub enum AlertState {
        Raised,
        Cleared,
    }

    #[derive(ToSchema)]
    #[schema(rename_all = "snake_case")]
    pub enum AlertKind {
        CrowdThreshold,
        ZoneIntrusion,
        CameraOffline,
        CameraFrozen,
        CameraTampered,
        WatchlistMatch,
        AgentOffline,
    }

    #[derive(ToSchema)]
    #[schema(rename_all = "snake_case")]
    pub enum CrowdMethod {
        Detection,
        Density,
    }

    #[derive(ToSchema)]
    #[schema(rename_all = "snake_case")]
    pub enum Severity {
        Info,
        Warning,
        Critical,
    }

    /// `sightline.camera_status/1` (without its `schema` field); optional fields are absent when unknown.
    #[derive(ToSchema)]
    pub struct CameraStatus {
        pub site: String,
        pub camera: String,
        #[schema(format = DateTime)]
        pub ts: String,
        pub agent: String,
        pub state: CameraState,
        pub fps_in: Option<f32>,
        pub fps_analyzed: Option<f32>,
        pub frames_dropped: Option<u64>,
        pub codec: Option<String>,
        /// `[width, height]`.
        pub resolution: Option<[u32; 2]>,
        /// Human-readable reason for the state (e.g. the last connection error).
        pub detail: Option<String>,
    }

    #[derive(ToSchema)]
    #[schema(rename_all = "snake_case")]
    pub enum CameraState {
        Connecting,
        Streaming,
        Offline,
        Disabled,
    }

    /// `sightline.sighting/1` as served: WITHOUT its `embedding` (biometric data is never served)
    /// and without its `schema` field.
    #[derive(ToSchema)]
    pub struct Sighting {
        pub id: Uuid,
        pub site: String,
        pub camera: String,
        pub track: u64,
        #[schema(format = DateTime)]
        pub first_seen: String,
        #[schema(format = DateTime)]
        pub last_seen: String,
        pub best: BestShot,
        /// `[width, height]` of the source frames.
        pub frame_size: [u32; 2],
        /// Metres in the site frame, when the camera is calibrated; absent otherwise.
        pub ground: Option<[f64; 2]>,
        /// Embedding model name.
        pub model: String,
    }

    /// The best shot of a face track: what the sighting's embedding was computed from.
    #[derive(ToSchema)]
    pub struct BestShot {
        #[schema(format = DateTime)]
        pub ts: String,
        /// `[x, y, w, h]` in source-frame pixels.
        pub bbox: [f32; 4],
        /// YuNet order: right eye, left eye, nose tip, right mouth corner, left mouth corner.
        pub landmarks: [[f32; 2]; 5],
        pub det_score: f32,
        pub quality: f32,
    }
}

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
struct Health {
    /// Always `ok`.
    status: &'static str,
}

/// `GET /cameras`.
#[derive(Serialize, ToSchema)]
struct CameraList {
    items: Vec<CameraOut>,
}

/// `GET /alerts`: newest first.
#[derive(Serialize, ToSchema)]
struct AlertList {
    items: Vec<crate::liveness::AlertOut>,
}

/// `GET /crowd`: the series' parameters and its non-empty buckets.
#[derive(Serialize, ToSchema)]
struct CrowdSeries {
    camera: String,
    /// The zone; `null`: the camera's total.
    #[schema(required = true)]
    zone: Option<String>,
    #[schema(format = DateTime)]
    since: String,
    #[schema(format = DateTime)]
    until: String,
    /// Bucket width in seconds.
    step_s: u32,
    items: Vec<crate::store::CrowdBucket>,
}

/// `GET /sightings/{id}`: the sighting (without its embedding) and where it was placed.
#[derive(Serialize, ToSchema)]
struct SightingOut {
    /// The contract's sighting with `embedding` removed.
    #[schema(value_type = schema::Sighting)]
    sighting: Value,
    trajectory: Uuid,
    /// Embedding distance to the trajectory it joined; `null` when it started it.
    #[schema(required = true)]
    distance: Option<f32>,
    #[schema(format = DateTime)]
    received_at: String,
}

/// `GET /audit`: one page of audit records in write order.
#[derive(Serialize, ToSchema)]
struct AuditPage {
    items: Vec<crate::store::AuditRecord>,
    /// `after` of the next page; `null` when this page was not full.
    #[schema(required = true)]
    next_after: Option<i64>,
}

/// The OpenAPI document of the API, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "sightline aggregator API",
        description = "JSON, bearer tokens (operator < integrator < admin); trajectory and sighting reads are audited."
    ),
    paths(
        healthz, metrics, cameras, me, alerts, acknowledge, alert_close::close, site, crowd, trajectories, trajectory, trajectory_geojson, sighting, audit,
        search::search, search::watchlist_add, search::watchlist_list, search::watchlist_remove, live::events,
        openapi_json
    ),
    components(schemas(
        ErrorBody, Health, CameraList, CameraOut, LatestCrowdOut, ZoneCountOut, GridOut, Me, Acknowledgement,
        SiteOut, SiteCamera, SiteLink, crate::site::GeoRef, schema::CrowdMethod, AlertList, CrowdSeries, SightingOut, AuditPage, search::WatchlistList,
        crate::store::CameraRecord, crate::store::StoredAlert, crate::store::CrowdBucket,
        crate::liveness::CameraLive, crate::liveness::LiveState, crate::liveness::CameraAgent,
        crate::liveness::AgentLiveness, crate::liveness::AlertOut, alert_close::CloseRequest,
        crate::store::TrajectoryPage, crate::store::TrajectorySummary, crate::store::TrajectoryDetail,
        crate::store::TrajectoryPoint, crate::store::AuditRecord, crate::store::AuditEntry, AuditAction, Role,
        schema::Alert, schema::AlertState, schema::AlertKind, schema::Severity, schema::CameraStatus,
        schema::CameraState, schema::Sighting, schema::BestShot,
        search::SearchRequest, search::SearchResponse, search::WatchlistRequest, search::WatchlistOut, search::WatchlistAdded
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("slt_…").build()),
        );
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "health",
    responses((status = 200, description = "this document (OpenAPI 3.1)", body = Object))
)]
async fn openapi_json() -> Response {
    Json(ApiDoc::openapi()).into_response()
}
