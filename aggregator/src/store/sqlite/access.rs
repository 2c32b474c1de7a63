//! API tokens (kept by the hash of their secret; names are never reused) and the audit log.

use rusqlite::types::{Type, Value};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use time::OffsetDateTime;

use super::connection::SqliteStore;
use super::rows::*;
use crate::store::{AuditEntry, AuditQuery, AuditRecord, Result, Role, StoreError, Token};

pub(super) fn create_token(
    store: &SqliteStore,
    name: &str,
    role: Role,
    sites: Option<&[String]>,
    hash: &str,
    at: OffsetDateTime,
) -> Result<Token> {
    const OP: &str = "create_token";
    crate::store::codec::check_token(name, hash)?;
    let mut db = store.writer();
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).op(OP)?;
    let taken: bool =
        tx.query_row("SELECT EXISTS (SELECT 1 FROM tokens WHERE name = ?1)", [name], |r| r.get(0)).op(OP)?;
    if taken {
        return Err(StoreError::TokenNameTaken(name.to_owned()));
    }
    let clash: bool =
        tx.query_row("SELECT EXISTS (SELECT 1 FROM tokens WHERE hash = ?1)", [hash], |r| r.get(0)).op(OP)?;
    if clash {
        return Err(invalid("token", "another token has the same hash (the same secret)"));
    }
    tx.execute(
        "INSERT INTO tokens (name, role, hash, created_at, sites) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![name, role.as_str(), hash, ms(at), sites.map(site_list)],
    )
    .op(OP)?;
    let id = tx.last_insert_rowid();
    let token = tx.query_row(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"), [id], token_row).op(OP)?;
    tx.commit().op(OP)?;
    Ok(token)
}

pub(super) fn token_by_hash(store: &SqliteStore, hash: &str) -> Result<Option<Token>> {
    store
        .reader()
        .prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1 AND revoked_at IS NULL"))
        .and_then(|mut q| q.query_row([hash], token_row).optional())
        .op("token_by_hash")
}

pub(super) fn revoke_token(store: &SqliteStore, name: &str, at: OffsetDateTime) -> Result<bool> {
    const OP: &str = "revoke_token";
    let mut db = store.writer();
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate).op(OP)?;
    let revoked: Option<Option<i64>> =
        tx.query_row("SELECT revoked_at FROM tokens WHERE name = ?1", [name], |r| r.get(0)).optional().op(OP)?;
    match revoked {
        None => Err(StoreError::NotFound { what: "token", key: name.to_owned() }),
        Some(Some(_)) => Ok(false),
        Some(None) => {
            tx.execute("UPDATE tokens SET revoked_at = ?2 WHERE name = ?1", params![name, ms(at)]).op(OP)?;
            tx.commit().op(OP)?;
            Ok(true)
        }
    }
}

pub(super) fn list_tokens(store: &SqliteStore) -> Result<Vec<Token>> {
    let db = store.reader();
    let mut q = db.prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id")).op("list_tokens")?;
    q.query_map([], token_row).and_then(|rows| rows.collect()).op("list_tokens")
}

pub(super) fn audit(store: &SqliteStore, e: &AuditEntry) -> Result<i64> {
    let db = store.writer();
    db.execute(
        "INSERT INTO audit (ts, token, role, action, purpose, query, results, outcome, sites) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            ms(e.ts),
            e.token,
            e.role.as_str(),
            e.action.as_str(),
            e.purpose,
            json(&e.query),
            e.results,
            e.outcome.as_str(),
            e.sites.as_deref().map(site_list)
        ],
    )
    .op("audit")?;
    Ok(db.last_insert_rowid())
}

pub(super) fn audit_log(store: &SqliteStore, q: &AuditQuery) -> Result<Vec<AuditRecord>> {
    check_limit("audit query", q.limit)?;
    let mut f = Filter::default();
    if let Some(t) = q.since {
        f.add("ts >= ?", [Value::Integer(ms(t))]);
    }
    if let Some(t) = q.until {
        f.add("ts < ?", [Value::Integer(ms(t))]);
    }
    if let Some(t) = &q.token {
        f.add("token = ?", [text(t)]);
    }
    if let Some(s) = q.after_seq {
        f.add("seq > ?", [Value::Integer(s)]);
    }
    if let Some(sites) = &q.sites {
        // the row's scope lies within `sites`
        f.add(
            "sites IS NOT NULL AND NOT EXISTS (SELECT 1 FROM json_each(audit.sites) s \
             WHERE s.value NOT IN (SELECT value FROM json_each(?)))",
            [Value::Text(site_list(sites))],
        );
    }
    f.params.push(Value::Integer(q.limit.into()));
    let db = store.reader();
    let mut stmt = db
        .prepare(&format!(
            "SELECT seq, ts, token, role, action, purpose, query, results, outcome, sites FROM audit {} \
             ORDER BY seq LIMIT ?",
            f.sql()
        ))
        .op("audit_log")?;
    stmt.query_map(rusqlite::params_from_iter(f.params), |r| {
        let action: String = r.get(4)?;
        Ok(AuditRecord {
            seq: r.get(0)?,
            entry: AuditEntry {
                ts: get_ts(r, 1)?,
                token: r.get(2)?,
                role: get_enum(r, 3)?,
                action: action.parse().map_err(|e: String| conversion(4, Type::Text, e))?,
                purpose: r.get(5)?,
                query: get_json(r, 6)?,
                results: r.get(7)?,
                outcome: get_enum(r, 8)?,
                sites: get_sites(r, 9)?,
            },
        })
    })
    .and_then(|rows| rows.collect())
    .op("audit_log")
}
