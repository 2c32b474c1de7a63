//! What every request of the API goes through: the bearer token and its role ([`authorize`]),
//! the audit record written before an accountable answer ([`audit_access`]), the store called on
//! a blocking thread ([`blocking`]), the query string and JSON body checked parameter by
//! parameter ([`Params`], [`body`]), and the JSON error answers ([`ApiError`], [`ErrorBody`]).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::Query;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sightline_contract::ts;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::state::ApiState;
use crate::auth::{Role, token_hash};
use crate::store::{AuditAction, AuditEntry, AuditOutcome, Store, StoreError, Token};

/// Default and largest page sizes.
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;
/// Longest `purpose` accepted (characters).
pub const MAX_PURPOSE_CHARS: usize = 500;
/// The OpenAPI description of the `site` filter.
pub(super) const SITE_DOC: &str =
    "a site id: that site and the sites below it; default every site the token may see (`GET /api/v1/sites`)";
/// The OpenAPI description of the required `purpose` parameter (its `maxLength` is
/// [`MAX_PURPOSE_CHARS`]).
pub(super) const PURPOSE_DOC: &str = "REQUIRED: why (e.g. a case or incident number), kept in the audit log; \
                                      without it the request is refused (400) and the refusal audited";

// ---- errors ------------------------------------------------------------------------------------

/// An error answer: status, a machine-readable `error`, a message, and the parameter at fault.
#[derive(Debug)]
pub struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
    pub(super) parameter: Option<String>,
    pub(super) www_authenticate: Option<&'static str>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), parameter: None, www_authenticate: None }
    }

    pub(super) fn param(name: &str, message: impl Into<String>) -> Self {
        Self {
            parameter: Some(name.to_string()),
            ..Self::new(StatusCode::BAD_REQUEST, "bad_request", format!("`{name}`: {}", message.into()))
        }
    }

    pub(super) fn not_found(what: &str, id: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no {what} {id}"))
    }

    pub(super) fn internal(context: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "API: {context}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("{context} failed; see the aggregator's log"))
    }

    pub(super) fn store(context: &str, e: StoreError) -> Self {
        match e {
            StoreError::NotFound { what, key } => Self::not_found(what, key),
            other => Self::internal(context, other),
        }
    }
}

/// The refusals of an authenticated request (for the OpenAPI document: `responses(Refused)`).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // describes answers, never built
pub(super) enum Refused {
    #[response(status = 401, description = "no, unknown or revoked token")]
    Unauthorized(ErrorBody),
    #[response(status = 403, description = "too low a role")]
    Forbidden(ErrorBody),
}

/// A bad query parameter (for the OpenAPI document).
#[derive(utoipa::IntoResponses)]
#[response(status = 400, description = "a bad query parameter, named in `parameter`")]
#[allow(dead_code)]
pub(super) struct BadParameter(ErrorBody);

/// The store or the audit log failed (for the OpenAPI document).
#[derive(utoipa::IntoResponses)]
#[response(status = 500, description = "the store or the audit log failed: nothing is answered")]
#[allow(dead_code)]
pub(super) struct Unanswered(ErrorBody);

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

pub(super) type ApiResult<T = Response> = Result<T, ApiError>;

pub(super) async fn not_found_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

// ---- blocking store calls, auth, audit -----------------------------------------------------------

/// Runs `f` on the store on a blocking thread.
pub(super) async fn blocking<T, F>(state: &Arc<ApiState>, context: &'static str, f: F) -> ApiResult<T>
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
pub(super) async fn authorize(state: &Arc<ApiState>, headers: &HeaderMap, role: Role) -> ApiResult<Token> {
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
pub(super) async fn audit_access(
    state: &Arc<ApiState>,
    token: &Token,
    action: AuditAction,
    purpose: Option<String>,
    query: Value,
    results: u64,
) -> ApiResult<()> {
    write_audit(state, token, action, purpose, query, results, AuditOutcome::Answered).await
}

/// Writes one audit record of `token`'s access (answered or refused): the record names the
/// token, its role and its scope.
pub(super) async fn write_audit(
    state: &Arc<ApiState>,
    token: &Token,
    action: AuditAction,
    purpose: Option<String>,
    query: Value,
    results: u64,
    outcome: AuditOutcome,
) -> ApiResult<()> {
    let entry = AuditEntry {
        ts: state.clock.now(),
        token: token.name.clone(),
        role: token.role,
        action,
        purpose,
        query,
        results,
        outcome,
        sites: token.sites.clone(),
    };
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || store.audit(&entry)).await {
        Ok(Ok(_seq)) => Ok(()),
        Ok(Err(e)) => Err(ApiError::internal("writing the audit record", e)),
        Err(e) => Err(ApiError::internal("writing the audit record", e)),
    }
}

// ---- query parameters -------------------------------------------------------------------------

/// The query string's parameters, each at most once, only the known ones.
pub(super) struct Params(HashMap<String, String>);

impl Params {
    pub(super) fn parse(
        query: Result<Query<Vec<(String, String)>>, QueryRejection>,
        known: &[&str],
    ) -> ApiResult<Self> {
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

    pub(super) fn str(&self, name: &str) -> ApiResult<Option<String>> {
        match self.0.get(name) {
            None => Ok(None),
            Some(v) if v.is_empty() => Err(ApiError::param(name, "must not be empty")),
            Some(v) => Ok(Some(v.clone())),
        }
    }

    pub(super) fn time(&self, name: &str) -> ApiResult<Option<OffsetDateTime>> {
        self.str(name)?
            .map(|v| {
                ts::parse(&v).map_err(|_| {
                    ApiError::param(name, format!("{v:?} is not an RFC 3339 time (e.g. 2026-11-23T08:00:00.000Z)"))
                })
            })
            .transpose()
    }

    pub(super) fn limit(&self, name: &str, default: u32, max: u32) -> ApiResult<u32> {
        match self.str(name)? {
            None => Ok(default),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::param(name, format!("{v:?} is not an integer from 1 to {max}"))),
            },
        }
    }

    /// An integer, such as the `after` of a page of rows in write order.
    pub(super) fn integer(&self, name: &str) -> ApiResult<Option<i64>> {
        self.str(name)?
            .map(|v| v.parse::<i64>().map_err(|_| ApiError::param(name, format!("{v:?} is not an integer"))))
            .transpose()
    }

    /// A snake_case enum of the contract (`kind`, `state`).
    pub(super) fn enumerated<T: DeserializeOwned>(&self, name: &str) -> ApiResult<Option<T>> {
        self.str(name)?
            .map(|v| {
                serde_json::from_value(Value::String(v.clone()))
                    .map_err(|_| ApiError::param(name, format!("{v:?} is not a known value")))
            })
            .transpose()
    }
}

/// A `purpose`: 1 to [`MAX_PURPOSE_CHARS`] printable characters, trimmed.
pub(super) fn check_purpose(p: String) -> ApiResult<String> {
    let p = p.trim().to_string();
    if p.is_empty() || p.chars().count() > MAX_PURPOSE_CHARS || p.chars().any(char::is_control) {
        return Err(ApiError::param("purpose", format!("must be 1 to {MAX_PURPOSE_CHARS} printable characters")));
    }
    Ok(p)
}

/// `since < until` when both are given.
pub(super) fn check_window(since: Option<OffsetDateTime>, until: Option<OffsetDateTime>) -> ApiResult<()> {
    match (since, until) {
        (Some(s), Some(u)) if s >= u => Err(ApiError::param("until", "must be after `since`")),
        _ => Ok(()),
    }
}

pub(super) fn parse_id(raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| ApiError::param("id", format!("{raw:?} is not a UUID")))
}

pub(super) fn opt_ts(t: Option<OffsetDateTime>) -> Value {
    t.map_or(Value::Null, |t| Value::String(ts::format(t)))
}

/// A JSON body, or a 400 saying what is wrong with it.
pub(super) fn body<T>(b: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    b.map(|Json(t)| t).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))
}

/// An RFC 3339 time field of a JSON body.
pub(super) fn time_field(name: &str, v: Option<String>) -> ApiResult<Option<OffsetDateTime>> {
    v.map(|v| ts::parse(&v).map_err(|e| ApiError::param(name, format!("{v:?} is not an RFC 3339 time: {e}"))))
        .transpose()
}
