//! The monitoring centre side: the `aggregator` binary with a generated config (its embedded
//! broker on a free loopback port) and a one-shot MQTT publisher for injecting messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::{Proc, binary};

/// A running aggregator; killed on drop.
pub struct Aggregator {
    pub proc: Proc,
    /// Port of its embedded broker.
    pub port: u16,
    pub dir: PathBuf,
    log: PathBuf,
}

/// Site `testsite` with two cameras 30 m apart, `stage` and `lobby` (for [`aggregator_config`]).
pub const TWO_CAMERA_SITE: &str = r#"
[site]
id = "testsite"

[[camera]]
id = "stage"
position = [0.0, 0.0]

[[camera]]
id = "lobby"
position = [30.0, 0.0]
"#;

/// Five sites in a tree, for [`aggregator_config`]: `district` above the townships `east` and
/// `west`; `riverside` (cameras `gate` and `hall`, 30 m apart) below `east`, `harbour` (camera
/// `gate`: camera ids are per site) below `west`.
pub const FIVE_SITES: &str = r#"
[[site]]
id = "district"
name = "District 7"

[[site]]
id = "east"
name = "East township"
parent = "district"

[[site]]
id = "riverside"
parent = "east"

[[site.camera]]
id = "gate"
position = [0.0, 0.0]

[[site.camera]]
id = "hall"
position = [30.0, 0.0]

[[site]]
id = "west"
parent = "district"

[[site]]
id = "harbour"
parent = "west"

[[site.camera]]
id = "gate"
position = [0.0, 0.0]
"#;

/// Config text for an aggregator whose embedded broker listens on `port`, storing in `store`,
/// with the given `[site]`, `[[camera]]` and other tables.
/// Photos are embedded with the verified models (`crate::model_dir`) on the ONNX Runtime of
/// `ORT_DYLIB_PATH`.
pub fn aggregator_config(port: u16, store: &Path, site: &str) -> String {
    format!(
        "[broker]\nlisten = \"127.0.0.1:{port}\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n[store]\npath = \"{}\"\n\n\
         [faces]\nmodel_dir = \"{}\"\n\n{site}\n",
        store.display(),
        crate::model_dir().display()
    )
}

impl Aggregator {
    /// Starts the aggregator with `config` (written into `dir`, which also gets its log) and
    /// waits until it has subscribed (ingesting) and its search index has loaded (it refuses
    /// searches until then).
    pub fn start_in(dir: &Path, config: &str, port: u16) -> Result<Aggregator> {
        let agg = Aggregator::spawn_in(dir, config, port)?;
        agg.wait_log("subscribed: ingesting", 1, Duration::from_secs(30))?;
        agg.wait_log("search index loaded", 1, Duration::from_secs(30))?;
        Ok(agg)
    }

    /// Starts the aggregator like [`Aggregator::start_in`] without waiting for anything (e.g. when
    /// its broker is expected to refuse it).
    pub fn spawn_in(dir: &Path, config: &str, port: u16) -> Result<Aggregator> {
        Aggregator::spawn_binary(
            &binary("aggregator"),
            "info,rumqttd=warn,sightline_aggregator=debug",
            dir,
            config,
            port,
        )
    }

    /// [`Aggregator::spawn_in`] with the aggregator at `program` (benchmarks run the release one)
    /// logging what `log` (`RUST_LOG`) lets through.
    pub fn spawn_binary(program: &Path, log: &str, dir: &Path, config: &str, port: u16) -> Result<Aggregator> {
        let path = dir.join("aggregator.toml");
        std::fs::write(&path, config)?;
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let file = dir.join(format!("aggregator-{run}.log"));
        let child = Command::new(program)
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", log)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&file)?)
            .spawn()?;
        Ok(Aggregator { proc: Proc(child), port, dir: dir.to_owned(), log: file })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle` `count` times; returns the log.
    pub fn wait_log(&self, needle: &str, count: usize, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.matches(needle).count() >= count {
                return Ok(log);
            }
            if Instant::now() > deadline {
                bail!("{needle:?} not logged {count} time(s) within {timeout:?}; log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Base URL of its API (`http://127.0.0.1:port/api/v1`).
    pub fn api_url(&self) -> Result<String> {
        let log = self.wait_log("HTTP API listening", 1, Duration::from_secs(30))?;
        let line = log.lines().find(|l| l.contains("HTTP API listening")).unwrap_or_default();
        line.split("url=")
            .nth(1)
            .and_then(|u| u.split_whitespace().next())
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no url= in {line:?}"))
    }

    /// Creates an API token of every site with the CLI (`aggregator token create`); returns it.
    pub fn token(&self, name: &str, role: &str) -> Result<String> {
        self.token_of(name, role, None)
    }

    /// Creates an API token with the CLI, scoped to `sites` (comma-separated) when given.
    pub fn token_of(&self, name: &str, role: &str, sites: Option<&str>) -> Result<String> {
        let mut cmd = Command::new(binary("aggregator"));
        cmd.args(["token", "create", "--config"]).arg(self.dir.join("aggregator.toml"));
        cmd.args(["--name", name, "--role", role]);
        if let Some(sites) = sites {
            cmd.args(["--sites", sites]);
        }
        let out = cmd.output()?;
        if !out.status.success() {
            bail!("aggregator token create: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }

    /// Stops it with SIGTERM and waits for the exit.
    pub fn stop(mut self) -> Result<()> {
        Command::new("kill").arg("-TERM").arg(self.proc.0.id().to_string()).status()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.proc.0.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("aggregator did not stop; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

/// Publishes `messages` (topic, payload) with QoS 1 and waits for every PUBACK.
pub fn publish(port: u16, messages: &[(String, Vec<u8>)]) -> Result<()> {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut opts = MqttOptions::new(format!("test-pub-{}-{n}", std::process::id()), "127.0.0.1", port);
    opts.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut conn) = Client::new(opts, messages.len() + 10);
    for (topic, payload) in messages {
        client.publish(topic, QoS::AtLeastOnce, false, payload.clone())?;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut acked = 0;
    while acked < messages.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.recv_timeout(left) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("publishing: {e}"),
            Err(_) => bail!("{acked} of {} messages acknowledged within 20 s", messages.len()),
        }
    }
    let _ = client.disconnect();
    Ok(())
}

/// A sighting of site `testsite` on `camera` whose face passed at `at` (2 s in view), with
/// `embedding`: what an edge agent would publish, for injecting with [`publish`].
pub fn synthetic_sighting(camera: &str, at: time::OffsetDateTime, embedding: &[f32]) -> sightline_contract::Sighting {
    sightline_contract::testing::sighting().site("testsite").camera(camera).at(at).embedding(embedding).build()
}

/// A face-like embedding (128 values) of norm 1.4, different for each `seed`: the norms of
/// dlib's embeddings of real faces are 1.25 to 1.55 (`tests/ingest_plausibility.rs`,
/// `real_faces_fit_the_limits`), and ingest refuses norms far outside them.
pub fn synthetic_face(seed: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..128).map(|i| ((i * (31 + seed) % 101) as f32 / 101.0 - 0.5) * 0.3).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm * 1.4).collect()
}
