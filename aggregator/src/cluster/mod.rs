//! Several aggregator nodes, one owner per site (`[cluster]`, on a shared PostgreSQL store and
//! a shared, possibly clustered, MQTT broker). `docs/adr/0015-cluster-ownership.md` has the
//! design; in short:
//!
//! - **Ownership** (`node`): each node holds a PostgreSQL session advisory lock per site it
//!   correlates, and takes or hands over sites so that every node connected has its share. A
//!   dead node's locks end with its session, and the others take its sites on their next round.
//! - **Ingest** of an owned site goes through a persistent MQTT session of its own, whose client
//!   id is derived from the site (`{mqtt.client_id}-{site}`), acknowledged once stored: the next
//!   owner resumes the same session and receives what the broker kept, including what the last
//!   owner received but never acknowledged. Before it subscribes, the new owner rebuilds the
//!   site's correlator from the store.
//! - **Everything else is served by every node** (`follower`): the API and dashboard read the
//!   shared store; a node learns of what other nodes stored (live events, the search index,
//!   latest crowd) from the broker, on a clean session of its own (`{mqtt.client_id}-{node}`)
//!   that also carries what this node publishes.

mod follower;
mod node;

pub use follower::Follower;
pub use node::{Node, SessionFactory};
