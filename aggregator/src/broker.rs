//! The embedded MQTT broker (`rumqttd`, cargo feature `embedded-broker`): one machine runs the
//! whole system with no other service. At scale, point the edges and the aggregator at an
//! external broker instead (`[broker] embedded = false`, `[mqtt] host`).
//!
//! With `[broker] users_file`, rumqttd's static authentication (`ConnectionSettings::auth`, a map
//! of user names to passwords compared in constant time) refuses every client whose CONNECT lacks
//! one of those users and its password. rumqttd then closes the connection without a CONNACK
//! (the client sees the connection closed while it waits for one) and logs `InvalidAuth`; the
//! passwords are never logged. No TLS here (rumqttd's would bring a second rustls): the broker
//! listens on loopback by default, and networked deployments use mosquitto or EMQX with TLS.

use std::net::SocketAddr;

use crate::config::BrokerConfig;

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

/// Starts the embedded broker on its own threads; it runs until the process exits.
#[cfg(feature = "embedded-broker")]
pub fn start(cfg: &BrokerConfig) -> Result<(), BrokerError> {
    use std::collections::HashMap;

    use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};

    // rumqttd binds on its own thread and only logs a failure there: check the address first
    drop(std::net::TcpListener::bind(cfg.listen).map_err(|source| BrokerError::Listen { addr: cfg.listen, source })?);
    let auth = match &cfg.users_file {
        Some(file) => {
            let users = crate::config::load_users(file)?;
            Some(users.into_iter().map(|(user, password)| (user, password.0)).collect::<HashMap<_, _>>())
        }
        None => None,
    };
    let users = auth.as_ref().map(HashMap::len);
    let server = ServerSettings {
        name: "v4".into(),
        listen: cfg.listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: cfg.max_payload_bytes,
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
    match users {
        Some(users) => {
            tracing::info!(listen = %cfg.listen, users, "embedded MQTT broker started (clients must log in)")
        }
        None => tracing::info!(listen = %cfg.listen, "embedded MQTT broker started (no authentication)"),
    }
    Ok(())
}

#[cfg(not(feature = "embedded-broker"))]
pub fn start(_cfg: &BrokerConfig) -> Result<(), BrokerError> {
    Err(BrokerError::NotBuilt)
}
