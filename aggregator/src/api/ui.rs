//! The operator dashboard: the files of `ui/dist/` embedded at compile time (`build.rs`), served
//! without a token (the page signs in with an API token it keeps in `sessionStorage` and sends as
//! `Authorization: Bearer` to `/api/v1`; the files hold nothing but code).
//!
//! - `GET /` and client routes (a path outside `/api/` whose last segment has no dot, e.g.
//!   `/alerts`): `index.html`, `Cache-Control: no-cache`;
//! - any other embedded file by its path (`/assets/index-3f2a1b.js`) with its content type; the
//!   content-hashed files under `assets/` are `Cache-Control: public, max-age=31536000, immutable`,
//!   the others `no-cache`;
//! - every answer has a strict `Content-Security-Policy` (only this origin's scripts, styles —
//!   inline ones too —, images and connections; no page may frame it: `frame-ancestors 'none'`,
//!   and `X-Frame-Options: DENY` for browsers without CSP 2), `X-Content-Type-Options: nosniff`
//!   and `Referrer-Policy: no-referrer`.
//!
//! Unknown paths under `/api/`, with a dot in their last segment, or with another method than GET
//! or HEAD are the API's JSON 404.

use axum::http::{HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};

use super::request::{ApiError, not_found_route};

/// An embedded file.
pub struct Asset {
    /// Relative to `ui/dist`, `/`-separated.
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; connect-src 'self'; \
     frame-ancestors 'none'";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The embedded file at `path` (relative, without a leading `/`).
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

fn serve(asset: &'static Asset) -> Response {
    let cache = if asset.path.starts_with("assets/") { IMMUTABLE } else { "no-cache" };
    let mut resp = asset.bytes.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

fn index() -> Response {
    match asset("index.html") {
        Some(a) => serve(a),
        // build.rs always embeds an index.html (the dashboard's or a placeholder)
        None => ApiError::new(axum::http::StatusCode::NOT_FOUND, "not_found", "no dashboard").into_response(),
    }
}

/// `GET /`.
pub(super) async fn root() -> Response {
    index()
}

/// Every request no route took: an embedded file, the dashboard for a client route, or the JSON 404.
pub(super) async fn fallback(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    let api = path == "/api" || path.starts_with("/api/");
    if api || !(method == Method::GET || method == Method::HEAD) {
        return not_found_route().await.into_response();
    }
    let rel = path.trim_start_matches('/');
    if let Some(a) = asset(rel).filter(|_| !rel.is_empty()) {
        return serve(a);
    }
    let last = rel.rsplit('/').next().unwrap_or_default();
    if last.contains('.') {
        return not_found_route().await.into_response();
    }
    index()
}
