//! How both backends encode the store's values: times as Unix milliseconds (floored, like the
//! contract), embeddings as little-endian `f32` bytes, enums as their serde names, JSON as text;
//! and the argument checks they share.

use serde::Serialize;
use time::OffsetDateTime;

use crate::store::{Result, SiteRow, StoreError};

/// The first difference between the stored tree of sites and the config's, naming the site.
pub(crate) fn tree_difference(stored: &[SiteRow], config: &[SiteRow]) -> Option<String> {
    for c in config {
        match stored.iter().find(|s| s.id == c.id) {
            None => return Some(format!("site {:?} of this config is not in the database's tree", c.id)),
            Some(s) if s.parent != c.parent => {
                return Some(format!(
                    "site {:?}: this config's parent is {:?}, the database's is {:?}",
                    c.id, c.parent, s.parent
                ));
            }
            Some(_) => {}
        }
    }
    stored
        .iter()
        .find(|s| !config.iter().any(|c| c.id == s.id))
        .map(|s| format!("site {:?} of the database's tree is not in this config", s.id))
}

/// Milliseconds since the Unix epoch (floored, like the contract's truncation to milliseconds).
pub(crate) fn ms(t: OffsetDateTime) -> i64 {
    t.unix_timestamp_nanos().div_euclid(1_000_000) as i64
}

/// The time `v` milliseconds after the Unix epoch.
pub(crate) fn time_of_ms(v: i64) -> std::result::Result<OffsetDateTime, String> {
    OffsetDateTime::from_unix_timestamp_nanos(v as i128 * 1_000_000).map_err(|e| format!("{v} ms: {e}"))
}

pub(crate) fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn f32s_of_bytes(b: &[u8]) -> std::result::Result<Vec<f32>, String> {
    if !b.len().is_multiple_of(4) {
        return Err(format!("embedding of {} bytes is not f32s", b.len()));
    }
    Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

pub(crate) fn enum_str<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        other => unreachable!("a unit enum serialises to a string, got {other:?}"),
    }
}

pub(crate) fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("contract types always serialise")
}

pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::Invalid { what, detail: detail.into() }
}

pub(crate) fn check_limit(what: &'static str, limit: u32) -> Result<()> {
    if limit == 0 { Err(invalid(what, "limit must be at least 1")) } else { Ok(()) }
}

/// A new token's name and hash, checked the same way by every backend.
pub(crate) fn check_token(name: &str, hash: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(invalid("token", "the name is empty"));
    }
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(invalid("token", "the hash must be a SHA-256 in lowercase hex (64 digits)"));
    }
    Ok(())
}

/// A new watchlist entry, checked the same way by every backend.
pub(crate) fn check_watchlist_entry(e: &crate::store::WatchlistEntry) -> Result<()> {
    if e.purpose.trim().is_empty() {
        return Err(invalid("watchlist entry", "the purpose is empty"));
    }
    if e.embedding.is_empty() {
        return Err(invalid("watchlist entry", "the embedding is empty"));
    }
    if e.expires_at <= e.created_at {
        return Err(invalid("watchlist entry", "expires_at must be after created_at"));
    }
    Ok(())
}
