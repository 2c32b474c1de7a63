//! The embedded MQTT broker (`rumqttd`, cargo feature `embedded-broker`): one machine runs the
//! whole system with no other service. At scale, point the edges and the aggregator at an
//! external broker instead (`[broker] embedded = false`, `[mqtt] host`).
//!
//! Without `[broker] users_file` there are no identities: rumqttd listens on `[broker] listen`,
//! which must then be a loopback address, and trusts every local client.
//!
//! With `[broker] users_file`, every client logs in and is held to its rights ([`acl`]): rumqttd
//! listens on a loopback port chosen at start, with its static authentication (user names and
//! passwords compared in constant time; a wrong one closes the connection without a CONNACK and
//! logs `InvalidAuth`, never the password), and the authorising [`gate`] listens on
//! `[broker] listen` in front of it. No TLS here (rumqttd's would bring a second rustls):
//! networked deployments terminate TLS in front of it or use mosquitto or EMQX with TLS, with
//! the ACL files `aggregator broker-acl` writes.

pub mod acl;
pub mod gate;
pub mod packet;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("embedded MQTT broker: cannot listen on {addr}: {source} (set [broker] listen, or embedded = false)")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("embedded MQTT broker: {0}")]
    Start(String),
    #[error("embedded MQTT broker: {0}")]
    Users(#[from] crate::config::SecurityError),
    #[error("this aggregator was built without the `embedded-broker` feature: set [broker] embedded = false")]
    NotBuilt,
}

/// Starts the embedded broker on its own threads (and, with `users_file`, its gate on the
/// current tokio runtime); it runs until the process exits.
#[cfg(feature = "embedded-broker")]
pub async fn start(cfg: &Config, metrics: Arc<Metrics>) -> Result<(), BrokerError> {
    let b = &cfg.broker;
    let listen =
        |addr: SocketAddr| std::net::TcpListener::bind(addr).map_err(|source| BrokerError::Listen { addr, source });
    let Some(file) = &b.users_file else {
        // rumqttd binds on its own thread and only logs a failure there: check the address first
        drop(listen(b.listen)?);
        start_rumqttd(b.listen, None, b.max_payload_bytes)?;
        tracing::warn!(
            listen = %b.listen,
            "embedded MQTT broker started without users_file: it trusts every local client (no logins, no topic rights)"
        );
        return Ok(());
    };
    let users = crate::config::load_users(file)?;
    let policy = acl::Policy::new(&cfg.identities()).map_err(|e| BrokerError::Start(e.to_string()))?;
    let outside = listen(b.listen)?;
    // rumqttd on a loopback port of its own, still requiring the passwords: a local process
    // cannot go around the gate without one
    let inside = {
        let probe = listen(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        probe.local_addr().map_err(|e| BrokerError::Start(e.to_string()))?
    };
    let count = users.len();
    let auth = users.into_iter().map(|(user, password)| (user, password.0)).collect();
    start_rumqttd(inside, Some(auth), b.max_payload_bytes)?;
    // the gate hands passwords to whatever listens there: make sure it is rumqttd
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match listening_here(inside.port()) {
            Ok(Some(true)) => break,
            Ok(Some(false)) => {
                return Err(BrokerError::Start(format!(
                    "another process took {inside} before rumqttd could listen there; start again"
                )));
            }
            Ok(None) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Ok(None) => return Err(BrokerError::Start(format!("rumqttd did not listen on {inside} within 10 s"))),
            Err(e) => {
                tracing::warn!(error = %e, "cannot check that rumqttd listens on {inside} (no /proc?)");
                break;
            }
        }
    }
    let gate = gate::Gate { policy, metrics, upstream: inside, max_payload: b.max_payload_bytes };
    gate::spawn(outside, gate).map_err(|e| BrokerError::Start(format!("the gate: {e}")))?;
    tracing::info!(
        listen = %b.listen,
        users = count,
        "embedded MQTT broker started (clients must log in; every CONNECT, PUBLISH and SUBSCRIBE is checked against the login's rights)"
    );
    Ok(())
}

/// Whether this process holds the listening TCP socket on 127.0.0.1:`port` (`None`: nobody
/// listens there yet), from Linux's /proc.
#[cfg(feature = "embedded-broker")]
fn listening_here(port: u16) -> std::io::Result<Option<bool>> {
    let table = std::fs::read_to_string("/proc/net/tcp")?;
    let local = format!("0100007F:{port:04X}");
    // columns: sl local_address rem_address st(0A: LISTEN) tx:rx tr:when retrnsmt uid timeout inode
    let inode = table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A")).then(|| f.get(9).map(|s| s.to_string()))?
    });
    let Some(inode) = inode else { return Ok(None) };
    let socket = format!("socket:[{inode}]");
    let ours = std::fs::read_dir("/proc/self/fd")?
        .filter_map(Result::ok)
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == socket.as_str()));
    Ok(Some(ours))
}

/// rumqttd on `listen`, with the static logins `auth` (user -> password).
#[cfg(feature = "embedded-broker")]
fn start_rumqttd(
    listen: SocketAddr,
    auth: Option<std::collections::HashMap<String, String>>,
    max_payload: usize,
) -> Result<(), BrokerError> {
    use std::collections::HashMap;

    use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};

    let server = ServerSettings {
        name: "v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: max_payload,
            max_inflight_count: 500,
            auth,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 200,
            max_segment_size: 100 << 20,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("v4".to_owned(), server)])),
        ..Config::default()
    };
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|e| BrokerError::Start(e.to_string()))?;
    Ok(())
}

#[cfg(not(feature = "embedded-broker"))]
pub async fn start(_cfg: &Config, _metrics: Arc<Metrics>) -> Result<(), BrokerError> {
    Err(BrokerError::NotBuilt)
}

#[cfg(all(test, feature = "embedded-broker"))]
mod tests {
    #[test]
    fn finds_who_listens_on_a_loopback_port() {
        let mine = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = mine.local_addr().unwrap().port();
        assert_eq!(super::listening_here(port).unwrap(), Some(true));
        drop(mine);
        assert_eq!(super::listening_here(port).unwrap(), None);
    }
}
