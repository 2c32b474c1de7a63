//! Harness for sightline's end-to-end tests: real processes on 127.0.0.1 with bounded waits.
//!
//! - [`Mosquitto`]: Debian's broker on a free port, stopped on drop;
//! - [`Camsim`]: the project's RTSP camera simulator serving real media;
//! - [`Agent`]: the `edge-agent` binary with a generated config;
//! - [`Subscriber`]: an MQTT client collecting everything under `sightline/v1/#`.
//!
//! Binaries are taken from the cargo target directory this test runs from (`cargo build --bins` first).

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// `shared/media` (env `SIGHTLINE_MEDIA_DIR`, set by `.cargo/config.toml`).
pub fn media(name: &str) -> PathBuf {
    let dir = std::env::var_os("SIGHTLINE_MEDIA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/media"));
    dir.join(name)
}

/// The verified model directory (env `SIGHTLINE_MODEL_DIR`).
pub fn model_dir() -> PathBuf {
    std::env::var_os("SIGHTLINE_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/cache"))
}

/// A workspace binary next to this test's executable (target/<profile>/NAME).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/..");
    let path = dir.join(name);
    assert!(path.is_file(), "{} not built: run `cargo build --bins` before the tests", path.display());
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Mosquitto {
    pub port: u16,
    proc: Option<Proc>,
    dir: tempfile::TempDir,
    persistent: bool,
}

impl Mosquitto {
    /// A broker on a free port, without persistence.
    pub fn start() -> Result<Mosquitto> {
        Mosquitto::start_on(free_port())
    }

    /// A broker on `port` (e.g. where a previous one ran), without persistence.
    pub fn start_on(port: u16) -> Result<Mosquitto> {
        Mosquitto::spawn(port, tempfile::tempdir()?, false)
    }

    /// A broker on a free port that saves its sessions (persistent subscriptions and their
    /// queued QoS 1 messages) when [`stop`](Self::stop)ped, and restores them on [`restart`](Self::restart).
    pub fn start_persistent() -> Result<Mosquitto> {
        Mosquitto::spawn(free_port(), tempfile::tempdir()?, true)
    }

    fn spawn(port: u16, dir: tempfile::TempDir, persistent: bool) -> Result<Mosquitto> {
        let conf = dir.path().join("mosquitto.conf");
        let persistence = if persistent {
            // started as root, mosquitto drops to its own user, which must be able to save there
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
            format!(
                "persistence true\npersistence_location {}/\nautosave_interval 0\nmax_queued_messages 0\n",
                dir.path().display()
            )
        } else {
            "persistence false\n".to_owned()
        };
        std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\n{persistence}"))?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mosquitto (apt-get install mosquitto; scripts/setup.sh does)")?;
        let proc = Proc(child);
        wait_for_port(port, Duration::from_secs(10))?;
        Ok(Mosquitto { port, proc: Some(proc), dir, persistent })
    }

    /// Stops the broker cleanly (SIGTERM: a persistent broker saves its sessions) and waits for it.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut proc) = self.proc.take() else { return Ok(()) };
        let status = Command::new("kill").args(["-TERM", &proc.0.id().to_string()]).status()?;
        if !status.success() {
            bail!("kill -TERM mosquitto failed");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while proc.0.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("mosquitto did not stop within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Starts the broker again on the same port (with the saved sessions when persistent).
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir()?);
        let port = self.port;
        *self = Mosquitto::spawn(port, dir, self.persistent)?;
        Ok(())
    }
}

pub struct Camsim {
    /// `rtsp://127.0.0.1:PORT/` (mount names are appended).
    pub base: String,
    _proc: Proc,
}

impl Camsim {
    /// Serves `mounts` (name, file) on a free port; waits for camsim's ready lines.
    pub fn start(mounts: &[(&str, &Path)], looped: bool) -> Result<Camsim> {
        Camsim::start_at("127.0.0.1:0", mounts, looped)
    }

    /// The same on a given `IP:PORT` (to restart a camera where it was).
    pub fn start_at(listen: &str, mounts: &[(&str, &Path)], looped: bool) -> Result<Camsim> {
        let mut cmd = Command::new(binary("camsim"));
        cmd.args(["--listen", listen]);
        if looped {
            cmd.arg("--loop");
        }
        for (name, file) in mounts {
            cmd.arg("--mount").arg(format!("{name}={}", file.display()));
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().context("starting camsim")?;
        let stdout = child.stdout.take().unwrap();
        let proc = Proc(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut base = None;
        for _ in mounts {
            let line = rx.recv_timeout(Duration::from_secs(20)).context("camsim did not report ready")?;
            let url = line.split_whitespace().find(|w| w.starts_with("rtsp://")).context("ready line without URL")?;
            base = Some(url[..url.rfind('/').unwrap() + 1].to_owned());
        }
        Ok(Camsim { base: base.context("no mounts")?, _proc: proc })
    }

    pub fn url(&self, mount: &str) -> String {
        format!("{}{mount}", self.base)
    }
}

/// Config text for an agent publishing to `mqtt_port` with the given `[[camera]]` tables.
pub fn agent_config(mqtt_port: u16, cameras: &str) -> String {
    agent_config_with_outbox(mqtt_port, cameras, Path::new("outbox.sqlite"))
}

/// The same with the agent's outbox at `outbox` (relative: in the agent's directory).
pub fn agent_config_with_outbox(mqtt_port: u16, cameras: &str, outbox: &Path) -> String {
    format!(
        r#"
[agent]
id = "edge-test"
site = "testsite"
model_dir = "{models}"

[runtime]
threads = 2

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
status_interval_s = 2
outbox = "{outbox}"

{cameras}
"#,
        models = model_dir().display(),
        outbox = outbox.display(),
    )
}

pub struct Agent {
    pub proc: Proc,
    pub dir: tempfile::TempDir,
}

impl Agent {
    pub fn start(config: &str) -> Result<Agent> {
        Agent::start_with_env(config, &[])
    }

    /// The same with extra environment variables (e.g. systemd's `NOTIFY_SOCKET`).
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Result<Agent> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, config)?;
        let log = std::fs::File::create(dir.path().join("agent.log"))?;
        let child = Command::new(binary("edge-agent"))
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info,sightline_edge_agent=debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(Agent { proc: Proc(child), dir })
    }

    /// The agent's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Waits for the agent to exit by itself; returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.proc.0.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("agent still running after {timeout:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One received MQTT message.
#[derive(Clone, Debug)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// Collects every message under `sightline/v1/#` (subscribed before anything is published).
pub struct Subscriber {
    rx: mpsc::Receiver<Message>,
    pub seen: Vec<Message>,
    _thread: std::thread::JoinHandle<()>,
}

impl Subscriber {
    pub fn connect(port: u16) -> Result<Subscriber> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Subscriber::connect_with(port, format!("test-sub-{}-{n}", std::process::id()), false)
    }

    /// A subscriber with a persistent session (`clean_session = false`, QoS 1): it reconnects
    /// whenever the connection drops, and a persistent broker queues messages for it meanwhile.
    pub fn connect_persistent(port: u16, client_id: &str) -> Result<Subscriber> {
        Subscriber::connect_with(port, client_id.to_owned(), true)
    }

    fn connect_with(port: u16, client_id: String, persistent: bool) -> Result<Subscriber> {
        use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_clean_session(!persistent);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        opts.set_keep_alive(Duration::from_secs(10));
        let (client, mut conn) = Client::new(opts, 100);
        client.subscribe("sightline/v1/#", QoS::AtLeastOnce)?;
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let _client = client;
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let m = Message { topic: p.topic.clone(), payload: p.payload.to_vec(), retain: p.retain };
                        if tx.send(m).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) if persistent => std::thread::sleep(Duration::from_millis(200)),
                    Err(_) => return,
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).context("no SUBACK from the broker")?;
        Ok(Subscriber { rx, seen: Vec::new(), _thread: thread })
    }

    /// Receives until `done(&all messages so far)` holds, or fails after `timeout`.
    pub fn wait_until(&mut self, timeout: Duration, mut done: impl FnMut(&[Message]) -> bool) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(m) => self.seen.push(m),
                Err(_) => bail!("condition not met within {timeout:?}; {} messages received", self.seen.len()),
            }
        }
        Ok(())
    }

    /// Waits for the test agent's own `offline` status, the last message of a clean stop, received
    /// live (a retained one may be the previous run's).
    pub fn wait_agent_stopped(&mut self, timeout: Duration) -> Result<()> {
        self.wait_until(timeout, |m| {
            m.iter().any(|m| {
                !m.retain
                    && m.topic.ends_with("/agent/edge-test/status")
                    && String::from_utf8_lossy(&m.payload).contains("\"offline\"")
            })
        })
    }

    /// Everything received so far whose topic ends with `/suffix`.
    pub fn on(&self, suffix: &str) -> Vec<&Message> {
        self.seen.iter().filter(|m| m.topic.ends_with(&format!("/{suffix}"))).collect()
    }
}

/// The embedding of the single face in a media image, computed with the project's own face pipeline.
pub fn reference_embedding(name: &str) -> Vec<f32> {
    use sightline_vision::{FacePipeline, Runtime, RuntimeConfig};
    let rt = Runtime::new(&RuntimeConfig { threads: 2, ..Default::default() }).unwrap();
    let mut p = FacePipeline::load(&rt, &model_dir(), "yunet_n_dynamic.onnx").unwrap();
    let faces = p.analyze(&sightline_vision::load_rgb(&media(name)).unwrap()).unwrap();
    assert_eq!(faces.len(), 1, "{name} has one face");
    faces.into_iter().next().unwrap().embedding
}

/// Runs a GStreamer command line (e.g. to transcode test media), failing with its stderr.
pub fn gst_launch(args: &str) -> Result<()> {
    let out = Command::new("gst-launch-1.0").arg("-q").args(args.split_whitespace()).output()?;
    if !out.status.success() {
        bail!("gst-launch-1.0 {args}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
