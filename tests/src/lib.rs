//! Harness for sightline's end-to-end tests: real processes on 127.0.0.1 with bounded waits.
//!
//! - [`Mosquitto`]: Debian's broker on a free port, stopped on drop;
//! - [`Camsim`]: the project's RTSP camera simulator serving real media;
//! - [`Agent`]: the `edge-agent` binary with a generated config;
//! - [`pg::PgCluster`]: a throwaway PostgreSQL cluster, a fresh database per test;
//! - [`Subscriber`]: an MQTT client collecting everything under `sightline/v1/#`;
//! - [`HostileRtsp`]: a misbehaving RTSP server; [`Camsim::start_logged`] for camsim's
//!   fault injection (`--corrupt`, `--scale`); see [`hostile`].
//!
//! Binaries are taken from the cargo target directory this test runs from (`cargo build --bins` first).

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod browser;
pub mod center;
pub mod cluster;
pub mod hostile;
pub mod miranda;
pub mod pg;
pub mod sim;
pub mod trust;
pub use center::{
    Aggregator, FIVE_SITES, TWO_CAMERA_SITE, aggregator_config, publish, synthetic_face, synthetic_sighting,
};
pub use hostile::{HostileRtsp, Hostility};
pub use miranda::{MirandaWalk, file_camera, miranda_site, miranda_walks};

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

/// Checks `done` every 100 ms until it holds; an error naming `what` after `timeout`.
pub fn eventually(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            bail!("{what}: not within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
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
    /// Listener settings replacing `allow_anonymous true` ([`start_with`](Self::start_with)).
    settings: Option<String>,
}

impl Mosquitto {
    /// A broker on a free port, without persistence.
    pub fn start() -> Result<Mosquitto> {
        Mosquitto::start_on(free_port())
    }

    /// A broker on `port` (e.g. where a previous one ran), without persistence.
    pub fn start_on(port: u16) -> Result<Mosquitto> {
        Mosquitto::spawn(port, tempfile::tempdir()?, false, None)
    }

    /// A broker on a free port that saves its sessions (persistent subscriptions and their
    /// queued QoS 1 messages) when [`stop`](Self::stop)ped, and restores them on [`restart`](Self::restart).
    pub fn start_persistent() -> Result<Mosquitto> {
        Mosquitto::spawn(free_port(), tempfile::tempdir()?, true, None)
    }

    /// A broker on a free port, without persistence, whose listener takes `settings` (mosquitto.conf
    /// lines, e.g. TLS files, `require_certificate true`, `allow_anonymous false`, `password_file`)
    /// instead of `allow_anonymous true`. Its log is kept ([`log`](Self::log)). Started as root,
    /// mosquitto reads these files after dropping to its own user: they must be world-readable.
    pub fn start_with(settings: &str) -> Result<Mosquitto> {
        Mosquitto::spawn(free_port(), tempfile::tempdir()?, false, Some(settings.to_owned()))
    }

    /// The broker's log so far (brokers started with [`start_with`](Self::start_with)).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    fn spawn(port: u16, dir: tempfile::TempDir, persistent: bool, settings: Option<String>) -> Result<Mosquitto> {
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
        let listener = settings.as_deref().unwrap_or("allow_anonymous true\n");
        std::fs::write(&conf, format!("listener {port} 127.0.0.1\n{listener}\n{persistence}"))?;
        let log = match settings {
            Some(_) => Stdio::from(std::fs::File::create(dir.path().join("mosquitto.log"))?),
            None => Stdio::null(),
        };
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting mosquitto (apt-get install mosquitto; scripts/setup.sh does)")?;
        let proc = Proc(child);
        wait_for_port(port, Duration::from_secs(10))?;
        Ok(Mosquitto { port, proc: Some(proc), dir, persistent, settings })
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
        *self = Mosquitto::spawn(port, dir, self.persistent, self.settings.clone())?;
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
        Camsim::launch(listen, mounts, looped, &[], None)
    }

    /// Like [`Camsim::start_at`] with `extra` camsim arguments (e.g. `--scale 960x540`,
    /// `--corrupt 0.1 --seed 7`); camsim's stderr, at `RUST_LOG=camsim=debug`, goes to `log`.
    pub fn start_logged(
        listen: &str,
        mounts: &[(&str, &Path)],
        looped: bool,
        extra: &[&str],
        log: &Path,
    ) -> Result<Camsim> {
        Camsim::launch(listen, mounts, looped, extra, Some(log))
    }

    fn launch(
        listen: &str,
        mounts: &[(&str, &Path)],
        looped: bool,
        extra: &[&str],
        log: Option<&Path>,
    ) -> Result<Camsim> {
        let mut cmd = Command::new(binary("camsim"));
        cmd.args(["--listen", listen]).args(extra);
        if looped {
            cmd.arg("--loop");
        }
        for (name, file) in mounts {
            cmd.arg("--mount").arg(format!("{name}={}", file.display()));
        }
        let stderr = match log {
            Some(log) => {
                cmd.env("RUST_LOG", "camsim=debug");
                Stdio::from(std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?)
            }
            None => Stdio::inherit(),
        };
        let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().context("starting camsim")?;
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
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut base = None;
        for _ in mounts {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let log = log.and_then(|l| std::fs::read_to_string(l).ok()).unwrap_or_default();
                bail!("camsim did not report ready; its log:\n{log}");
            };
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

[metrics]
listen = "127.0.0.1:0"

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
            .env("RUST_LOG", "info,ort=warn,sightline_edge_agent=debug")
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

    /// Sends a signal (`"HUP"`, `"TERM"`, …) to the agent.
    pub fn signal(&self, name: &str) -> Result<()> {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.proc.0.id().to_string()).status()?;
        if !status.success() {
            bail!("kill -{name} failed");
        }
        Ok(())
    }

    /// The config file the agent was started with (rewrite it, then send `HUP`).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("agent.toml")
    }

    /// Waits until the agent's log contains `needle`; returns the log.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return Ok(log);
            }
            if Instant::now() > deadline {
                bail!("{needle:?} not logged within {timeout:?}; log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Base URL of the agent's metrics endpoint (`http://127.0.0.1:port`), once it listens.
    pub fn metrics_url(&self) -> Result<String> {
        let log = self.wait_log("metrics and health endpoint listening", Duration::from_secs(60))?;
        let line = log.lines().find(|l| l.contains("metrics and health endpoint listening")).unwrap_or_default();
        let url = line.split("url=").nth(1).and_then(|u| u.split_whitespace().next());
        url.map(str::to_owned).with_context(|| format!("no url= in {line:?}"))
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
        Subscriber::connect_with(port, format!("test-sub-{}-{n}", std::process::id()), false, None)
    }

    /// The same over TLS and/or with credentials.
    pub fn connect_secure(port: u16, security: &ClientSecurity) -> Result<Subscriber> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Subscriber::connect_with(port, format!("test-sub-secure-{}-{n}", std::process::id()), false, Some(security))
    }

    /// A subscriber with a persistent session (`clean_session = false`, QoS 1): it reconnects
    /// whenever the connection drops, and a persistent broker queues messages for it meanwhile.
    pub fn connect_persistent(port: u16, client_id: &str) -> Result<Subscriber> {
        Subscriber::connect_with(port, client_id.to_owned(), true, None)
    }

    fn connect_with(
        port: u16,
        client_id: String,
        persistent: bool,
        security: Option<&ClientSecurity>,
    ) -> Result<Subscriber> {
        use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_clean_session(!persistent);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        opts.set_keep_alive(Duration::from_secs(10));
        if let Some(security) = security {
            security.apply(&mut opts)?;
        }
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

/// `GET url` over plain HTTP/1.1 (the agent's metrics endpoint): status code and body.
pub fn http_get(url: &str) -> Result<(u16, String)> {
    http_get_as(url, None)
}

/// `GET url` with an optional bearer token.
pub fn http_get_as(url: &str, bearer: Option<&str>) -> Result<(u16, String)> {
    http_request("GET", url, bearer, None)
}

/// `METHOD url` with an optional bearer token and JSON body: status code and body.
pub fn http_request(method: &str, url: &str, bearer: Option<&str>, json: Option<&str>) -> Result<(u16, String)> {
    use std::io::Read;
    let mut stream = http_open(method, url, bearer, json)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8(response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("no HTTP header end")?;
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no HTTP status")?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    Ok((code, if chunked { dechunk(body)? } else { body.to_owned() }))
}

/// Connects and sends the request; returns the stream (10 s read timeout).
fn http_open(method: &str, url: &str, bearer: Option<&str>, json: Option<&str>) -> Result<std::net::TcpStream> {
    use std::io::Write;
    let rest = url.strip_prefix("http://").context("http:// URL expected")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let body = json.map(|b| format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}", b.len()));
    let body = body.unwrap_or_else(|| "\r\n".into());
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n{body}")?;
    Ok(stream)
}

/// A Server-Sent Events stream (`GET /api/v1/events`), read event by event.
pub struct EventStream {
    stream: std::net::TcpStream,
    /// Raw bytes not yet de-chunked.
    raw: Vec<u8>,
    /// De-chunked text not yet parsed into events.
    text: String,
}

/// One SSE event: its `event:` name, `id:` and `data:`.
#[derive(Clone, Debug)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl EventStream {
    /// Opens the stream; `Err` with the status and body when it is refused.
    pub fn open(url: &str, bearer: Option<&str>) -> Result<EventStream> {
        use std::io::Read;
        let mut stream = http_open("GET", url, bearer, None)?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let end = loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let n = stream.read(&mut buf)?;
            if n == 0 {
                bail!("connection closed before the headers: {}", String::from_utf8_lossy(&raw));
            }
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let code: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no HTTP status")?;
        let rest = raw[end + 4..].to_vec();
        if code != 200 {
            let mut body = rest;
            let _ = stream.read_to_end(&mut body);
            bail!("HTTP {code}: {}", String::from_utf8_lossy(&body));
        }
        Ok(EventStream { stream, raw: rest, text: String::new() })
    }

    /// The next event (comments skipped), waiting at most `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Result<SseEvent> {
        use std::io::Read;
        let deadline = Instant::now() + timeout;
        loop {
            self.dechunk();
            while let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let mut e = SseEvent { event: "message".into(), id: None, data: String::new() };
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        e.event = v.trim().into();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("id:") {
                        e.id = Some(v.trim().into());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !e.data.is_empty() {
                            e.data.push('\n');
                        }
                        e.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        any = true;
                    }
                }
                if any {
                    return Ok(e);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("no event within {timeout:?}");
            }
            self.stream.set_read_timeout(Some(left.max(Duration::from_millis(10))))?;
            let mut buf = [0u8; 8192];
            match self.stream.read(&mut buf) {
                Ok(0) => bail!("the event stream ended"),
                Ok(n) => self.raw.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Skips events until one named `event` satisfies `pred`; returns it.
    pub fn wait_for(&mut self, event: &str, timeout: Duration, pred: impl Fn(&SseEvent) -> bool) -> Result<SseEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let e = self
                .next(deadline.saturating_duration_since(Instant::now()))
                .with_context(|| format!("waiting for a matching {event:?} event"))?;
            if e.event == event && pred(&e) {
                return Ok(e);
            }
        }
    }

    /// Moves complete chunks of the chunked body into `text`.
    fn dechunk(&mut self) {
        loop {
            let Some(eol) = self.raw.windows(2).position(|w| w == b"\r\n") else { return };
            let size =
                std::str::from_utf8(&self.raw[..eol]).ok().and_then(|h| usize::from_str_radix(h.trim(), 16).ok());
            let Some(size) = size else { return };
            if self.raw.len() < eol + 2 + size + 2 {
                return;
            }
            self.text.push_str(&String::from_utf8_lossy(&self.raw[eol + 2..eol + 2 + size]));
            self.raw.drain(..eol + 2 + size + 2);
        }
    }
}

fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("bad chunk")?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).context("short chunk")?);
        body = rest.get(size + 2..).context("short chunk")?;
    }
}

/// The value of one sample in a Prometheus text exposition, e.g.
/// `sample(text, r#"sightline_camera_frames_analyzed_total{camera="stage"}"#)`.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split_whitespace().next()?.parse().ok())
}

/// Polls the agent's `/metrics` at `base` until `series` exceeds `above`; returns its value.
pub fn wait_metric(base: &str, series: &str, above: f64, timeout: Duration) -> Result<f64> {
    let deadline = Instant::now() + timeout;
    loop {
        let (code, text) = http_get(&format!("{base}/metrics"))?;
        if code != 200 {
            bail!("GET {base}/metrics: HTTP {code}");
        }
        match sample(&text, series) {
            Some(v) if v > above => return Ok(v),
            last if Instant::now() > deadline => {
                bail!("{series} = {last:?}, not above {above} in {timeout:?}:\n{text}")
            }
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
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

/// TLS and credentials of a test MQTT client ([`Subscriber::connect_secure`]).
#[derive(Clone, Debug, Default)]
pub struct ClientSecurity {
    /// CA the broker's certificate must chain to: connect over TLS (rustls, *ring*).
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// User name and password.
    pub credentials: Option<(String, String)>,
}

impl ClientSecurity {
    fn apply(&self, opts: &mut rumqttc::MqttOptions) -> Result<()> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        if let Some((user, password)) = &self.credentials {
            opts.set_credentials(user.clone(), password.clone());
        }
        let Some(ca) = &self.ca else { return Ok(()) };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).with_context(|| ca.display().to_string())? {
            roots.add(cert?)?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match &self.client_cert {
            Some((cert, key)) => {
                let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
                builder.with_client_auth_cert(certs, PrivateKeyDer::from_pem_file(key)?)?
            }
            None => builder.with_no_client_auth(),
        };
        opts.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(
            std::sync::Arc::new(config),
        )));
        Ok(())
    }
}

/// A private PKI made with the `openssl` CLI (EC P-256 keys, valid 2 days): a CA, a server
/// certificate for `127.0.0.1` and `localhost`, a client certificate, and an unrelated CA. The
/// files are world-readable (mosquitto reads them after dropping root).
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here (a client trusting only it rejects the server).
    pub other_ca: PathBuf,
}

impl TestPki {
    pub fn generate() -> Result<TestPki> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let openssl = |args: &[&str]| -> Result<()> {
            let out = Command::new("openssl").args(args).current_dir(d).output().context("running openssl")?;
            if !out.status.success() {
                bail!("openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
            }
            Ok(())
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        for ca in ["ca", "other-ca"] {
            let (key, pem, subj) = (format!("{ca}.key"), format!("{ca}.pem"), format!("/CN=sightline test {ca}"));
            let mut args = vec!["req", "-x509", "-days", "2", "-keyout", &key, "-out", &pem, "-subj", &subj];
            args.extend(ec);
            args.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"]);
            openssl(&args)?;
        }
        let leaves = [
            ("server", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
            ("client", "/CN=edge-test", "extendedKeyUsage=clientAuth\n"),
        ];
        for (name, subj, ext) in leaves {
            let (key, csr, pem, extfile) =
                (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
            std::fs::write(
                d.join(&extfile),
                format!("{ext}basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"),
            )?;
            let mut args = vec!["req", "-keyout", &key, "-out", &csr, "-subj", subj];
            args.extend(ec);
            openssl(&args)?;
            let sign = format!(
                "x509 -req -days 2 -in {csr} -CA ca.pem -CAkey ca.key -CAcreateserial -out {pem} -extfile {extfile}"
            );
            openssl(&sign.split_whitespace().collect::<Vec<_>>())?;
        }
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        for f in std::fs::read_dir(d)? {
            std::fs::set_permissions(f?.path(), std::fs::Permissions::from_mode(0o644))?;
        }
        Ok(TestPki {
            ca: d.join("ca.pem"),
            server_cert: d.join("server.pem"),
            server_key: d.join("server.key"),
            client_cert: d.join("client.pem"),
            client_key: d.join("client.key"),
            other_ca: d.join("other-ca.pem"),
            dir,
        })
    }

    /// mosquitto listener settings: TLS with this PKI's server certificate, clients must present
    /// a certificate signed by its CA.
    pub fn mosquitto_tls(&self) -> String {
        format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            self.ca.display(),
            self.server_cert.display(),
            self.server_key.display()
        )
    }
}

/// Writes a mosquitto password file (`mosquitto_passwd -b`) with `users` (name, password), world-readable.
pub fn mosquitto_password_file(path: &Path, users: &[(&str, &str)]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, "")?;
    for (user, password) in users {
        let out = Command::new("mosquitto_passwd").arg("-b").arg(path).args([user, password]).output()?;
        if !out.status.success() {
            bail!("mosquitto_passwd: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// [`agent_config`] with `keys` (TOML lines, e.g. `username = "…"` or `tls = { ca_file = "…" }`)
/// added to its `[mqtt]` table.
pub fn agent_config_with_mqtt(mqtt_port: u16, keys: &str, cameras: &str) -> String {
    let config = agent_config(mqtt_port, cameras);
    assert!(config.contains("\n[mqtt]\n"), "agent_config has an [mqtt] table");
    config.replacen("\n[mqtt]\n", &format!("\n[mqtt]\n{keys}\n"), 1)
}
