//! The agent's TOML configuration (`configs/edge-agent.example.toml` documents every key).
//!
//! Unknown keys are rejected; semantic errors name the key (`camera[1].analysis_fps`) and the file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use sightline_base::config;
// the loading errors and `[mqtt]`'s security keys are shared with the aggregator
pub use sightline_base::config::ConfigError;
use sightline_base::mqtt::{BrokerSecurity, SecurityKeys};
use sightline_vision::RuntimeConfig;

use crate::rules::{HealthConfig, RuleConfig, ZoneConfig};
use crate::tracker::TrackerConfig;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub agent: AgentSection,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub faces: FacesConfig,
    #[serde(default)]
    pub tracker: TrackerConfig,
    #[serde(default)]
    pub decode: DecodeConfig,
    #[serde(default)]
    pub crowd: CrowdConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default, rename = "camera")]
    pub cameras: Vec<CameraConfig>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Agent id (`[a-z0-9][a-z0-9_-]{0,63}`), unique per site.
    pub id: String,
    /// Site id the agent's cameras belong to.
    pub site: String,
    /// Directory holding the model files (relative paths are relative to the config file).
    #[serde(default = "default_model_dir")]
    pub model_dir: PathBuf,
}

fn default_model_dir() -> PathBuf {
    PathBuf::from("models/cache")
}

/// `[mqtt]`: the broker, the client and its durable outbox.
#[derive(Clone, Debug, PartialEq, Deserialize)]
// the derived code deserialises the agent's own keys; `Deserialize` below adds the security keys
#[serde(remote = "Self", deny_unknown_fields, default)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    /// Defaults to `sightline-edge-{agent id}`.
    pub client_id: Option<String>,
    pub keep_alive_s: u64,
    /// Largest MQTT packet sent or accepted (sightings with embeddings are ~3 KiB).
    pub max_packet_bytes: usize,
    /// Interval of the retained camera status refresh (fps and drop counters).
    pub status_interval_s: u64,
    /// The durable outbox (SQLite): every message is stored here until the broker acknowledges
    /// it. Relative to the config file.
    pub outbox: PathBuf,
    /// Bound of the outbox (topic + payload bytes); past it the lowest-priority, oldest
    /// messages are evicted (crowd, then statuses, then sightings, alerts last).
    pub outbox_max_bytes: u64,
    /// `username`, `password_file` (or `password`) and `[mqtt.tls]`: the broker security keys,
    /// the same as the aggregator's.
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
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: None,
            keep_alive_s: 15,
            max_packet_bytes: 1 << 20,
            status_interval_s: 30,
            outbox: PathBuf::from("/var/lib/sightline/outbox.sqlite"),
            outbox_max_bytes: 64 << 20,
            security: SecurityKeys::default(),
        }
    }
}

/// `[metrics]`: Prometheus `/metrics` and `/healthz` over HTTP.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// Listen address. The default keeps it on the loopback interface: scrape it with a local
    /// Prometheus agent or expose it deliberately. Port 0 picks a free port (logged at start).
    pub listen: std::net::SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true, listen: ([127, 0, 0, 1], DEFAULT_METRICS_PORT).into() }
    }
}

/// Default port of the metrics endpoint.
pub const DEFAULT_METRICS_PORT: u16 = 9810;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FacesConfig {
    /// Detector model: `yunet_n_dynamic.onnx` (default, more accurate) or `yunet_s_dynamic.onnx`.
    pub detector: String,
    pub score_threshold: f32,
    pub nms_iou: f32,
    /// Frames wider than this are downscaled for detection (landmarks map back to full resolution).
    pub max_detect_width: u32,
    /// Faces narrower than this (pixels) are ignored: too small to re-identify.
    pub min_face_px: f32,
}

impl Default for FacesConfig {
    fn default() -> Self {
        FacesConfig {
            detector: "yunet_n_dynamic.onnx".into(),
            // below the tracker's high_score so its second (low-score) stage sees 0.5..0.75
            score_threshold: 0.5,
            nms_iou: 0.3,
            max_detect_width: 1280,
            min_face_px: 24.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// GStreamer decoder element for H.264 (`avdec_h264`, `nvh264dec`, `vaapih264dec`, `v4l2h264dec`, …).
    pub h264: String,
    /// GStreamer decoder element for H.265.
    pub h265: String,
    /// How much nicer than the agent's other threads the decoding threads run (0–19; 0 = the same
    /// priority). See `decode::lower_thread_priority`.
    pub nice: i32,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig { h264: "avdec_h264".into(), h265: "avdec_h265".into(), nice: 10 }
    }
}

/// `[crowd]`: the crowd models, shared by every camera that measures crowds.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrowdConfig {
    pub density_model: String,
    pub person_model: String,
    /// ONNX Runtime threads of the density model: it runs beside face analysis and must not
    /// take all the cores from it.
    pub threads: usize,
    /// Frames wider than this are downscaled for the density model (~2 s per 640x360 frame).
    pub max_width: u32,
    pub person_threshold: f32,
    /// Density cells below this (people per cell) count 0: removes the model's positive floor.
    pub cell_threshold: f32,
    /// The hybrid estimate uses person detections while both estimates stay below this many
    /// people, and the density map from there on (detectors miss people in dense crowds).
    pub dense_at: f32,
}

impl Default for CrowdConfig {
    fn default() -> Self {
        CrowdConfig {
            density_model: "csrnet.onnx".into(),
            person_model: "yolox_nano.onnx".into(),
            threads: 1,
            max_width: 640,
            person_threshold: 0.6,
            cell_threshold: 0.01,
            dense_at: 20.0,
        }
    }
}

/// `[camera.crowd]`: whether and how often a camera measures its crowd.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CameraCrowdConfig {
    /// Publish `sightline.crowd/1` measurements (and evaluate crowd rules).
    pub enabled: bool,
    /// Seconds between measurements (the density model is expensive).
    pub interval_s: f64,
    /// Person detections per second (fences and sparse-scene counts).
    pub persons_fps: f64,
    /// Publish the latest density heatmap (PNG, retained) on `…/{camera}/heatmap`.
    pub publish_heatmap: bool,
    /// Empty-scene density baseline captured with `edge-agent crowd-baseline` (relative to the
    /// config file); subtracted from every density map before counting.
    pub baseline: Option<PathBuf>,
}

impl Default for CameraCrowdConfig {
    fn default() -> Self {
        CameraCrowdConfig { enabled: false, interval_s: 10.0, persons_fps: 2.0, publish_heatmap: false, baseline: None }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    #[default]
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Pace {
    /// Play a file at its own frame rate, like a camera (frames may be dropped under load).
    #[default]
    Realtime,
    /// Analyse every sampled frame as fast as the models allow (replay, benchmarks); nothing dropped.
    Fast,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub id: String,
    /// `rtsp://…` URL (credentials may be embedded: `rtsp://user:pass@host/…`).
    pub rtsp: Option<String>,
    #[serde(default)]
    pub transport: RtspTransport,
    /// A video file GStreamer can demux (replay); relative to the config file.
    pub file: Option<PathBuf>,
    /// Replay the file forever.
    #[serde(default, rename = "loop")]
    pub looped: bool,
    #[serde(default)]
    pub pace: Pace,
    /// Frames analysed per second (latest frame wins; the rest are skipped).
    #[serde(default = "default_fps")]
    pub analysis_fps: f64,
    /// No frame for this long means the stream is dead (reconnect).
    #[serde(default = "default_silence")]
    pub silence_timeout_s: f64,
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Named image regions: crowd counts per zone, electronic fences.
    #[serde(default, rename = "zone")]
    pub zones: Vec<ZoneConfig>,
    /// Crowd threshold rules.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub crowd: CameraCrowdConfig,
}

impl CameraConfig {
    /// Person detection runs for crowd counts and for fences.
    pub fn needs_persons(&self) -> bool {
        self.crowd.enabled || self.zones.iter().any(|z| z.fence)
    }
}

fn default_fps() -> f64 {
    5.0
}
fn default_silence() -> f64 {
    10.0
}
fn default_true() -> bool {
    true
}

/// Where a camera's video comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Rtsp { url: url::Url, transport: RtspTransport },
    File { path: PathBuf, looped: bool, pace: Pace },
}

impl CameraConfig {
    pub fn source(&self) -> Source {
        match (&self.rtsp, &self.file) {
            (Some(url), _) => Source::Rtsp { url: url.parse().expect("validated"), transport: self.transport },
            (None, Some(path)) => Source::File { path: path.clone(), looped: self.looped, pace: self.pace },
            (None, None) => unreachable!("validated: one of rtsp/file"),
        }
    }
}

impl Config {
    /// `(key, file name)` of every model file the config names, loaded or not (each a plain name
    /// inside `[agent] model_dir`: `model_files.rs`).
    pub fn model_files(&self) -> [(&'static str, &str); 3] {
        [
            ("faces.detector", self.faces.detector.as_str()),
            ("crowd.person_model", self.crowd.person_model.as_str()),
            ("crowd.density_model", self.crowd.density_model.as_str()),
        ]
    }

    /// `(key, file name)` of each model file the agent loads: the face detector always, the
    /// person detector and the density model when an enabled camera needs them.
    pub fn loaded_model_files(&self) -> Vec<(&'static str, &str)> {
        let enabled = || self.cameras.iter().filter(|c| c.enabled);
        let mut files = vec![("faces.detector", self.faces.detector.as_str())];
        if enabled().any(|c| c.needs_persons()) {
            files.push(("crowd.person_model", self.crowd.person_model.as_str()));
        }
        if enabled().any(|c| c.crowd.enabled) {
            files.push(("crowd.density_model", self.crowd.density_model.as_str()));
        }
        files
    }

    /// Reads, parses and validates a config file; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = config::read(path)?;
        let mut cfg = Config::parse(&text, path)?;
        let base = config::dir_of(path);
        let rebase = |p: &mut PathBuf| config::rebase(base, p);
        rebase(&mut cfg.agent.model_dir);
        rebase(&mut cfg.mqtt.outbox);
        cfg.mqtt.security.rebase(base);
        if let Some(p) = cfg.runtime.onnxruntime.as_mut() {
            rebase(p);
        }
        for c in &mut cfg.cameras {
            if let Some(p) = c.file.as_mut() {
                rebase(p);
            }
            if let Some(p) = c.crowd.baseline.as_mut() {
                rebase(p);
            }
        }
        // the files named in [mqtt] (password, certificates, key) exist and parse
        BrokerSecurity::load(&cfg.mqtt).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            key: e.key.into(),
            message: e.message,
        })?;
        Ok(cfg)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = config::parse(text, path)?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid { path: path.to_owned(), key, message };
        sightline_contract::validate_id("agent", &self.agent.id)
            .map_err(|e| invalid("agent.id".into(), e.to_string()))?;
        sightline_contract::validate_id("site", &self.agent.site)
            .map_err(|e| invalid("agent.site".into(), e.to_string()))?;
        if self.mqtt.max_packet_bytes < 16 * 1024 {
            return Err(invalid(
                "mqtt.max_packet_bytes".into(),
                "must be at least 16384 (a sighting is ~3 KiB)".into(),
            ));
        }
        if self.mqtt.outbox_max_bytes < 64 * 1024 {
            return Err(invalid("mqtt.outbox_max_bytes".into(), "must be at least 65536".into()));
        }
        if self.mqtt.outbox.as_os_str().is_empty() {
            return Err(invalid("mqtt.outbox".into(), "must be a file path".into()));
        }
        self.mqtt.security.validate(&self.mqtt.host).map_err(|e| invalid(e.key.into(), e.message))?;
        if !(0..=19).contains(&self.decode.nice) {
            return Err(invalid("decode.nice".into(), "must be within 0..19".into()));
        }
        if !(0.0..=1.0).contains(&self.faces.score_threshold) {
            return Err(invalid("faces.score_threshold".into(), "must be within 0..1".into()));
        }
        self.tracker.validate().map_err(|e| invalid(format!("tracker.{}", e.field), e.requirement.to_string()))?;
        for (key, file) in self.model_files() {
            crate::model_files::check_name(file).map_err(|m| invalid(key.into(), m))?;
        }
        if self.cameras.is_empty() {
            return Err(invalid("camera".into(), "no [[camera]] configured".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.cameras.iter().enumerate() {
            let key = |k: &str| format!("camera[{i}].{k}");
            sightline_contract::validate_id("camera", &c.id).map_err(|e| invalid(key("id"), e.to_string()))?;
            if !seen.insert(&c.id) {
                return Err(invalid(key("id"), format!("duplicate camera id {:?}", c.id)));
            }
            match (&c.rtsp, &c.file) {
                (Some(_), Some(_)) => return Err(invalid(key("rtsp"), "set either `rtsp` or `file`, not both".into())),
                (None, None) => {
                    return Err(invalid(key("rtsp"), "set `rtsp` (a camera URL) or `file` (a video file)".into()));
                }
                (Some(u), None) => {
                    let url: url::Url =
                        u.parse().map_err(|e| invalid(key("rtsp"), format!("{u:?} is not a URL: {e}")))?;
                    if !matches!(url.scheme(), "rtsp" | "rtsps") {
                        return Err(invalid(key("rtsp"), format!("scheme must be rtsp://, got {:?}", url.scheme())));
                    }
                }
                (None, Some(_)) => {}
            }
            if !(c.analysis_fps > 0.0 && c.analysis_fps <= 60.0) {
                return Err(invalid(key("analysis_fps"), format!("must be in (0, 60], got {}", c.analysis_fps)));
            }
            if c.silence_timeout_s < 1.0 {
                return Err(invalid(key("silence_timeout_s"), "must be at least 1".into()));
            }
            crate::rules::validate(&c.zones, &c.rules, &c.health).map_err(|e| invalid(key(&e.key), e.message))?;
            if c.crowd.interval_s < 1.0 {
                return Err(invalid(key("crowd.interval_s"), "must be at least 1".into()));
            }
            if c.needs_persons() && !(c.crowd.persons_fps > 0.0 && c.crowd.persons_fps <= c.analysis_fps) {
                return Err(invalid(key("crowd.persons_fps"), "must be in (0, analysis_fps]".into()));
            }
        }
        Ok(())
    }

    pub fn model_path(&self, file: &str) -> PathBuf {
        self.agent.model_dir.join(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[agent]
id = "edge-1"
site = "riverside"

[[camera]]
id = "gate-north"
rtsp = "rtsp://127.0.0.1:8554/cam"
"#;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(t, Path::new("test.toml"))
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.cameras[0].analysis_fps, 5.0);
        assert_eq!(c.decode.h264, "avdec_h264");
        assert_eq!(c.mqtt.port, 1883);
        assert_eq!(c.mqtt.outbox, Path::new("/var/lib/sightline/outbox.sqlite"));
        assert_eq!(c.mqtt.outbox_max_bytes, 64 << 20);
        assert!(matches!(c.cameras[0].source(), Source::Rtsp { transport: RtspTransport::Tcp, .. }));
    }

    #[test]
    fn typo_key_is_named_with_its_line() {
        let e = parse(&MINIMAL.replace("rtsp =", "rstp =")).unwrap_err().to_string();
        assert!(e.contains("rstp"), "{e}");
        assert!(e.contains("line 8"), "{e}");
        // [mqtt] embeds the security keys shared with the aggregator: still strict, with the line
        let e = parse(&format!("{MINIMAL}\n[mqtt]\nport = 1884\nhots = \"x\"\n")).unwrap_err().to_string();
        assert!(e.contains("unknown field `hots`"), "{e}");
        assert!(e.contains("line 12"), "{e}");
        assert!(e.contains("`outbox_max_bytes`, `username`, `password_file`, `password`, `tls`"), "{e}");
        let e = parse(&format!("{MINIMAL}\n[mqtt]\nusername = \"u\"\npasword_file = \"pw\"\n")).unwrap_err();
        assert!(e.to_string().contains("unknown field `pasword_file`") && e.to_string().contains("line 12"), "{e}");
        let e = parse(&format!("{MINIMAL}\n[mqtt]\n\nusername = 7\n")).unwrap_err().to_string();
        assert!(e.contains("line 12") && e.contains("invalid type: integer `7`"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let e = parse(&MINIMAL.replace("gate-north", "Gate North")).unwrap_err().to_string();
        assert!(e.contains("camera[0].id"), "{e}");
        let e = parse(&format!("{MINIMAL}analysis_fps = 0\n")).unwrap_err().to_string();
        assert!(e.contains("camera[0].analysis_fps"), "{e}");
        let e = parse(&MINIMAL.replace("rtsp://", "http://")).unwrap_err().to_string();
        assert!(e.contains("camera[0].rtsp") && e.contains("http"), "{e}");
        let two = format!("{MINIMAL}\n[[camera]]\nid = \"gate-north\"\nfile = \"x.mp4\"\n");
        assert!(parse(&two).unwrap_err().to_string().contains("duplicate camera id"));
        for nice in ["-1", "20"] {
            let e = parse(&format!("{MINIMAL}\n[decode]\nnice = {nice}\n")).unwrap_err();
            assert_eq!(key_of(e), "decode.nice", "nice = {nice}");
        }
        assert_eq!(parse(&format!("{MINIMAL}\n[decode]\nnice = 0\n")).unwrap().decode.nice, 0);
    }

    #[test]
    fn model_files_outside_the_model_directory_are_refused() {
        for (table, key, file) in [
            ("faces", "detector", "/opt/other/yunet_n_dynamic.onnx"),
            ("faces", "detector", "../../elsewhere/yunet_n_dynamic.onnx"),
            ("crowd", "person_model", "sub/yolox_nano.onnx"),
            ("crowd", "density_model", ""),
        ] {
            let e = parse(&format!("{MINIMAL}\n[{table}]\n{key} = {file:?}\n")).unwrap_err();
            assert_eq!(key_of(e), format!("{table}.{key}"), "{file:?}");
        }
        // a file of its own in model_dir is a model (loaded unverified when the manifest lacks it)
        let c = parse(&format!("{MINIMAL}\n[faces]\ndetector = \"custom.onnx\"\n")).unwrap();
        assert_eq!(crate::model_files::unverified(c.loaded_model_files()), [("faces.detector", "custom.onnx")]);
        assert!(crate::model_files::unverified(parse(MINIMAL).unwrap().loaded_model_files()).is_empty());
    }

    #[test]
    fn the_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/edge-agent.example.toml");
        let c = Config::load(&path).unwrap();
        assert!(!c.cameras.is_empty());
        // relative paths are rebased on the config file's directory
        assert!(c.mqtt.outbox.starts_with(path.parent().unwrap()), "{:?}", c.mqtt.outbox);
    }

    fn key_of(e: ConfigError) -> String {
        match e {
            ConfigError::Invalid { key, .. } => key,
            e => panic!("not a semantic error: {e}"),
        }
    }

    #[test]
    fn broker_security_keys_are_checked() {
        let mqtt = |keys: &str| parse(&format!("{MINIMAL}\n[mqtt]\n{keys}\n"));
        let c = mqtt("username = \"edge\"\npassword_file = \"pw\"\n[mqtt.tls]\nca_file = \"ca.pem\"").unwrap();
        assert_eq!(c.mqtt.security.username.as_deref(), Some("edge"));
        assert_eq!(c.mqtt.security.tls.unwrap().ca_file, Path::new("ca.pem"));
        assert_eq!(key_of(mqtt("password_file = \"pw\"").unwrap_err()), "mqtt.password_file");
        assert_eq!(key_of(mqtt("password = \"x\"").unwrap_err()), "mqtt.password");
        assert_eq!(key_of(mqtt("username = \"\"").unwrap_err()), "mqtt.username");
        let both = "username = \"u\"\npassword = \"x\"\npassword_file = \"pw\"";
        assert_eq!(key_of(mqtt(both).unwrap_err()), "mqtt.password");
        let tls = |keys: &str| mqtt(&format!("[mqtt.tls]\nca_file = \"ca.pem\"\n{keys}"));
        assert_eq!(key_of(tls("client_cert = \"c.pem\"").unwrap_err()), "mqtt.tls.client_key");
        assert_eq!(key_of(tls("client_key = \"c.key\"").unwrap_err()), "mqtt.tls.client_cert");
        assert_eq!(key_of(tls("server_name = \"not a name\"").unwrap_err()), "mqtt.tls.server_name");
        assert!(tls("server_name = \"broker.example\"").is_ok());
        let e = tls("cafile = \"x\"").unwrap_err().to_string();
        assert!(e.contains("unknown field `cafile`"), "{e}");
        let e = mqtt("[mqtt.tls]\nclient_cert = \"c.pem\"").unwrap_err().to_string();
        assert!(e.contains("missing field `ca_file`"), "{e}");
        // an inline password never shows in debug output
        let c = mqtt("username = \"u\"\npassword = \"hunter2\"").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    /// A config in a fresh directory holding copies of the test PEM files under `certs/`.
    fn load_with(mqtt: &str) -> (tempfile::TempDir, Result<Config, ConfigError>) {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/mqtt-tls");
        for f in ["ca.pem", "client.pem", "client.key", "other.key"] {
            std::fs::copy(fixtures.join(f), certs.join(f)).unwrap();
        }
        std::fs::write(certs.join("password"), "s3cret\n").unwrap();
        std::fs::write(certs.join("empty"), "").unwrap();
        std::fs::write(certs.join("garbage.pem"), "not a certificate\n").unwrap();
        std::fs::write(certs.join("truncated.pem"), "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, format!("{MINIMAL}\n[mqtt]\noutbox = \"outbox.sqlite\"\n{mqtt}\n")).unwrap();
        let cfg = Config::load(&path);
        (dir, cfg)
    }

    const TLS_OK: &str = r#"username = "edge"
password_file = "certs/password"
[mqtt.tls]
ca_file = "certs/ca.pem"
client_cert = "certs/client.pem"
client_key = "certs/client.key""#;

    #[test]
    fn broker_security_files_are_loaded_relative_to_the_config() {
        let (dir, cfg) = load_with(TLS_OK);
        let mqtt = cfg.unwrap().mqtt;
        assert_eq!(mqtt.security.password_file.as_deref(), Some(dir.path().join("certs/password").as_path()));
        let tls = mqtt.security.tls.as_ref().unwrap();
        assert_eq!(tls.ca_file, dir.path().join("certs/ca.pem"));
        assert_eq!(tls.client_key.as_deref(), Some(dir.path().join("certs/client.key").as_path()));
        let security = BrokerSecurity::load(&mqtt).unwrap();
        assert!(security.tls());
        assert!(!format!("{security:?}").contains("s3cret"));
    }

    #[test]
    fn broker_security_file_errors_name_the_key_and_the_file() {
        let cases = [
            ("certs/ca.pem", "certs/missing.pem", "mqtt.tls.ca_file", "missing.pem"),
            ("certs/ca.pem", "certs/garbage.pem", "mqtt.tls.ca_file", "no PEM certificate"),
            ("certs/ca.pem", "certs/truncated.pem", "mqtt.tls.ca_file", "bad PEM"),
            ("certs/client.pem", "certs/client.key", "mqtt.tls.client_cert", "no PEM certificate"),
            ("certs/client.key", "certs/ca.pem", "mqtt.tls.client_key", "no unencrypted PEM private key"),
            ("certs/client.key", "certs/other.key", "mqtt.tls.client_key", "does not fit"),
            ("certs/password", "certs/empty", "mqtt.password_file", "is empty"),
            ("certs/password", "certs/nowhere", "mqtt.password_file", "cannot read"),
        ];
        for (good, bad, key, message) in cases {
            let (dir, cfg) = load_with(&TLS_OK.replace(good, bad));
            let e = cfg.unwrap_err();
            let text = e.to_string();
            assert!(text.contains(message), "{bad}: {text}");
            let file = dir.path().join(bad);
            assert!(text.contains(&file.display().to_string()), "{bad}: {text}");
            assert_eq!(key_of(e), key, "{bad}");
        }
    }
}
