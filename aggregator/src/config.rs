//! The aggregator's TOML configuration (`configs/aggregator.example.toml` documents every key).
//!
//! Unknown keys are rejected; semantic errors name the key and the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::correlate::CorrelationConfig;
use crate::site::{CameraPlace, Link, SiteConfig, SiteModel};
use crate::store::RetentionPolicy;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: `{key}`: {message}")]
    Invalid { path: PathBuf, key: String, message: String },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub broker: BrokerConfig,
    #[serde(default)]
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub http: HttpConfig,
    /// `[retention]`: how long data is kept (days). Sightings carry face embeddings: biometric data.
    #[serde(default)]
    pub retention: RetentionPolicy,
    pub site: SiteConfig,
    #[serde(default, rename = "camera")]
    pub cameras: Vec<CameraPlace>,
    #[serde(default, rename = "link")]
    pub links: Vec<Link>,
    #[serde(default)]
    pub correlation: CorrelationConfig,
}

/// `[broker]`: the embedded MQTT broker (cargo feature `embedded-broker`, on by default).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Run the embedded broker. Off when the aggregator connects to an external broker
    /// (mosquitto, or an EMQX/VerneMQ cluster) given in `[mqtt]`.
    pub embedded: bool,
    /// Where the embedded broker listens (MQTT 3.1.1). Loopback by default: expose it to the
    /// edge boxes deliberately, behind TLS termination or a VPN.
    pub listen: SocketAddr,
    /// Largest MQTT payload accepted (a sighting with its embedding is ~3 KiB).
    pub max_payload_bytes: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig { embedded: true, listen: ([127, 0, 0, 1], 1883).into(), max_payload_bytes: 1 << 20 }
    }
}

/// `[mqtt]`: how the aggregator's own client connects (to the embedded broker by default).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Defaults to the embedded broker's address.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub client_id: String,
    /// Several aggregators behind one broker cluster split the sightings with an MQTT shared
    /// subscription (`$share/{group}/…`); unset: this aggregator receives everything.
    pub shared_group: Option<String>,
    pub keep_alive_s: u64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: None,
            port: None,
            client_id: "sightline-aggregator".into(),
            shared_group: None,
            keep_alive_s: 15,
        }
    }
}

/// `[http]`: the integrator API (`/api/v1`) and `/healthz`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Loopback by default: put a TLS-terminating reverse proxy in front to serve the network.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: ([127, 0, 0, 1], 8080).into() }
    }
}

/// `[store]`: the SQLite database.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Relative to the config file.
    pub path: PathBuf,
    /// How often the retention job deletes what `[retention]` no longer allows.
    pub retention_every_s: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { path: PathBuf::from("/var/lib/sightline/aggregator.sqlite"), retention_every_s: 3600 }
    }
}

impl Config {
    /// Reads, parses and validates a config file; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mut cfg = Config::parse(&text, path)?;
        if cfg.store.path.is_relative() {
            cfg.store.path = path.parent().unwrap_or(Path::new(".")).join(&cfg.store.path);
        }
        Ok(cfg)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?;
        let invalid =
            |key: &str, message: String| ConfigError::Invalid { path: path.to_owned(), key: key.into(), message };
        cfg.site_model().map_err(|e| invalid(&e.key, e.reason))?;
        cfg.correlation.validate().map_err(|e| invalid(&e.key, e.reason))?;
        let r = &cfg.retention;
        for (key, days) in [
            ("retention.sightings_days", r.sightings_days),
            ("retention.alerts_days", r.alerts_days),
            ("retention.crowd_days", r.crowd_days),
            ("retention.audit_days", r.audit_days),
        ] {
            if !(days > 0.0 && days.is_finite()) {
                return Err(invalid(key, format!("must be a positive number of days, got {days}")));
            }
        }
        if cfg.store.retention_every_s == 0 {
            return Err(invalid("store.retention_every_s", "must be at least 1".into()));
        }
        if cfg.broker.max_payload_bytes < 16 * 1024 {
            return Err(invalid("broker.max_payload_bytes", "must be at least 16384 (a sighting is ~3 KiB)".into()));
        }
        if let Some(g) = &cfg.mqtt.shared_group {
            sightline_contract::validate_id("shared group", g)
                .map_err(|e| invalid("mqtt.shared_group", e.to_string()))?;
        }
        Ok(cfg)
    }

    /// The site model (cameras placed in the site frame).
    pub fn site_model(&self) -> Result<SiteModel, crate::site::SiteError> {
        SiteModel::new(self.site.clone(), self.cameras.clone(), self.links.clone())
    }

    /// Where the aggregator's MQTT client connects.
    pub fn mqtt_address(&self) -> (String, u16) {
        let host = self.mqtt.host.clone().unwrap_or_else(|| self.broker.listen.ip().to_string());
        (host, self.mqtt.port.unwrap_or(self.broker.listen.port()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_configs_parse() {
        for file in ["aggregator.example.toml", "demo-aggregator.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs").join(file);
            Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn errors_name_the_key() {
        let site = "[site]\nid = \"s\"\n";
        let bad = |text: &str| Config::parse(text, Path::new("a.toml")).unwrap_err().to_string();
        assert!(bad(&format!("{site}[retention]\nsightings_days = 0.0\n")).contains("retention.sightings_days"));
        assert!(bad(&format!("{site}[store]\nretention_every_s = 0\n")).contains("store.retention_every_s"));
        assert!(bad(&format!("{site}[mqtt]\nshared_group = \"A B\"\n")).contains("mqtt.shared_group"));
        assert!(bad(&format!("{site}[correlation]\nmax_distance = 5.0\n")).contains("`correlation.max_distance`"));
        assert!(
            bad(&format!("{site}[[camera]]\nid = \"c\"\nposition = [0.0, 0.0]\n[[link]]\nfrom = \"c\"\nto = \"x\"\n"))
                .contains("link[0]")
        );
        assert!(bad("[site]\nid = \"s\"\nsurprise = 1\n").contains("surprise"));
    }
}
