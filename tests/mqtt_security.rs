//! TLS and authentication towards the broker, end to end: a private PKI made with the `openssl`
//! CLI at test time, mosquitto listening on 127.0.0.1 with TLS (`require_certificate true`), a
//! password file and no anonymous access, and the real `edge-agent` playing the face clip.
//!
//! - the right CA, client certificate and password: the agent's retained `online` status and a
//!   sighting reach a subscriber that authenticates the same way;
//! - a wrong password: the broker refuses, the agent says so, keeps running and retrying, and
//!   keeps its events in the outbox;
//! - a CA that did not sign the broker, a `server_name` the certificate is not for, no client
//!   certificate: the agent logs the TLS error and keeps retrying;
//! - `edge-agent check-config` names the key and the file of a missing CA file.
//!
//! Every wait is bounded and waits on messages or log lines.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sightline_tests::*;

const USER: &str = "edge-test";
const PASSWORD: &str = "pw-of-the-edge 7f3a";
const SUB_USER: &str = "recorder";
const SUB_PASSWORD: &str = "pw-of-the-recorder";

/// A TLS broker requiring client certificates and passwords, and the PKI it uses.
struct Secure {
    pki: TestPki,
    broker: Mosquitto,
}

impl Secure {
    fn start() -> Secure {
        let pki = TestPki::generate().unwrap();
        let passwd = pki.dir.path().join("passwd");
        mosquitto_password_file(&passwd, &[(USER, PASSWORD), (SUB_USER, SUB_PASSWORD)]).unwrap();
        let settings = format!("{}allow_anonymous false\npassword_file {}\n", pki.mosquitto_tls(), passwd.display());
        let broker = Mosquitto::start_with(&settings).unwrap();
        Secure { pki, broker }
    }

    /// A subscriber with the client certificate and its own user.
    fn subscriber(&self) -> Subscriber {
        let security = ClientSecurity {
            ca: Some(self.pki.ca.clone()),
            client_cert: Some((self.pki.client_cert.clone(), self.pki.client_key.clone())),
            credentials: Some((SUB_USER.into(), SUB_PASSWORD.into())),
        };
        Subscriber::connect_secure(self.broker.port, &security)
            .unwrap_or_else(|e| panic!("{e}; broker log:\n{}", self.broker.log()))
    }

    /// A password file holding `password` (and a newline, like `echo` writes it).
    fn password_file(&self, name: &str, password: &str) -> String {
        let path = self.pki.dir.path().join(name);
        std::fs::write(&path, format!("{password}\n")).unwrap();
        path.display().to_string()
    }

    /// `[mqtt]` keys: user, password file, and `tls` with `ca`, the client certificate unless
    /// `client_cert` is false, and `extra` TLS keys.
    fn mqtt_keys(&self, password_file: &str, ca: &Path, client_cert: bool, extra: &str) -> String {
        let client = if client_cert {
            format!(
                ", client_cert = \"{}\", client_key = \"{}\"",
                self.pki.client_cert.display(),
                self.pki.client_key.display()
            )
        } else {
            String::new()
        };
        format!(
            "username = \"{USER}\"\npassword_file = \"{password_file}\"\ntls = {{ ca_file = \"{}\"{client}{extra} }}\n",
            ca.display()
        )
    }
}

/// The face clip, looping, analysed at `fps`.
fn face_camera(fps: f64) -> String {
    format!(
        "[[camera]]\nid = \"stage\"\nfile = \"{}\"\nloop = true\nanalysis_fps = {fps}\n",
        media("short_hamilton_clip.mp4").display()
    )
}

fn agent_online(m: &Message) -> bool {
    m.topic.ends_with("/agent/edge-test/status") && String::from_utf8_lossy(&m.payload).contains("\"online\"")
}

/// Lines of the agent's log reporting a failed connection attempt.
fn attempts(log: &str) -> usize {
    log.lines().filter(|l| l.contains("MQTT connection attempt failed")).count()
}

/// Waits until the agent has tried to connect at least `n` times.
fn wait_attempts(agent: &Agent, n: usize, timeout: Duration) -> String {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let log = agent.log();
        if attempts(&log) >= n {
            return log;
        }
        assert!(std::time::Instant::now() < deadline, "fewer than {n} connection attempts in {timeout:?}; log:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_alive(agent: &mut Agent) {
    assert!(agent.proc.0.try_wait().unwrap().is_none(), "the agent exited; log:\n{}", agent.log());
}

#[test]
fn tls_client_certificate_and_password_deliver_events() {
    let secure = Secure::start();
    // the broker really demands TLS: a plain-TCP client gets nowhere
    assert!(Subscriber::connect(secure.broker.port).is_err(), "plain MQTT accepted by the TLS listener");
    let mut sub = secure.subscriber();

    let pw = secure.password_file("edge.password", PASSWORD);
    let keys = secure.mqtt_keys(&pw, &secure.pki.ca, true, "");
    let mut agent = Agent::start(&agent_config_with_mqtt(secure.broker.port, &keys, &face_camera(5.0))).unwrap();

    sub.wait_until(Duration::from_secs(90), |m| {
        m.iter().any(agent_online) && m.iter().any(|m| m.topic.ends_with("/stage/sighting"))
    })
    .unwrap_or_else(|e| panic!("{e}; agent log:\n{}\nbroker log:\n{}", agent.log(), secure.broker.log()));

    let log = agent.log();
    assert!(log.lines().any(|l| l.contains("MQTT connected") && l.contains("tls=true")), "{log}");
    assert!(!log.contains(PASSWORD), "the password was logged:\n{log}");
    // the broker saw the agent's user name on the TLS listener
    let broker_log = secure.broker.log();
    assert!(broker_log.contains(&format!("u'{USER}'")), "{broker_log}");
    assert_alive(&mut agent);
}

#[test]
fn a_wrong_password_is_refused_logged_retried_and_kept_in_the_outbox() {
    let secure = Secure::start();
    let mut sub = secure.subscriber();
    let pw = secure.password_file("wrong.password", "not-the-password");
    let keys = secure.mqtt_keys(&pw, &secure.pki.ca, true, "");
    let mut agent = Agent::start(&agent_config_with_mqtt(secure.broker.port, &keys, &face_camera(5.0))).unwrap();

    agent
        .wait_log("MQTT broker refused the connection: not authorised", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\nbroker log:\n{}", secure.broker.log()));
    // events keep being produced and stored while the broker refuses us
    let log = agent.wait_log("topic=sightline/v1/testsite/stage/sighting", Duration::from_secs(90)).unwrap();
    let before = attempts(&log);
    // ... and the agent keeps trying
    wait_attempts(&agent, before + 1, Duration::from_secs(60));
    assert_alive(&mut agent);

    let log = agent.log();
    assert!(!log.contains("MQTT connected"), "{log}");
    assert!(!log.contains("not-the-password"), "the password was logged:\n{log}");
    // nothing reached the broker: the subscriber (connected before the agent started) got nothing
    let _ = sub.wait_until(Duration::from_millis(500), |m| !m.is_empty());
    assert!(sub.seen.is_empty(), "{:?}", sub.seen.iter().map(|m| &m.topic).collect::<Vec<_>>());
    assert!(secure.broker.log().contains("not authorised"), "{}", secure.broker.log());

    // a clean stop keeps what was never acknowledged for the next start
    agent.signal("TERM").unwrap();
    agent.wait_exit(Duration::from_secs(40)).unwrap();
    let log = agent.log();
    assert!(log.contains("outbox not empty at shutdown: kept for the next start"), "{log}");
}

#[test]
fn tls_failures_are_logged_and_retried() {
    let secure = Secure::start();
    let pw = secure.password_file("edge.password", PASSWORD);
    let cases = [
        // trusts a CA that did not sign the broker's certificate
        ("UnknownIssuer", secure.mqtt_keys(&pw, &secure.pki.other_ca, true, "")),
        // the broker's certificate is for 127.0.0.1 and localhost only
        (
            "not valid for name \"elsewhere.test\"",
            secure.mqtt_keys(&pw, &secure.pki.ca, true, ", server_name = \"elsewhere.test\""),
        ),
        // no client certificate: the broker ends the handshake
        ("alert", secure.mqtt_keys(&pw, &secure.pki.ca, false, "")),
    ];
    let mut agents: Vec<(&str, Agent)> = cases
        .iter()
        .map(|(want, keys)| {
            (*want, Agent::start(&agent_config_with_mqtt(secure.broker.port, keys, &face_camera(2.0))).unwrap())
        })
        .collect();
    for (want, agent) in agents.iter_mut() {
        let want: &str = want;
        // logged as an error (each attempt also at debug level)
        let log = agent.wait_log("TLS error: ", Duration::from_secs(90)).unwrap();
        let line = log.lines().find(|l| l.contains(" ERROR ") && l.contains("TLS error: ")).unwrap_or_default();
        assert!(line.contains(want), "{want} not in {line:?}\nlog:\n{log}");
        eprintln!("{want}: {line}");
        wait_attempts(agent, 2, Duration::from_secs(60));
        assert_alive(agent);
        assert!(!agent.log().contains("MQTT connected"), "{}", agent.log());
    }
}

#[test]
fn check_config_names_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    let text = agent_config_with_mqtt(1883, "tls = { ca_file = \"certs/missing-ca.pem\" }", &face_camera(2.0));
    std::fs::write(&config, text).unwrap();
    let out = Command::new(binary("edge-agent")).arg("check-config").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    // relative to the config file's directory
    let missing = dir.path().join("certs/missing-ca.pem");
    assert!(stderr.contains("mqtt.tls.ca_file") && stderr.contains(&missing.display().to_string()), "{stderr}");
}
