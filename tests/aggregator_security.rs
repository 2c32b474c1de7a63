//! The aggregator's MQTT connection secured like the edge agent's (the same implementation,
//! `sightline_base::mqtt`), and the embedded broker's users, end to end:
//!
//! - mosquitto with TLS (client certificates required), a password file and no anonymous access:
//!   the aggregator connects with `[mqtt] username/password_file` and `[mqtt.tls]` (paths relative
//!   to its config file) and ingests a sighting a test client publishes; with a wrong password it
//!   logs the refusal, stays alive and retrying, and ingests nothing;
//! - the embedded broker with `[broker] users_file`: a client without credentials (or with a wrong
//!   password) is refused, one with credentials gets its sighting ingested (each login's topic
//!   rights: `broker_trust.rs`).
//!
//! Every wait is bounded and waits on messages or log lines.

use std::path::Path;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use sightline_base::mqtt::{BrokerSecurity, MqttTlsConfig, Secret, SecurityKeys};
use sightline_contract::{Payload, Sighting, Trajectory};
use sightline_tests::*;
use uuid::Uuid;

const SITE: &str =
    "[site]\nid = \"testsite\"\n\n[[camera]]\nid = \"stage\"\nposition = [0.0, 0.0]\nagent = \"edge-1\"\n";
const AGG_USER: &str = "aggregator";
const AGG_PASSWORD: &str = "pw-of-the-aggregator 41c2";
const EDGE_USER: &str = "edge-1";
const EDGE_PASSWORD: &str = "pw-of-the-edge 9d0e";

fn sighting() -> Sighting {
    let face: Vec<f32> = (0..128).map(|i| ((i as f32) * 0.37).sin() * 0.1).collect();
    synthetic_sighting("stage", time::OffsetDateTime::now_utc(), &face)
}

fn topic(s: &Sighting) -> String {
    format!("sightline/v1/{}/{}/sighting", s.site, s.camera)
}

/// MQTT options of a test client secured by the shared implementation (TLS when `tls`).
fn options(port: u16, name: &str, credentials: Option<(&str, &str)>, tls: Option<&MqttTlsConfig>) -> MqttOptions {
    let mut opts = MqttOptions::new(format!("test-{name}-{}", std::process::id()), "127.0.0.1", port);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let keys = SecurityKeys {
        username: credentials.map(|(u, _)| u.to_owned()),
        password: credentials.map(|(_, p)| Secret(p.to_owned())),
        password_file: None,
        tls: tls.cloned(),
    };
    BrokerSecurity::load(keys).unwrap().apply(&mut opts);
    opts
}

/// Connects and publishes `s` with QoS 1: `Ok` once the broker acknowledged it, `Err` with the
/// connection error when the broker refuses the client (no CONNACK, or a refusing one).
fn publish_sighting(opts: MqttOptions, s: &Sighting) -> Result<(), String> {
    let (client, mut conn) = Client::new(opts, 10);
    client.publish(topic(s), QoS::AtLeastOnce, false, s.to_json()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match conn.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => {
                let _ = client.disconnect();
                return Ok(());
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => panic!("neither a PUBACK nor a refusal within 10 s"),
        }
    }
}

/// Waits for the trajectory update the aggregator publishes once `sighting` is stored.
fn wait_placed(sub: &mut Subscriber, sighting: Uuid, agg: &Aggregator) {
    sub.wait_until(Duration::from_secs(20), |m| {
        m.iter().any(|m| {
            m.topic.ends_with("/trajectory") && Trajectory::from_json(&m.payload).is_ok_and(|t| t.sighting == sighting)
        })
    })
    .unwrap_or_else(|e| panic!("{e}\naggregator log:\n{}", agg.log()));
}

/// HTTP status of `GET /api/v1/sightings/{id}` (200 stored, 404 not).
fn stored(agg: &Aggregator, id: Uuid) -> u16 {
    let token = agg.token(&format!("t-{id}"), "integrator").unwrap();
    let url = format!("{}/sightings/{id}?purpose=test", agg.api_url().unwrap());
    http_get_as(&url, Some(&token)).unwrap().0
}

fn assert_alive(agg: &mut Aggregator) {
    assert!(agg.proc.0.try_wait().unwrap().is_none(), "the aggregator exited; log:\n{}", agg.log());
}

/// mosquitto with TLS (client certificates required) and passwords, and the PKI it uses.
struct Secure {
    pki: TestPki,
    broker: Mosquitto,
}

impl Secure {
    fn start() -> Secure {
        let pki = TestPki::generate().unwrap();
        let passwd = pki.dir.path().join("passwd");
        mosquitto_password_file(&passwd, &[(AGG_USER, AGG_PASSWORD), (EDGE_USER, EDGE_PASSWORD)]).unwrap();
        let settings = format!("{}allow_anonymous false\npassword_file {}\n", pki.mosquitto_tls(), passwd.display());
        let broker = Mosquitto::start_with(&settings).unwrap();
        Secure { pki, broker }
    }

    fn tls(&self) -> MqttTlsConfig {
        MqttTlsConfig {
            ca_file: self.pki.ca.clone(),
            client_cert: Some(self.pki.client_cert.clone()),
            client_key: Some(self.pki.client_key.clone()),
            server_name: None,
        }
    }

    /// An aggregator config in `dir` for this broker: the certificates copied under `certs/` and
    /// the password in `aggregator.password`, both named relative to the config file.
    fn aggregator_config(&self, dir: &Path, password: &str) -> String {
        std::fs::create_dir(dir.join("certs")).unwrap();
        for (from, to) in
            [(&self.pki.ca, "ca.pem"), (&self.pki.client_cert, "client.pem"), (&self.pki.client_key, "client.key")]
        {
            std::fs::copy(from, dir.join("certs").join(to)).unwrap();
        }
        std::fs::write(dir.join("aggregator.password"), format!("{password}\n")).unwrap();
        let mqtt = format!(
            "[mqtt]\nhost = \"127.0.0.1\"\nport = {}\nusername = \"{AGG_USER}\"\npassword_file = \"aggregator.password\"\n\
             tls = {{ ca_file = \"certs/ca.pem\", client_cert = \"certs/client.pem\", client_key = \"certs/client.key\" }}\n",
            self.broker.port
        );
        let config = aggregator_config(free_port(), &dir.join("agg.sqlite"), &format!("{mqtt}\n{SITE}"));
        config.replacen("[broker]\n", "[broker]\nembedded = false\n", 1)
    }
}

#[test]
fn aggregator_ingests_from_a_tls_broker_with_a_password() {
    let secure = Secure::start();
    let dir = tempfile::tempdir().unwrap();
    let agg = Aggregator::start_in(dir.path(), &secure.aggregator_config(dir.path(), AGG_PASSWORD), secure.broker.port)
        .unwrap_or_else(|e| panic!("{e}\nbroker log:\n{}", secure.broker.log()));
    let security = ClientSecurity {
        ca: Some(secure.pki.ca.clone()),
        client_cert: Some((secure.pki.client_cert.clone(), secure.pki.client_key.clone())),
        credentials: Some((EDGE_USER.into(), EDGE_PASSWORD.into())),
    };
    let mut sub = Subscriber::connect_secure(secure.broker.port, &security).unwrap();

    let s = sighting();
    let tls = secure.tls();
    publish_sighting(options(secure.broker.port, "edge", Some((EDGE_USER, EDGE_PASSWORD)), Some(&tls)), &s).unwrap();
    wait_placed(&mut sub, s.id, &agg);
    assert_eq!(stored(&agg, s.id), 200, "log:\n{}", agg.log());

    let log = agg.log();
    assert!(log.lines().any(|l| l.contains("MQTT client") && l.contains("tls=true")), "{log}");
    assert!(!log.contains(AGG_PASSWORD), "the password was logged:\n{log}");
    // the broker saw the aggregator's user name on its TLS listener
    let broker_log = secure.broker.log();
    assert!(broker_log.contains(&format!("u'{AGG_USER}'")), "{broker_log}");
}

#[test]
fn a_wrong_password_is_refused_logged_and_retried_and_nothing_is_ingested() {
    let secure = Secure::start();
    let dir = tempfile::tempdir().unwrap();
    let config = secure.aggregator_config(dir.path(), "not-the-password");
    let mut agg = Aggregator::spawn_in(dir.path(), &config, secure.broker.port).unwrap();
    let log = agg
        .wait_log("MQTT broker refused the connection: not authorised", 1, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\nbroker log:\n{}", secure.broker.log()));
    let line = log.lines().find(|l| l.contains("refused the connection")).unwrap();
    assert!(line.contains("ERROR") && line.contains("mqtt.username"), "{line}");

    // an edge publishes meanwhile: accepted by the broker, never by the aggregator
    let s = sighting();
    let tls = secure.tls();
    publish_sighting(options(secure.broker.port, "edge", Some((EDGE_USER, EDGE_PASSWORD)), Some(&tls)), &s).unwrap();
    // the aggregator keeps trying (the broker refuses it again)
    let refusals = |log: &str| log.matches("not authorised").count();
    let before = refusals(&secure.broker.log());
    let deadline = Instant::now() + Duration::from_secs(15);
    while refusals(&secure.broker.log()) <= before {
        assert!(Instant::now() < deadline, "no new attempt in 15 s; broker log:\n{}", secure.broker.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_alive(&mut agg);
    assert_eq!(stored(&agg, s.id), 404);
    let log = agg.log();
    assert!(!log.contains("subscribed: ingesting") && !log.contains(&s.id.to_string()), "{log}");
    assert!(!log.contains("not-the-password"), "the password was logged:\n{log}");
    assert!(secure.broker.log().contains("not authorised"), "{}", secure.broker.log());
}

#[test]
fn the_embedded_broker_refuses_clients_without_valid_credentials() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("users"),
        format!("# embedded broker users\n{AGG_USER}:{AGG_PASSWORD}\n\n{EDGE_USER}:{EDGE_PASSWORD}\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("aggregator.password"), format!("{AGG_PASSWORD}\n")).unwrap();
    let port = free_port();
    let mqtt = format!("[mqtt]\nusername = \"{AGG_USER}\"\npassword_file = \"aggregator.password\"\n");
    let config = aggregator_config(port, &dir.path().join("agg.sqlite"), &format!("{mqtt}\n{SITE}")).replacen(
        "[broker]\n",
        "[broker]\nusers_file = \"users\"\n",
        1,
    );
    // its own client logs in (it subscribes)
    let mut agg = Aggregator::start_in(dir.path(), &config, port).unwrap();
    assert!(agg.log().contains("clients must log in"), "{}", agg.log());

    // no credentials, a wrong password, an unknown user: refused before anything is accepted
    // (the gate refuses a missing or unknown login with a CONNACK; rumqttd closes the connection
    // of a wrong password instead of sending a refusing CONNACK). The agent's client id: its login.
    let edge = |name, credentials| {
        let mut opts = options(port, name, credentials, None);
        opts.set_client_id(EDGE_USER.into());
        opts
    };
    let refused = sighting();
    for (name, credentials) in
        [("anonymous", None), ("wrong", Some((EDGE_USER, "guess"))), ("unknown", Some(("mallory", EDGE_PASSWORD)))]
    {
        let Err(e) = publish_sighting(edge(name, credentials), &refused) else {
            panic!("{name}: the embedded broker accepted the client; log:\n{}", agg.log());
        };
        eprintln!("{name}: {e}");
    }
    agg.wait_log("InvalidAuth", 1, Duration::from_secs(10)).unwrap();
    let log = agg.wait_log("embedded MQTT broker refused a client", 2, Duration::from_secs(10)).unwrap();
    assert!(log.contains("reason=no_login") && log.contains("reason=unknown_login"), "{log}");
    assert_alive(&mut agg);

    let s = sighting();
    publish_sighting(edge("edge", Some((EDGE_USER, EDGE_PASSWORD))), &s).unwrap();
    let token = agg.token("t-embedded", "integrator").unwrap();
    let url = format!("{}/sightings/{}?purpose=test", agg.api_url().unwrap(), s.id);
    eventually("the sighting stored", Duration::from_secs(20), || http_get_as(&url, Some(&token)).unwrap().0 == 200)
        .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", agg.log()));
    assert_eq!(stored(&agg, refused.id), 404);
    let log = format!("{log}{}", agg.log());
    for password in [AGG_PASSWORD, EDGE_PASSWORD, "guess"] {
        assert!(!log.contains(password), "a password was logged:\n{log}");
    }
}

#[test]
fn check_config_names_the_key_of_a_bad_users_file_or_login() {
    let dir = tempfile::tempdir().unwrap();
    let check = |broker: &str, mqtt: &str| -> String {
        let config = aggregator_config(free_port(), &dir.path().join("agg.sqlite"), &format!("{mqtt}\n{SITE}"))
            .replacen("[broker]\n", &format!("[broker]\n{broker}\n"), 1);
        let path = dir.path().join("check.toml");
        std::fs::write(&path, config).unwrap();
        let out = std::process::Command::new(binary("aggregator")).arg("check-config").arg(&path).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    std::fs::write(dir.path().join("users"), "aggregator:right\nbroken line\n").unwrap();
    let e = check("users_file = \"users\"", "");
    assert!(e.contains("broker.users_file") && e.contains("line 2") && !e.contains("right"), "{e}");
    std::fs::write(dir.path().join("users"), "aggregator:right\n").unwrap();
    let e = check("users_file = \"users\"", "");
    assert!(e.contains("mqtt.username"), "{e}");
    let e = check("users_file = \"users\"", "[mqtt]\nusername = \"aggregator\"\npassword = \"wrong\"");
    assert!(e.contains("mqtt.password") && !e.contains("right") && !e.contains("wrong"), "{e}");
    let e = check("", "[mqtt]\ntls = { ca_file = \"certs/missing.pem\" }");
    assert!(
        e.contains("mqtt.tls.ca_file") && e.contains(&dir.path().join("certs/missing.pem").display().to_string()),
        "{e}"
    );
}
