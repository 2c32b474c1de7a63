//! Why personal data is read: every endpoint and stream that answers sightings, trajectories,
//! search results, the watchlist or the audit log requires a `purpose` (1 to
//! [`MAX_PURPOSE_CHARS`](super::MAX_PURPOSE_CHARS) printable characters, e.g. a case number).
//!
//! Without one the access is refused (400 naming `purpose`) and the refusal itself is audited:
//! token, action, outcome `refused`, no purpose, and in `query` the endpoint and why
//! (`refused: {status, error, parameter, message}`). An auditor sees the attempts as well as the
//! reads. Each refusal is counted in `sightline_aggregator_refused_accesses_total` and logged.
//! As for answered reads, a refusal whose audit row cannot be written is a 500.
//!
//! A handler calls [`require_purpose`] (query string) or [`require_body_purpose`] (JSON body)
//! right after authorizing and parsing, before it reads anything; [`refuse`] records any other
//! refusal of an access that has a purpose (a rejected search photo).

use std::sync::Arc;

use serde_json::{Value, json};

use super::request::{ApiError, ApiResult, Params, check_purpose, write_audit};
use super::state::ApiState;
use crate::store::{AuditAction, AuditOutcome, Token};

/// The request's required `purpose` query parameter, checked; refused and audited as `action`
/// at `endpoint` when it is missing or not a purpose.
pub(super) async fn require_purpose(
    state: &Arc<ApiState>,
    token: &Token,
    params: &Params,
    action: AuditAction,
    endpoint: &'static str,
) -> ApiResult<String> {
    let given = params.str("purpose");
    justify(state, token, given, action, endpoint).await
}

/// A JSON body's required `purpose` field, as [`require_purpose`].
pub(super) async fn require_body_purpose(
    state: &Arc<ApiState>,
    token: &Token,
    given: Option<String>,
    action: AuditAction,
    endpoint: &'static str,
) -> ApiResult<String> {
    justify(state, token, Ok(given), action, endpoint).await
}

async fn justify(
    state: &Arc<ApiState>,
    token: &Token,
    given: ApiResult<Option<String>>,
    action: AuditAction,
    endpoint: &'static str,
) -> ApiResult<String> {
    let checked = given
        .and_then(|p| {
            p.ok_or_else(|| {
                ApiError::param(
                    "purpose",
                    "is required: why this is done (e.g. a case or incident number); it is kept in the audit log",
                )
            })
        })
        .and_then(check_purpose);
    match checked {
        Ok(purpose) => Ok(purpose),
        Err(e) => Err(refuse(state, token, action, json!({ "endpoint": endpoint }), None, "purpose", e).await),
    }
}

/// Records the refusal `err` of an access (`reason`: `purpose`, `probe`, `busy` or `scope`): an audit row
/// with outcome `refused` (`query` plus `refused`), the metric, a log line. Returns what to
/// answer: `err`, or a 500 when the audit row could not be written.
pub(super) async fn refuse(
    state: &Arc<ApiState>,
    token: &Token,
    action: AuditAction,
    mut query: Value,
    purpose: Option<String>,
    reason: &'static str,
    err: ApiError,
) -> ApiError {
    state.metrics.refused_access(action.as_str(), reason);
    tracing::warn!(
        token = %token.name,
        %action,
        reason,
        parameter = err.parameter.as_deref().unwrap_or("-"),
        status = err.status.as_u16(),
        "access to personal data refused: {}",
        err.message
    );
    query["refused"] = json!({
        "status": err.status.as_u16(),
        "error": err.code,
        "parameter": err.parameter,
        "message": err.message,
    });
    match write_audit(state, token, action, purpose, query, 0, AuditOutcome::Refused).await {
        Ok(()) => err,
        Err(failed) => failed,
    }
}
