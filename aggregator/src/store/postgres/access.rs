//! API tokens (kept by the hash of their secret; names are never reused) and the audit log.
//! Audit records are appended under an advisory lock, so `seq` order is commit order: a reader
//! paging with `after_seq` never skips a record committed later with a smaller `seq`.

use postgres::error::SqlState;
use time::OffsetDateTime;

use super::connection::PostgresStore;
use super::rows::*;
use crate::store::codec::check_token;
use crate::store::{AuditEntry, AuditQuery, AuditRecord, Result, Role, StoreError, Token};

/// The advisory lock key audit appends hold (ASCII "SLAGAUDT").
const AUDIT_LOCK: i64 = 0x534C_4147_4155_4454;

pub(super) fn create_token(
    store: &PostgresStore,
    name: &str,
    role: Role,
    sites: Option<&[String]>,
    hash: &str,
    at: OffsetDateTime,
) -> Result<Token> {
    const OP: &str = "create_token";
    check_token(name, hash)?;
    store.with(|c| {
        let mut tx = c.transaction().op(OP)?;
        let taken: bool =
            get(&tx.query_one("SELECT EXISTS (SELECT 1 FROM tokens WHERE name = $1)", &[&name]).op(OP)?, 0)?;
        if taken {
            return Err(StoreError::TokenNameTaken(name.to_owned()));
        }
        let clash: bool =
            get(&tx.query_one("SELECT EXISTS (SELECT 1 FROM tokens WHERE hash = $1)", &[&hash]).op(OP)?, 0)?;
        if clash {
            return Err(invalid("token", "another token has the same hash (the same secret)"));
        }
        let row = tx.query_one(
            &format!(
                "INSERT INTO tokens (name, role, hash, created_at, sites) VALUES ($1, $2, $3, $4, $5) \
                 RETURNING {TOKEN_COLUMNS}"
            ),
            &[&name, &role.as_str(), &hash, &ms(at), &sites],
        );
        let row = match row {
            Ok(row) => row,
            // another aggregator took the name (or the secret) since the checks above
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                let on_name = e.as_db_error().and_then(|d| d.constraint()) == Some("tokens_name_key");
                return Err(if on_name {
                    StoreError::TokenNameTaken(name.to_owned())
                } else {
                    invalid("token", "another token has the same hash (the same secret)")
                });
            }
            Err(source) => return Err(StoreError::Pg { op: OP, source }),
        };
        let token = token_row(&row)?;
        tx.commit().op(OP)?;
        Ok(token)
    })
}

pub(super) fn token_by_hash(store: &PostgresStore, hash: &str) -> Result<Option<Token>> {
    let row = store.with(|c| {
        c.query_opt(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1 AND revoked_at IS NULL"), &[&hash])
            .op("token_by_hash")
    })?;
    row.as_ref().map(token_row).transpose()
}

pub(super) fn revoke_token(store: &PostgresStore, name: &str, at: OffsetDateTime) -> Result<bool> {
    const OP: &str = "revoke_token";
    store.with(|c| {
        let mut tx = c.transaction().op(OP)?;
        let row = tx.query_opt("SELECT revoked_at FROM tokens WHERE name = $1 FOR UPDATE", &[&name]).op(OP)?;
        let Some(row) = row else {
            return Err(StoreError::NotFound { what: "token", key: name.to_owned() });
        };
        if get::<Option<i64>>(&row, 0)?.is_some() {
            return Ok(false);
        }
        tx.execute("UPDATE tokens SET revoked_at = $2 WHERE name = $1", &[&name, &ms(at)]).op(OP)?;
        tx.commit().op(OP)?;
        Ok(true)
    })
}

pub(super) fn list_tokens(store: &PostgresStore) -> Result<Vec<Token>> {
    let found =
        store.with(|c| c.query(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id"), &[]).op("list_tokens"))?;
    rows(found, token_row)
}

pub(super) fn audit(store: &PostgresStore, e: &AuditEntry) -> Result<i64> {
    const OP: &str = "audit";
    let results = i64::try_from(e.results).map_err(|_| invalid("audit entry", "results out of range"))?;
    store.with(|c| {
        let mut tx = c.transaction().op(OP)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK]).op(OP)?;
        let row = tx
            .query_one(
                "INSERT INTO audit (ts, token, role, action, purpose, query, results, outcome, sites) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING seq",
                &[
                    &ms(e.ts),
                    &e.token,
                    &e.role.as_str(),
                    &e.action.as_str(),
                    &e.purpose,
                    &json(&e.query),
                    &results,
                    &e.outcome.as_str(),
                    &e.sites,
                ],
            )
            .op(OP)?;
        let seq: i64 = get(&row, 0)?;
        tx.commit().op(OP)?;
        Ok(seq)
    })
}

pub(super) fn audit_log(store: &PostgresStore, q: &AuditQuery) -> Result<Vec<AuditRecord>> {
    check_limit("audit query", q.limit)?;
    let mut f = Filter::default();
    if let Some(t) = q.since {
        f.add("ts >= ?", Box::new(ms(t)));
    }
    if let Some(t) = q.until {
        f.add("ts < ?", Box::new(ms(t)));
    }
    if let Some(t) = &q.token {
        f.add("token = ?", Box::new(t.clone()));
    }
    if let Some(s) = q.after_seq {
        f.add("seq > ?", Box::new(s));
    }
    if let Some(sites) = &q.sites {
        // the record's scope lies within `sites`
        f.add("sites IS NOT NULL AND sites <@ ?", Box::new(sites.clone()));
    }
    let limit = f.push(Box::new(i64::from(q.limit)));
    let sql = format!(
        "SELECT seq, ts, token, role, action, purpose, query, results, outcome, sites FROM audit {} \
         ORDER BY seq LIMIT {limit}",
        f.sql()
    );
    let found = store.with(|c| c.query(&sql, &f.refs()).op("audit_log"))?;
    rows(found, |r| {
        let action: String = get(r, 4)?;
        let results: i64 = get(r, 7)?;
        Ok(AuditRecord {
            seq: get(r, 0)?,
            entry: AuditEntry {
                ts: get_ts(r, 1)?,
                token: get(r, 2)?,
                role: get_enum(r, 3)?,
                action: action.parse().map_err(|e: String| StoreError::Corrupt { what: "audit action", detail: e })?,
                purpose: get(r, 5)?,
                query: get_json(r, 6)?,
                results: u64::try_from(results).unwrap_or(0),
                outcome: get_enum(r, 8)?,
                sites: get(r, 9)?,
            },
        })
    })
}
