//! The embedded MQTT broker (`rumqttd`, cargo feature `embedded-broker`): one machine runs the
//! whole system with no other service. At scale, point the edges and the aggregator at an
//! external broker instead (`[broker] embedded = false`, `[mqtt] host`).

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
    let server = ServerSettings {
        name: "v4".into(),
        listen: cfg.listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: cfg.max_payload_bytes,
            max_inflight_count: 500,
            auth: None,
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
    tracing::info!(listen = %cfg.listen, "embedded MQTT broker started");
    Ok(())
}

#[cfg(not(feature = "embedded-broker"))]
pub fn start(_cfg: &BrokerConfig) -> Result<(), BrokerError> {
    Err(BrokerError::NotBuilt)
}
