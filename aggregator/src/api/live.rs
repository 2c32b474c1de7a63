//! `GET /api/v1/events`: Server-Sent Events of what the aggregator stores, as it stores it.
//!
//! `?kinds=alert,crowd` chooses the events (default, for every role: alerts, alert
//! acknowledgements, crowd measurements and camera/agent statuses). Sightings and trajectory
//! updates are never streamed by default: an integrator asks for them with `kinds=sighting` or
//! `kinds=trajectory`, and then needs a `purpose` (`super::purpose`). Each SSE event has
//! `event:` = its kind, `id:` = the payload's event id, `data:` = the payload (sightings without
//! their embedding). The stream starts with an `event: ready` once it is subscribed (a client can
//! act on it knowing nothing from then on is missed), says `event: lagged` with `{"dropped": n}`
//! when it fell too far behind and lost events, and has a comment line every 15 s to keep proxies
//! from closing it.
//! A stream of sightings or trajectories is an access to where people go: it is audited when it
//! opens.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::purpose::require_purpose;
use super::request::{ApiError, ApiResult, ErrorBody, Params, SITE_DOC, audit_access, authorize};
use super::scope::scope;
use super::state::ApiState;
use crate::auth::Role;
use crate::events::{EventKind, LiveEvent};
use crate::sites::Scope;
use crate::store::AuditAction;

#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "operator",
    security(("bearer" = [])),
    params(
        ("site" = Option<String>, Query, description = SITE_DOC),
        ("kinds" = Option<String>, Query, description = "comma-separated: alert, alert_ack, crowd, camera_status, agent_status, sighting, trajectory (the last two need integrator and `purpose`, and are never in the default); default alert, alert_ack, crowd, camera_status, agent_status"),
        ("purpose" = Option<String>, Query, description = "REQUIRED with `sighting` or `trajectory` kinds: why (e.g. a case or incident number), kept in the audit log; without it the request is refused (400) and the refusal audited", min_length = 1, max_length = 500)
    ),
    responses(
        (status = 200, description = "text/event-stream: `ready`, then events named by kind, `lagged` when events were lost"),
        (status = 400, description = "an unknown kind, or no `purpose` for sightings or trajectories, named in `parameter`", body = ErrorBody),
        (status = 401, description = "no, unknown or revoked token", body = ErrorBody),
        (status = 403, description = "a kind above the token's role", body = ErrorBody)
    )
)]
pub(super) async fn events(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult {
    let token = authorize(&state, &headers, Role::Operator).await?;
    let p = Params::parse(query, &["kinds", "purpose", "site"])?;
    let scope = scope(&state, &token, p.str("site")?.as_deref(), "GET /api/v1/events").await?;
    let kinds: Vec<EventKind> = match p.str("kinds")? {
        None => EventKind::ALL.into_iter().filter(|k| !k.personal()).collect(),
        Some(list) => {
            let mut kinds = Vec::new();
            for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let kind = EventKind::parse(name).ok_or_else(|| {
                    let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                    ApiError::param("kinds", format!("unknown kind {name:?} ({})", known.join(", ")))
                })?;
                if kind.role() > token.role {
                    return Err(ApiError::new(
                        axum::http::StatusCode::FORBIDDEN,
                        "forbidden",
                        format!(
                            "{name} events need the {} role; token {:?} is {}",
                            kind.role().as_str(),
                            token.name,
                            token.role.as_str()
                        ),
                    ));
                }
                kinds.push(kind);
            }
            if kinds.is_empty() {
                return Err(ApiError::param("kinds", "is empty"));
            }
            kinds
        }
    };
    let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    if kinds.iter().any(|k| k.personal()) {
        let purpose = Some(require_purpose(&state, &token, &p, AuditAction::EventsStream, "GET /api/v1/events").await?);
        let audited = json!({ "endpoint": "GET /api/v1/events", "kinds": names });
        audit_access(&state, &token, AuditAction::EventsStream, purpose, audited, 0).await?;
    }

    // subscribed before the response starts: `ready` means nothing from here on is missed
    let rx = state.events.subscribe();
    let ready = Event::default().event("ready").data(json!({ "kinds": names }).to_string());
    let stream = Stream { rx, kinds, scope, state: state.clone(), shutdown: state.shutdown.clone() };
    state.metrics.event_subscribers.inc();
    let events = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(ready) }).chain(
        futures::stream::unfold(stream, |mut s| async move {
            let event = s.next().await?;
            Some((Ok(event), s))
        }),
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

/// One client's stream; counted in `sightline_aggregator_event_subscribers` while it lives.
struct Stream {
    rx: tokio::sync::broadcast::Receiver<Arc<LiveEvent>>,
    kinds: Vec<EventKind>,
    /// The sites this client may see.
    scope: Scope,
    state: Arc<ApiState>,
    shutdown: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Stream {
    /// The next event for this client; `None` ends the stream (shutdown).
    async fn next(&mut self) -> Option<Event> {
        loop {
            let received = match &mut self.shutdown {
                Some(stop) => tokio::select! {
                    r = self.rx.recv() => r,
                    _ = stop.wait_for(|s| *s) => return None,
                },
                None => self.rx.recv().await,
            };
            match received {
                Ok(e) if self.kinds.contains(&e.kind) && self.scope.allows(&e.site) => {
                    return Some(Event::default().event(e.kind.as_str()).id(e.id.clone()).data(e.json.clone()));
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    self.state.metrics.events_dropped.inc_by(n);
                    return Some(Event::default().event("lagged").data(json!({ "dropped": n }).to_string()));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.state.metrics.event_subscribers.dec();
    }
}
