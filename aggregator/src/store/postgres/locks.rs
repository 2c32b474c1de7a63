//! Ownership of sites among the nodes of a cluster, held in PostgreSQL as session advisory locks
//! on one connection per node ([`SiteLocks`]). PostgreSQL releases a session's locks when the
//! session ends, so a node that dies (crash, `kill -9`, power) gives its sites up as soon as the
//! server sees its connection close, with no lease to wait out. The node's connection carries
//! `application_name = sightline-node:{node}`, which is how the nodes see each other.

use std::collections::{BTreeSet, HashMap};

use postgres::Client;

use super::connection::PgTarget;
use crate::store::{Result, StoreError};

/// The first key of every sightline advisory lock (`classid` in `pg_locks`), so that they do
/// not collide with other users of the database's advisory locks.
const NAMESPACE: i32 = 0x5349_4c01;
/// `application_name` of a node's lock connection: this prefix and the node's name.
const APPLICATION: &str = "sightline-node:";

/// The second key of the lock the node that runs the retention job holds: negative, so that no
/// site's key ([`site_key`]) is the same.
pub const RETENTION_KEY: i32 = -1;
const _: () = assert!(RETENTION_KEY < 0);

/// The second key of the lock of `site`: FNV-1a of its id, kept positive (an `oid` in
/// `pg_locks`). Two sites whose keys collide are owned together, which is harmless.
pub fn site_key(site: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in site.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    (h & 0x7fff_ffff) as i32
}

/// Who holds what, as PostgreSQL sees it now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Survey {
    /// The nodes connected, by name (this one included).
    pub nodes: BTreeSet<String>,
    /// The node holding each lock key ([`site_key`]).
    pub owners: HashMap<i32, String>,
}

/// One node's lock connection.
pub struct SiteLocks {
    client: Client,
}

impl SiteLocks {
    /// Connects as node `node` (a validated id).
    pub fn connect(target: &PgTarget, node: &str) -> Result<SiteLocks> {
        Ok(SiteLocks { client: target.with_application(&format!("{APPLICATION}{node}")).connect()? })
    }

    /// Takes the lock of `key` if it is free (or already this node's): whether this node holds it.
    pub fn try_take(&mut self, key: i32) -> Result<bool> {
        let row = self
            .client
            .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&NAMESPACE, &key])
            .map_err(|source| StoreError::Pg { op: "taking a site's lock", source })?;
        Ok(row.get(0))
    }

    /// Releases the lock of `key`, held by this node.
    pub fn release(&mut self, key: i32) -> Result<()> {
        self.client
            .execute("SELECT pg_advisory_unlock($1, $2)", &[&NAMESPACE, &key])
            .map_err(|source| StoreError::Pg { op: "releasing a site's lock", source })?;
        Ok(())
    }

    /// The nodes connected and the holder of each sightline lock; an error means this node's
    /// connection (and with it every lock it held) is gone.
    pub fn survey(&mut self) -> Result<Survey> {
        let op = |source| StoreError::Pg { op: "surveying the cluster's nodes", source };
        let mut survey = Survey::default();
        let like = format!("{APPLICATION}%");
        for row in self
            .client
            .query("SELECT DISTINCT application_name FROM pg_stat_activity WHERE application_name LIKE $1", &[&like])
            .map_err(op)?
        {
            let name: String = row.get(0);
            survey.nodes.insert(name[APPLICATION.len()..].to_owned());
        }
        let held = self
            .client
            .query(
                "SELECT l.objid::bigint, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid::bigint = $1 \
                 AND a.application_name LIKE $2",
                &[&i64::from(NAMESPACE), &like],
            )
            .map_err(op)?;
        for row in held {
            let (key, name): (i64, String) = (row.get(0), row.get(1));
            survey.owners.insert(key as i32, name[APPLICATION.len()..].to_owned());
        }
        Ok(survey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_keys_are_positive_and_stable() {
        assert_eq!(site_key("east"), site_key("east"));
        assert_ne!(site_key("east"), site_key("west"));
        for s in ["", "a", "district-7", "ünïcode"] {
            assert!(site_key(s) >= 0, "{s}");
        }
    }
}
