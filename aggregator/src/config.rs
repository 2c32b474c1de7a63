//! The aggregator's TOML configuration (`configs/aggregator.example.toml` documents every key).
//!
//! Unknown keys are rejected; semantic errors name the key and the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use sightline_base::config;
// the loading errors and `[mqtt]`'s security keys are shared with the edge agent
pub use sightline_base::config::ConfigError;
use sightline_base::mqtt::SecurityKeys;
pub use sightline_base::mqtt::{BrokerSecurity, Secret, SecurityError};

use crate::broker::acl::{self, Identities, IdentityError, Policy};
use crate::correlate::CorrelationConfig;
use crate::site::{CameraPlace, Link, SiteConfig, SiteError, SiteModel};
use crate::sites::Sites;
use crate::store::{PgTarget, RetentionPolicy, StoreError, StoreLocation};
use crate::watchlist::WatchlistConfig;

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
    /// `[site]` (one site), or `[[site]]` (several, in a tree: `crate::sites`).
    #[serde(deserialize_with = "one_or_many")]
    pub site: Vec<SiteConfig>,
    /// `[[camera]]`: the cameras of the only `[site]`.
    #[serde(default, rename = "camera")]
    pub cameras: Vec<CameraPlace>,
    /// `[[link]]`: the links of the only `[site]`.
    #[serde(default, rename = "link")]
    pub links: Vec<Link>,
    #[serde(default)]
    pub correlation: CorrelationConfig,
    #[serde(default)]
    pub search: SearchConfig,
    /// `[faces]`: the face pipeline that embeds uploaded photos (search, watchlist).
    #[serde(default)]
    pub faces: FacesConfig,
    /// `[runtime]`: ONNX Runtime for `[faces]` (as in the edge agent's config).
    #[serde(default)]
    pub runtime: sightline_vision::RuntimeConfig,
    #[serde(default)]
    pub watchlist: WatchlistConfig,
    /// `[ingest]`: what a message must be to be believed (`plausible.rs`).
    #[serde(default)]
    pub ingest: crate::plausible::IngestConfig,
    /// `[cluster]`: this aggregator is one node of several sharing the PostgreSQL store and a
    /// broker, each site correlated by one node at a time (`cluster/`).
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique among the nodes (an id: letters, digits, `-`, `_`, `.`).
    pub node: String,
    /// How often the node checks its hold on its sites and claims or hands over sites so that
    /// every node correlates its share (seconds); a dead node's sites are taken over within
    /// about this long after PostgreSQL sees its connection close.
    #[serde(default = "ClusterConfig::default_claim_every_s")]
    pub claim_every_s: f64,
}

impl ClusterConfig {
    fn default_claim_every_s() -> f64 {
        2.0
    }
}

/// `[site]` as one table or `[[site]]` as several.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SiteConfig>, D::Error> {
    struct OneOrMany;
    impl<'de> serde::de::Visitor<'de> for OneOrMany {
        type Value = Vec<SiteConfig>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a [site] table or [[site]] tables")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            SiteConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(|s| vec![s])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Vec::<SiteConfig>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
        }
    }
    d.deserialize_any(OneOrMany)
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
    /// File of `user:password` lines (`#` comments and blank lines ignored): when set, the
    /// embedded broker refuses clients without one of these user names and its password.
    /// Relative to the config file. Plain text (rumqttd compares passwords as given): keep it
    /// readable by the aggregator's user only. Never logged. With it, each login is held to its
    /// rights (`broker/acl.rs`): every `[[camera]]` names its `agent`.
    pub users_file: Option<PathBuf>,
    /// Logins (of `users_file`) that may read crowd counts, alerts and statuses only.
    pub observers: Vec<String>,
}

/// The users of `[broker] users_file`: (user name, password), in file order.
pub fn load_users(file: &Path) -> Result<Vec<(String, Secret)>, SecurityError> {
    let key = "broker.users_file";
    let err = |message: String| SecurityError { key, message };
    let text = std::fs::read_to_string(file).map_err(|e| err(format!("cannot read {}: {e}", file.display())))?;
    let mut users: Vec<(String, Secret)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        // messages name the line, never its content (it holds a password)
        let at = || format!("{} line {}", file.display(), i + 1);
        let Some((user, password)) = line.split_once(':') else {
            return Err(err(format!("{}: expected `user:password`", at())));
        };
        if user.is_empty() || user.trim() != user {
            return Err(err(format!("{}: empty user name, or spaces around it", at())));
        }
        if password.is_empty() {
            return Err(err(format!("{}: empty password for user {user:?}", at())));
        }
        if users.iter().any(|(u, _)| u == user) {
            return Err(err(format!("{}: user {user:?} is listed twice", at())));
        }
        users.push((user.to_owned(), Secret(password.to_owned())));
    }
    if users.is_empty() {
        return Err(err(format!(
            "{} lists no `user:password` line (remove the key for no authentication)",
            file.display()
        )));
    }
    Ok(users)
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            embedded: true,
            listen: ([127, 0, 0, 1], 1883).into(),
            max_payload_bytes: 1 << 20,
            users_file: None,
            observers: Vec::new(),
        }
    }
}

/// `[mqtt]`: how the aggregator's own client connects (to the embedded broker by default).
#[derive(Clone, Debug, Deserialize)]
// the derived code deserialises the aggregator's own keys; `Deserialize` below adds the security keys
#[serde(remote = "Self", deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Defaults to the embedded broker's address.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub client_id: String,
    pub keep_alive_s: u64,
    /// `username` (with the embedded broker and `[broker] users_file`, one of its users),
    /// `password_file` (or `password`) and `[mqtt.tls]`: the broker security keys, the same as the
    /// edge agent's.
    #[serde(skip)]
    pub security: SecurityKeys,
}

impl<'de> Deserialize<'de> for MqttConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        config::embed(d, |d| MqttConfig::deserialize(d), |m| &mut m.security)
    }
}

impl AsRef<SecurityKeys> for MqttConfig {
    fn as_ref(&self) -> &SecurityKeys {
        &self.security
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: None,
            port: None,
            client_id: "sightline-aggregator".into(),
            keep_alive_s: 15,
            security: SecurityKeys::default(),
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

/// `[store]`: where the store is: an SQLite file (`path`, the default) or a PostgreSQL database
/// (`url`), not both.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The SQLite file, relative to the config file; default
    /// `/var/lib/sightline/aggregator.sqlite` (when `url` is not set).
    pub path: Option<PathBuf>,
    /// A PostgreSQL database instead: `postgres://user@host:port/database`.
    pub url: Option<String>,
    /// A file holding only the password of `url`'s user (relative to the config file), so the
    /// password need not sit in the config file.
    pub password_file: Option<PathBuf>,
    /// How often the retention job deletes what `[retention]` no longer allows.
    pub retention_every_s: u64,
    /// How often (hours) the whole database is rewritten compactly (SQLite `VACUUM`, PostgreSQL
    /// `VACUUM FULL` of the purged tables) after a retention run, so no free page keeps bytes of
    /// deleted rows; 0 never. It holds up ingestion for a while on a large store (the broker
    /// keeps the backlog meanwhile).
    pub compact_every_h: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { path: None, url: None, password_file: None, retention_every_s: 3600, compact_every_h: 24 }
    }
}

impl StoreConfig {
    /// The default SQLite file.
    pub const DEFAULT_PATH: &str = "/var/lib/sightline/aggregator.sqlite";

    /// Where the store is (after [`StoreConfig::check`]).
    pub fn location(&self) -> StoreLocation {
        match &self.url {
            Some(url) => StoreLocation::Postgres { url: url.clone(), password_file: self.password_file.clone() },
            None => StoreLocation::Sqlite(self.path.clone().unwrap_or_else(|| PathBuf::from(Self::DEFAULT_PATH))),
        }
    }

    /// The keys' combinations: (key, message) of the first fault.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.url.is_some() && self.path.is_some() {
            return Err((
                "store.url",
                "store.path (an SQLite file) and store.url (a PostgreSQL database) are both set: keep one".into(),
            ));
        }
        if self.password_file.is_some() && self.url.is_none() {
            return Err(("store.password_file", "is the password of store.url, which is not set".into()));
        }
        if let Some(url) = &self.url {
            let target = PgTarget::new(url, None).map_err(|e| match e {
                StoreError::Invalid { detail, .. } => ("store.url", detail),
                other => ("store.url", other.to_string()),
            })?;
            if target.has_password() && self.password_file.is_some() {
                return Err((
                    "store.password_file",
                    "store.url holds a password too: keep the password in one place (password_file)".into(),
                ));
            }
        }
        Ok(())
    }
}

/// `[search]`: `POST /api/v1/search` over the embeddings inside the retention window.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// `max_distance` of a request that gives none (dlib: same person below 0.6).
    pub default_max_distance: f32,
    /// `limit` of a request that gives none, and the largest accepted.
    pub default_limit: u32,
    pub max_limit: u32,
    /// Threads one search scans with; 0: every core.
    pub threads: usize,
    /// Largest uploaded photo (decoded bytes).
    pub max_photo_bytes: usize,
    /// Largest uploaded photo in pixels (width x height from its header, checked before decoding).
    pub max_photo_pixels: u64,
    /// Photos (search, watchlist) in progress at once: decoding, embedding or waiting for the face
    /// pipeline. Another waits up to 2 s for a slot, then gets 503.
    pub max_concurrent_photos: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            default_max_distance: 0.6,
            default_limit: 20,
            max_limit: 1000,
            threads: 0,
            max_photo_bytes: 10 << 20,
            max_photo_pixels: 25_000_000,
            max_concurrent_photos: 2,
        }
    }
}

/// `[faces]`: the face models the aggregator embeds photos with: the same files, and the same
/// code (`sightline-vision`), as the edge agents.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FacesConfig {
    /// Directory of the verified model files (relative to the config file).
    pub model_dir: PathBuf,
    pub detector: String,
    /// Faces narrower than this in a photo (pixels) are refused: too small to identify.
    pub min_face_px: f32,
}

impl Default for FacesConfig {
    fn default() -> Self {
        FacesConfig {
            model_dir: PathBuf::from("models/cache"),
            detector: "yunet_n_dynamic.onnx".into(),
            min_face_px: 40.0,
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = config::read(path)?;
        let mut cfg = Config::parse(&text, path)?;
        let dir = config::dir_of(path);
        config::rebase(dir, &mut cfg.faces.model_dir);
        for p in [
            cfg.runtime.onnxruntime.as_mut(),
            cfg.broker.users_file.as_mut(),
            cfg.store.path.as_mut(),
            cfg.store.password_file.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            config::rebase(dir, p);
        }
        cfg.mqtt.security.rebase(dir);
        // the files named in [mqtt] and [broker] exist and parse
        let invalid =
            |e: SecurityError| ConfigError::Invalid { path: path.to_owned(), key: e.key.into(), message: e.message };
        let security = BrokerSecurity::load(&cfg.mqtt).map_err(invalid)?;
        if let Some(file) = &cfg.broker.users_file {
            let users = load_users(file).map_err(invalid)?;
            cfg.check_own_login(&security, &users).map_err(invalid)?;
            cfg.check_user_identities(&users).map_err(|e| ConfigError::Invalid {
                path: path.to_owned(),
                key: e.key,
                message: e.message,
            })?;
        }
        Ok(cfg)
    }

    /// With the embedded broker requiring users, the aggregator's own client (when it connects
    /// to it) must log in as one of them.
    fn check_own_login(&self, security: &BrokerSecurity, users: &[(String, Secret)]) -> Result<(), SecurityError> {
        if !self.broker.embedded || self.mqtt.host.is_some() {
            return Ok(());
        }
        let Some(user) = security.username() else {
            return Err(SecurityError {
                key: "mqtt.username",
                message: "[broker] users_file is set: the aggregator's own client needs one of its users \
                          (mqtt.username and mqtt.password_file)"
                    .into(),
            });
        };
        match users.iter().find(|(u, _)| u == user) {
            None => {
                Err(SecurityError { key: "mqtt.username", message: format!("{user:?} is not in broker.users_file") })
            }
            Some((_, password)) if Some(password) != security.password() => Err(SecurityError {
                key: if self.mqtt.security.password.is_some() { "mqtt.password" } else { "mqtt.password_file" },
                message: format!("not the password broker.users_file gives {user:?}"),
            }),
            Some(_) => Ok(()),
        }
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = config::parse(text, path)?;
        let invalid =
            |key: &str, message: String| ConfigError::Invalid { path: path.to_owned(), key: key.into(), message };
        cfg.sites().map_err(|e| invalid(&e.key, e.reason))?;
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
        cfg.store.check().map_err(|(key, message)| invalid(key, message))?;
        if cfg.store.retention_every_s == 0 {
            return Err(invalid("store.retention_every_s", "must be at least 1".into()));
        }
        if cfg.broker.max_payload_bytes < 16 * 1024 {
            return Err(invalid("broker.max_payload_bytes", "must be at least 16384 (a sighting is ~3 KiB)".into()));
        }
        let w = &cfg.watchlist;
        if !(w.max_distance > 0.0 && w.max_distance <= 2.0) {
            return Err(invalid("watchlist.max_distance", format!("must be in (0, 2], got {}", w.max_distance)));
        }
        if !(w.max_days > 0.0 && w.max_days.is_finite()) {
            return Err(invalid(
                "watchlist.max_days",
                format!("must be a positive number of days, got {}", w.max_days),
            ));
        }
        cfg.ingest.validate().map_err(|(key, message)| invalid(key, message))?;
        let q = &cfg.search;
        if !(q.default_max_distance > 0.0 && q.default_max_distance <= 2.0) {
            return Err(invalid(
                "search.default_max_distance",
                format!("must be in (0, 2], got {}", q.default_max_distance),
            ));
        }
        if q.max_limit == 0 || q.default_limit == 0 || q.default_limit > q.max_limit {
            return Err(invalid("search.default_limit", "needs 1 <= default_limit <= max_limit".into()));
        }
        if q.max_photo_pixels < 1_000_000 || q.max_concurrent_photos == 0 {
            let key =
                if q.max_concurrent_photos == 0 { "search.max_concurrent_photos" } else { "search.max_photo_pixels" };
            return Err(invalid(
                key,
                "must be at least 1 (max_concurrent_photos) and 1000000 (max_photo_pixels)".into(),
            ));
        }
        cfg.mqtt.security.validate(&cfg.mqtt_address().0).map_err(|e| invalid(e.key, e.message))?;
        if cfg.broker.users_file.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(invalid("broker.users_file", "must be a file path".into()));
        }
        cfg.check_identities().map_err(|e| invalid(&e.key, e.message))?;
        if let Some(c) = &cfg.cluster {
            sightline_contract::validate_id("node name", &c.node)
                .map_err(|e| invalid("cluster.node", e.to_string()))?;
            if !(c.claim_every_s >= 0.1 && c.claim_every_s <= 60.0) {
                return Err(invalid("cluster.claim_every_s", format!("must be in [0.1, 60], got {}", c.claim_every_s)));
            }
            if cfg.store.url.is_none() {
                return Err(invalid(
                    "cluster",
                    "the nodes of a cluster share one PostgreSQL database: set store.url".into(),
                ));
            }
            if cfg.broker.embedded {
                return Err(invalid(
                    "cluster",
                    "the nodes of a cluster share one (clustered) MQTT broker: set broker.embedded = false and mqtt.host"
                        .into(),
                ));
            }
        }
        Ok(cfg)
    }

    /// The file-free identity checks of a config (`Config::parse`).
    fn check_identities(&self) -> Result<(), IdentityError> {
        let cfg = self;
        for (_, c) in cfg.all_cameras() {
            if let Some(agent) = &c.agent {
                sightline_contract::validate_id("agent id", agent)
                    .map_err(|e| IdentityError { key: format!("camera[{}].agent", c.id), message: e.to_string() })?;
            }
        }
        let b = &cfg.broker;
        if !b.embedded {
            return Ok(());
        }
        if b.users_file.is_none() {
            if !b.listen.ip().is_loopback() {
                return acl::fail(
                    "broker.listen",
                    format!(
                        "{}: a broker reachable from the network needs users_file (logins for the aggregator and each agent)",
                        b.listen
                    ),
                );
            }
            if !b.observers.is_empty() {
                return acl::fail("broker.observers", "observers are logins: set broker.users_file");
            }
            return Ok(());
        }
        Policy::new(&cfg.identities()).map(drop)
    }

    /// The identity checks against `[broker] users_file` (`Config::load`): every agent and observer
    /// named has a login there.
    pub(crate) fn check_user_identities(&self, users: &[(String, Secret)]) -> Result<(), IdentityError> {
        let cfg = self;
        if !cfg.broker.embedded {
            return Ok(());
        }
        let known = |login: &str| users.iter().any(|(u, _)| u == login);
        for (_, c) in cfg.all_cameras() {
            if let Some(agent) = c.agent.as_deref().filter(|a| !known(a)) {
                return acl::fail(
                    format!("camera[{}].agent", c.id),
                    format!("agent {agent:?} has no login in broker.users_file (its user name is its agent id)"),
                );
            }
        }
        if let Some(o) = cfg.broker.observers.iter().find(|o| !known(o)) {
            return acl::fail("broker.observers", format!("{o:?} has no login in broker.users_file"));
        }
        Ok(())
    }

    /// Who may use the broker, for its access rules ([`Policy::new`]).
    pub fn identities(&self) -> Identities<'_> {
        Identities {
            sites: self.site.iter().map(|s| s.id.as_str()).collect(),
            cameras: self.all_cameras().map(|(site, c)| (site, c.id.as_str(), c.agent.as_deref())).collect(),
            aggregator: self.mqtt.security.username.as_deref().map(|login| (login, self.mqtt.client_id.as_str())),
            observers: &self.broker.observers,
        }
    }

    /// The sites and their tree, each with its cameras placed in its frame. With several
    /// `[[site]]`s, errors name the site: `site[2].camera[0].position`.
    pub fn sites(&self) -> Result<Sites, SiteError> {
        let several = self.site.len() > 1;
        if several && (!self.cameras.is_empty() || !self.links.is_empty()) {
            let key = if self.cameras.is_empty() { "link" } else { "camera" };
            return Err(SiteError::new(
                key,
                "with several [[site]]s, each site's cameras and links are [[site.camera]] and [[site.link]]",
            ));
        }
        let mut models = Vec::with_capacity(self.site.len());
        for (i, site) in self.site.iter().enumerate() {
            let mut site = site.clone();
            let (mut cameras, mut links) = (std::mem::take(&mut site.cameras), std::mem::take(&mut site.links));
            if !several {
                if !(cameras.is_empty() || self.cameras.is_empty()) || !(links.is_empty() || self.links.is_empty()) {
                    return Err(SiteError::new(
                        "camera",
                        "cameras and links are given both in [site] and at the top level: use one place",
                    ));
                }
                cameras.extend(self.cameras.iter().cloned());
                links.extend(self.links.iter().cloned());
            }
            let (name, parent) = (site.name.clone(), site.parent.clone());
            let model = SiteModel::new(site, cameras, links)
                .map_err(|e| SiteError { key: if several { site_key(i, &e.key) } else { e.key }, reason: e.reason })?;
            models.push((model, name, parent));
        }
        Sites::new(models, |i| if several { format!("site[{i}].") } else { "site.".into() })
    }

    /// Every camera of every site, with its site id.
    pub fn all_cameras(&self) -> impl Iterator<Item = (&str, &CameraPlace)> {
        let single = (self.site.len() == 1).then(|| self.site[0].id.as_str());
        let top = self.cameras.iter().filter_map(move |c| single.map(|s| (s, c)));
        self.site.iter().flat_map(|s| s.cameras.iter().map(move |c| (s.id.as_str(), c))).chain(top)
    }

    /// Where the aggregator's MQTT client connects.
    pub fn mqtt_address(&self) -> (String, u16) {
        let host = self.mqtt.host.clone().unwrap_or_else(|| self.broker.listen.ip().to_string());
        (host, self.mqtt.port.unwrap_or(self.broker.listen.port()))
    }
}

/// A key of site `i`'s model (`site.georef.origin_lat`, `camera[0].id`) as a key of `[[site]]` `i`.
fn site_key(i: usize, key: &str) -> String {
    format!("site[{i}].{}", key.strip_prefix("site.").unwrap_or(key))
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
    fn several_sites_make_a_tree_and_errors_name_the_site() {
        let tree = "[[site]]\nid = \"district\"\n\
                    [[site]]\nid = \"east\"\nparent = \"district\"\n\
                    [[site.camera]]\nid = \"gate\"\nposition = [0.0, 0.0]\n\
                    [[site]]\nid = \"west\"\nparent = \"district\"\n\
                    [[site.camera]]\nid = \"gate\"\nposition = [5.0, 0.0]\n";
        let cfg = Config::parse(tree, Path::new("a.toml")).unwrap();
        let sites = cfg.sites().unwrap();
        let ids: Vec<&str> = sites.iter().map(|s| s.id()).collect();
        assert_eq!(ids, ["district", "east", "west"]);
        let cameras: Vec<(&str, &str)> = cfg.all_cameras().map(|(s, c)| (s, c.id.as_str())).collect();
        assert_eq!(cameras, [("east", "gate"), ("west", "gate")], "camera ids are per site");

        let bad = |text: &str| Config::parse(text, Path::new("a.toml")).unwrap_err().to_string();
        let e = bad(&tree.replace("id = \"west\"\nparent = \"district\"", "id = \"west\"\nparent = \"north\""));
        assert!(e.contains("`site[2].parent`") && e.contains("unknown site \"north\""), "{e}");
        let e = bad(&tree.replace("position = [5.0, 0.0]", "position = [5.0]"));
        assert!(e.contains("position"), "{e}");
        let e = bad(&tree.replace("[0.0, 0.0]", "[nan, 0.0]"));
        assert!(e.contains("`site[1].camera[0].position`"), "{e}");
        let e = bad(&format!("{tree}[[camera]]\nid = \"lost\"\nposition = [0.0, 0.0]\n"));
        assert!(e.contains("`camera`") && e.contains("[[site.camera]]"), "{e}");
        let e = bad(&tree.replace("id = \"district\"\n", "id = \"district\"\nparent = \"west\"\n"));
        assert!(e.contains("cycle"), "{e}");
        let e = bad(&tree.replace("id = \"west\"", "id = \"east\""));
        assert!(e.contains("`site[2].id`") && e.contains("defined twice"), "{e}");
        // the one-site form is unchanged
        let one = Config::parse("[site]\nid = \"s\"\n[[camera]]\nid = \"c\"\nposition = [0.0, 0.0]\n", Path::new("a"))
            .unwrap();
        assert_eq!(one.sites().unwrap().len(), 1);
        assert_eq!(one.all_cameras().count(), 1);
    }

    #[test]
    fn a_cluster_node_needs_postgres_and_a_shared_broker() {
        let node = "[site]\nid = \"s\"\n[store]\nurl = \"postgres://agg@db/sightline\"\n\
                    [broker]\nembedded = false\n[mqtt]\nhost = \"broker\"\n[cluster]\nnode = \"a\"\n";
        let cfg = Config::parse(node, Path::new("a.toml")).unwrap();
        let c = cfg.cluster.as_ref().unwrap();
        assert_eq!((c.node.as_str(), c.claim_every_s), ("a", 2.0));
        let bad = |text: &str| Config::parse(text, Path::new("a.toml")).unwrap_err().to_string();
        let e = bad(&node.replace("url = \"postgres://agg@db/sightline\"", "path = \"a.sqlite\""));
        assert!(e.contains("`cluster`") && e.contains("store.url"), "{e}");
        let e = bad(&node.replace("embedded = false", "embedded = true"));
        assert!(e.contains("`cluster`") && e.contains("broker.embedded"), "{e}");
        let e = bad(&node.replace("node = \"a\"", "node = \"a/b\""));
        assert!(e.contains("`cluster.node`"), "{e}");
        let e = bad(&format!("{node}claim_every_s = 0.0\n"));
        assert!(e.contains("`cluster.claim_every_s`"), "{e}");
        let e = bad(&format!("{node}shared_group = \"g\"\n"));
        assert!(e.contains("shared_group"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let site = "[site]\nid = \"s\"\n";
        let bad = |text: &str| Config::parse(text, Path::new("a.toml")).unwrap_err().to_string();
        assert!(bad(&format!("{site}[retention]\nsightings_days = 0.0\n")).contains("retention.sightings_days"));
        assert!(bad(&format!("{site}[store]\nretention_every_s = 0\n")).contains("store.retention_every_s"));
        // removed: it split a site's sightings between aggregators
        assert!(bad(&format!("{site}[mqtt]\nshared_group = \"centre\"\n")).contains("unknown field `shared_group`"));
        assert!(bad(&format!("{site}[correlation]\nmax_distance = 5.0\n")).contains("`correlation.max_distance`"));
        assert!(
            bad(&format!("{site}[[camera]]\nid = \"c\"\nposition = [0.0, 0.0]\n[[link]]\nfrom = \"c\"\nto = \"x\"\n"))
                .contains("link[0]")
        );
        assert!(bad("[site]\nid = \"s\"\nsurprise = 1\n").contains("surprise"));
        // [mqtt] embeds the security keys shared with the edge agent: still strict, with the line
        let e = bad(&format!("{site}[mqtt]\nclient_id = \"a\"\nusername = \"u\"\npasword_file = \"pw\"\n"));
        assert!(e.contains("unknown field `pasword_file`") && e.contains("line 6"), "{e}");
        assert!(e.contains("`keep_alive_s`, `username`, `password_file`, `password`, `tls`"), "{e}");
        let e = bad(&format!("{site}[mqtt]\n[mqtt.tls]\ncafile = \"ca.pem\"\n"));
        assert!(e.contains("unknown field `cafile`") && e.contains("line 5"), "{e}");
        assert!(bad(&format!("{site}[mqtt]\nusername = \"\"\n")).contains("`mqtt.username`"));
        assert!(bad(&format!("{site}[search]\nmax_photo_pixels = 1000\n")).contains("`search.max_photo_pixels`"));
        assert!(
            bad(&format!("{site}[search]\nmax_concurrent_photos = 0\n")).contains("`search.max_concurrent_photos`")
        );
    }

    #[test]
    fn store_is_sqlite_by_default_or_postgres_by_url() {
        let site = "[site]\nid = \"s\"\n";
        let parse = |text: &str| Config::parse(&format!("{site}{text}"), Path::new("a.toml"));
        let bad = |text: &str| parse(text).unwrap_err().to_string();
        assert_eq!(
            parse("").unwrap().store.location(),
            StoreLocation::Sqlite(PathBuf::from(StoreConfig::DEFAULT_PATH))
        );
        assert_eq!(
            parse("[store]\npath = \"x.sqlite\"\n").unwrap().store.location(),
            StoreLocation::Sqlite(PathBuf::from("x.sqlite"))
        );
        let pg =
            parse("[store]\nurl = \"postgres://agg@db.example:5433/sightline\"\npassword_file = \"pw\"\n").unwrap();
        assert_eq!(
            pg.store.location(),
            StoreLocation::Postgres {
                url: "postgres://agg@db.example:5433/sightline".into(),
                password_file: Some(PathBuf::from("pw"))
            }
        );
        assert_eq!(pg.store.location().to_string(), "postgres://agg@db.example:5433/sightline");

        let e = bad("[store]\npath = \"x.sqlite\"\nurl = \"postgres://agg@db/s\"\n");
        assert!(e.contains("store.path") && e.contains("store.url") && e.contains("both set"), "{e}");
        let e = bad("[store]\npassword_file = \"pw\"\n");
        assert!(e.contains("store.password_file") && e.contains("store.url"), "{e}");
        let e = bad("[store]\nurl = \"mysql://agg@db/s\"\n");
        assert!(e.contains("`store.url`") && e.contains("postgres://"), "{e}");
        let e = bad("[store]\nurl = \"postgres://db.example/s\"\n");
        assert!(e.contains("`store.url`") && e.contains("no user"), "{e}");
        // a password in the URL and a password file: one place only; the password is never shown
        let e = bad("[store]\nurl = \"postgres://agg:s3cret-pw@db/s\"\npassword_file = \"pw\"\n");
        assert!(e.contains("store.password_file") && !e.contains("s3cret-pw"), "{e}");
        let e = bad("[store]\nurl = \"postgres://agg@db/s\"\npasword_file = \"pw\"\n");
        assert!(e.contains("unknown field `pasword_file`"), "{e}");
    }

    #[test]
    fn store_paths_are_relative_to_the_config_and_the_password_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aggregator.toml");
        std::fs::write(
            &file,
            "[site]\nid = \"s\"\n[store]\nurl = \"postgres://agg@127.0.0.1:1/s\"\npassword_file = \"secrets/pg\"\n",
        )
        .unwrap();
        let cfg = Config::load(&file).unwrap();
        let StoreLocation::Postgres { password_file: Some(pw), .. } = cfg.store.location() else { panic!() };
        assert_eq!(pw, dir.path().join("secrets/pg"));
        let e = crate::store::read_password_file(&pw).unwrap_err().to_string();
        assert!(e.contains("store.password_file") && e.contains("secrets/pg") && e.contains("cannot read"), "{e}");
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        std::fs::write(&pw, "").unwrap();
        assert!(crate::store::read_password_file(&pw).unwrap_err().to_string().contains("empty"));
        std::fs::write(&pw, "two\nlines\n").unwrap();
        assert!(crate::store::read_password_file(&pw).unwrap_err().to_string().contains("more than one line"));
        std::fs::write(&pw, "pa ss:word\n").unwrap();
        assert_eq!(crate::store::read_password_file(&pw).unwrap(), "pa ss:word");
    }
}
