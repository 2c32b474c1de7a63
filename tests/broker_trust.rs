//! Who may speak for a camera, end to end: the real aggregator binary with its embedded broker,
//! `[broker] users_file` with the aggregator's login, two agent logins and an observer, and a
//! raw MQTT client as the attacker. Each attack of issue 18 is replayed:
//!
//! - agent A publishing a sighting on agent B's camera (or B's status, or the aggregator's
//!   trajectory topic): the connection is closed, the refusal counted, nothing stored;
//! - agent A subscribing to `#` or to every sighting: refused;
//! - agent A taking the aggregator's client id: refused with CONNACK 2 while agent B publishes
//!   20 sightings, and every one the broker acknowledged is stored (the aggregator never lost
//!   its connection);
//! - agent A registering a Will on B's status topic: refused; its own Will is delivered;
//! - valid traffic from A and B, and an observer's reading of crowd topics, go through.
//!
//! The same publish and subscribe attacks against mosquitto configured with the ACL file
//! `aggregator broker-acl --format mosquitto` writes: mosquitto acknowledges and drops a denied
//! publish, so nothing is stored while a legitimate publish around it is.
//!
//! Every wait is bounded and waits on the API, the metrics or a broker's answer.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use rumqttc::{ConnectReturnCode, ConnectionError, SubscribeReasonCode};
use sightline_contract::{AgentState, AgentStatus, Alert, AlertKind, AlertState, Payload, Severity, Sighting, topic};
use sightline_tests::trust::{Answer, MqttClient};
use sightline_tests::*;
use uuid::Uuid;

const SITE: &str = "testsite";
const AGGREGATOR: (&str, &str) = ("aggregator", "pw-of-the-aggregator 5b1e");
const EDGE_A: (&str, &str) = ("edge-a", "pw-of-edge-a 31f0");
const EDGE_B: (&str, &str) = ("edge-b", "pw-of-edge-b 8c2d");
const WATCHER: (&str, &str) = ("watcher", "pw-of-the-watcher 77aa");
/// Camera `north` is agent A's, `south` agent B's.
const CAMERAS: &str = "[site]\nid = \"testsite\"\n\n\
    [[camera]]\nid = \"north\"\nposition = [0.0, 0.0]\nagent = \"edge-a\"\n\n\
    [[camera]]\nid = \"south\"\nposition = [40.0, 0.0]\nagent = \"edge-b\"\n";

fn sighting(camera: &str) -> Sighting {
    // a distinct face per call, with the norm of a real dlib embedding (about 1.4: ingest
    // refuses norms outside the model's range)
    let seed = (Uuid::new_v4().as_u128() % 10_000) as f32 * 0.01;
    let face: Vec<f32> = (0..128).map(|i| ((i as f32) * 0.37 + seed).sin()).collect();
    let norm = face.iter().map(|v| v * v).sum::<f32>().sqrt();
    let face: Vec<f32> = face.iter().map(|v| v * 1.4 / norm).collect();
    synthetic_sighting(camera, time::OffsetDateTime::now_utc(), &face)
}

fn sighting_topic(s: &Sighting) -> String {
    topic::sighting(&s.site, &s.camera)
}

fn users_file(dir: &Path) {
    let users: String = [AGGREGATOR, EDGE_A, EDGE_B, WATCHER].iter().map(|(u, p)| format!("{u}:{p}\n")).collect();
    std::fs::write(dir.join("users"), users).unwrap();
    std::fs::write(dir.join("aggregator.password"), format!("{}\n", AGGREGATOR.1)).unwrap();
}

fn agent_client_id(agent: (&str, &str)) -> String {
    format!("sightline-edge-{}", agent.0)
}

/// Connects an agent with its default client id.
fn agent(port: u16, who: (&str, &str)) -> MqttClient {
    MqttClient::connect(port, &agent_client_id(who), Some(who), None)
        .unwrap_or_else(|e| panic!("{} refused: {e:?}", who.0))
}

/// The running aggregator and an integrator token for its API.
struct Center {
    _dir: tempfile::TempDir,
    agg: Aggregator,
    base: String,
    token: String,
}

impl Center {
    /// The aggregator, its embedded broker behind the gate with the four logins.
    fn start() -> Center {
        let dir = tempfile::tempdir().unwrap();
        users_file(dir.path());
        let port = free_port();
        let mqtt = format!("[mqtt]\nusername = \"{}\"\npassword_file = \"aggregator.password\"\n", AGGREGATOR.0);
        let config = aggregator_config(port, &dir.path().join("agg.sqlite"), &format!("{mqtt}\n{CAMERAS}")).replacen(
            "[broker]\n",
            "[broker]\nusers_file = \"users\"\nobservers = [\"watcher\"]\n",
            1,
        );
        let agg = Aggregator::start_in(dir.path(), &config, port).unwrap();
        let base = agg.api_url().unwrap().trim_end_matches("/api/v1").to_owned();
        let token = agg.token("trust", "integrator").unwrap();
        Center { _dir: dir, agg, base, token }
    }

    fn port(&self) -> u16 {
        self.agg.port
    }

    /// HTTP status of `GET /api/v1/sightings/{id}` (200 stored, 404 not).
    fn stored(&self, id: Uuid) -> u16 {
        let url = format!("{}/api/v1/sightings/{id}?purpose=test", self.base);
        http_get_as(&url, Some(&self.token)).unwrap().0
    }

    fn wait_stored(&self, ids: &[Uuid]) {
        eventually("sightings stored", Duration::from_secs(20), || ids.iter().all(|id| self.stored(*id) == 200))
            .unwrap_or_else(|e| {
                let missing: Vec<_> = ids.iter().filter(|id| self.stored(**id) != 200).collect();
                panic!("{e}: missing {missing:?}\nlog:\n{}", self.agg.log())
            });
    }

    fn metric(&self, series: &str) -> f64 {
        let (_, text) = http_get(&format!("{}/metrics", self.base)).unwrap();
        sample(&text, series).unwrap_or(0.0)
    }

    fn refused(&self, reason: &str) -> f64 {
        self.metric(&format!("sightline_aggregator_broker_refused_total{{reason=\"{reason}\"}}"))
    }
}

#[test]
fn each_agent_speaks_for_its_own_cameras_only_and_reads_nothing() {
    let c = Center::start();
    let port = c.port();

    // valid traffic from A
    let mut a = agent(port, EDGE_A);
    let own = sighting("north");
    assert!(matches!(a.publish(&sighting_topic(&own), own.to_json()), Answer::Acked(_)));

    // A publishing a sighting on B's camera: the connection is closed
    let forged = sighting("south");
    let answer = a.publish(&sighting_topic(&forged), forged.to_json());
    assert!(answer.closed(), "a foreign publish was acknowledged: {answer:?}");
    // ... and B's agent status, and the aggregator's trajectory topic
    let status = AgentStatus {
        site: SITE.into(),
        agent: EDGE_B.0.into(),
        ts: time::OffsetDateTime::now_utc(),
        state: AgentState::Offline,
        version: None,
        cameras: None,
        started: None,
    };
    for t in [topic::agent_status(SITE, EDGE_B.0), topic::trajectory(SITE)] {
        let mut a = agent(port, EDGE_A);
        assert!(a.publish(&t, status.to_json()).closed(), "{t}");
    }
    assert_eq!(c.refused("publish"), 3.0);

    // valid traffic from B after the attacks, and from A on a new connection
    let mut b = agent(port, EDGE_B);
    let theirs = sighting("south");
    assert!(matches!(b.publish(&sighting_topic(&theirs), theirs.to_json()), Answer::Acked(_)));
    let mut a = agent(port, EDGE_A);
    let again = sighting("north");
    assert!(matches!(a.publish(&sighting_topic(&again), again.to_json()), Answer::Acked(_)));
    c.wait_stored(&[own.id, theirs.id, again.id]);
    // stored in order behind them, had it reached the aggregator
    assert_eq!(c.stored(forged.id), 404, "the forged sighting was stored");
    assert_eq!(c.metric(r#"sightline_aggregator_messages_total{kind="agent_status",outcome="accepted"}"#), 0.0);

    // an agent reads nothing
    for filter in
        ["#", "sightline/v1/+/+/sighting", "sightline/v1/testsite/south/sighting", "sightline/v1/testsite/+/crowd"]
    {
        let mut a = agent(port, EDGE_A);
        let answer = a.subscribe(filter);
        assert!(answer.closed(), "{filter}: {answer:?}");
    }
    assert_eq!(c.refused("subscribe"), 4.0);

    // an alert on its own camera is A's to raise (its kind is ingest's to judge)
    let alert = Alert {
        id: sightline_contract::new_event_id(),
        site: SITE.into(),
        camera: "north".into(),
        ts: time::OffsetDateTime::now_utc(),
        alert: "north-fence-1".into(),
        state: AlertState::Raised,
        kind: AlertKind::ZoneIntrusion,
        severity: Severity::Warning,
        zone: Some("fence".into()),
        message: "someone in the fence".into(),
        details: None,
    };
    let mut a = agent(port, EDGE_A);
    assert!(matches!(a.publish(&topic::alert(SITE, "north"), alert.to_json()), Answer::Acked(_)));
    let operator = c.agg.token("trust-operator", "operator").unwrap();
    eventually("the alert listed", Duration::from_secs(20), || {
        let (_, body) = http_get_as(&format!("{}/api/v1/alerts", c.base), Some(&operator)).unwrap();
        body.contains(&alert.id.to_string())
    })
    .unwrap();

    // the observer reads crowd counts, not sightings, and publishes nothing
    let mut w = MqttClient::connect(port, WATCHER.0, Some(WATCHER), None).unwrap();
    match w.subscribe("sightline/v1/testsite/+/crowd") {
        Answer::Acked(codes) => assert_eq!(codes, [SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce)]),
        closed => panic!("the observer's subscription: {closed:?}"),
    }
    assert!(w.subscribe("sightline/v1/#").closed());
    let mut w = MqttClient::connect(port, &format!("{}-2", WATCHER.0), Some(WATCHER), None).unwrap();
    assert!(w.publish(&topic::alert(SITE, "north"), alert.to_json()).closed());
    assert_eq!(c.refused("subscribe"), 5.0);
    assert_eq!(c.refused("publish"), 4.0);

    // each refusal is logged with the login, the client id, the topic and the reason
    let log = c.agg.log();
    let line = log.lines().find(|l| l.contains("refused a client") && l.contains("/south/sighting")).unwrap();
    assert!(
        line.contains("edge-a") && line.contains("sightline-edge-edge-a") && line.contains("reason=publish"),
        "{line}"
    );
    for (_, password) in [AGGREGATOR, EDGE_A, EDGE_B, WATCHER] {
        assert!(!log.contains(password), "a password was logged");
    }
    // the aggregator kept its one connection throughout
    assert_eq!(log.matches("MQTT connected; subscribing").count(), 1, "{log}");
}

#[test]
fn the_aggregator_s_client_id_cannot_be_taken_and_no_acknowledged_sighting_is_lost() {
    let c = Center::start();
    let port = c.port();
    let mut b = agent(port, EDGE_B);
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        if i % 2 == 0 {
            // agent A (and the observer) try the aggregator's client id while B publishes
            let (who, id) =
                if i % 4 == 0 { (EDGE_A, "sightline-aggregator") } else { (WATCHER, "sightline-aggregator") };
            match MqttClient::connect(port, id, Some(who), None).map_err(|e| *e) {
                Err(ConnectionError::ConnectionRefused(ConnectReturnCode::BadClientId)) => {}
                Err(e) => panic!("{}: refused otherwise than by CONNACK 2: {e:?}", who.0),
                Ok(_) => panic!("{} took the aggregator's client id", who.0),
            }
        }
        let s = sighting("south");
        match b.publish(&sighting_topic(&s), s.to_json()) {
            Answer::Acked(_) => acknowledged.push(s.id),
            closed => panic!("sighting {i} not acknowledged: {closed:?}"),
        }
    }
    // a takeover of agent B's client id by agent A is refused as well
    let e = MqttClient::connect(port, &agent_client_id(EDGE_B), Some(EDGE_A), None).err().map(|e| *e);
    assert!(matches!(e, Some(ConnectionError::ConnectionRefused(ConnectReturnCode::BadClientId))), "{e:?}");

    assert_eq!(acknowledged.len(), 20);
    c.wait_stored(&acknowledged);
    assert_eq!(c.refused("client_id"), 11.0);
    assert_eq!(c.metric("sightline_aggregator_mqtt_connected"), 1.0);
    let log = c.agg.log();
    assert_eq!(log.matches("MQTT connected; subscribing").count(), 1, "the aggregator lost its connection:\n{log}");
    assert!(!log.contains("MQTT connection lost"), "{log}");
}

#[test]
fn a_will_on_another_agent_s_status_is_refused_and_an_agent_s_own_will_is_delivered() {
    let c = Center::start();
    let port = c.port();
    let offline = |agent: &str| {
        AgentStatus {
            site: SITE.into(),
            agent: agent.into(),
            ts: time::OffsetDateTime::now_utc(),
            state: AgentState::Offline,
            version: None,
            cameras: None,
            started: None,
        }
        .to_json()
    };
    let id = agent_client_id(EDGE_A);
    let theirs = topic::agent_status(SITE, EDGE_B.0);
    match MqttClient::connect(port, &id, Some(EDGE_A), Some((&theirs, offline(EDGE_B.0)))).map_err(|e| *e) {
        Err(ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized)) => {}
        other => panic!("a Will on B's status: {:?}", other.err()),
    }
    // a camera's status topic is no Will topic either
    let camera = topic::camera_status(SITE, "north");
    assert!(MqttClient::connect(port, &id, Some(EDGE_A), Some((&camera, offline(EDGE_A.0)))).is_err());
    assert_eq!(c.refused("will_topic"), 2.0);

    // A's own Will: accepted, and published by the broker when A vanishes without a DISCONNECT
    let own = topic::agent_status(SITE, EDGE_A.0);
    let a = MqttClient::connect(port, &id, Some(EDGE_A), Some((own.as_str(), offline(EDGE_A.0)))).unwrap();
    drop(a);
    let series = r#"sightline_aggregator_messages_total{kind="agent_status",outcome="accepted"}"#;
    wait_metric(&c.base, series, 0.0, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}\nlog:\n{}", c.agg.log()));
}

/// An aggregator config for an external broker on `port`, with the agents and the observer.
fn external_config(dir: &Path, port: u16) -> String {
    let mqtt = format!(
        "[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nusername = \"{}\"\npassword_file = \"aggregator.password\"\n",
        AGGREGATOR.0
    );
    aggregator_config(free_port(), &dir.join("agg.sqlite"), &format!("{mqtt}\n{CAMERAS}")).replacen(
        "[broker]\n",
        "[broker]\nembedded = false\nobservers = [\"watcher\"]\n",
        1,
    )
}

/// `aggregator broker-acl --config … --format …`: its stdout, or its stderr on failure.
fn broker_acl(config: &Path, format: &str) -> Result<String, String> {
    let out = std::process::Command::new(binary("aggregator"))
        .arg("broker-acl")
        .arg("--config")
        .arg(config)
        .args(["--format", format])
        .output()
        .unwrap();
    match out.status.success() {
        true => Ok(String::from_utf8(out.stdout).unwrap()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

#[test]
fn mosquitto_with_the_generated_acl_holds_agents_to_their_topics() {
    let dir = tempfile::tempdir().unwrap();
    // mosquitto, started as root, reads its files as its own user
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    users_file(dir.path());
    let config = dir.path().join("aggregator.toml");
    std::fs::write(&config, external_config(dir.path(), 1883)).unwrap();
    let acl = broker_acl(&config, "mosquitto").unwrap();
    let emqx = broker_acl(&config, "emqx").unwrap();
    assert!(emqx.trim_end().ends_with("{deny, all}.") && emqx.contains("{username, \"edge-b\"}, publish"), "{emqx}");
    let acl_file = dir.path().join("sightline.acl");
    std::fs::write(&acl_file, &acl).unwrap();
    std::fs::set_permissions(&acl_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let passwd = dir.path().join("passwd");
    mosquitto_password_file(&passwd, &[AGGREGATOR, EDGE_A, EDGE_B, WATCHER]).unwrap();
    // the lines the generated file's comments give for mosquitto.conf
    assert!(acl.contains("allow_anonymous false") && acl.contains("password_file") && acl.contains("acl_file"));
    let settings =
        format!("allow_anonymous false\npassword_file {}\nacl_file {}\n", passwd.display(), acl_file.display());
    let broker = Mosquitto::start_with(&settings).unwrap();

    let agg_dir = tempfile::tempdir().unwrap();
    users_file(agg_dir.path());
    let agg = Aggregator::start_in(agg_dir.path(), &external_config(agg_dir.path(), broker.port), broker.port)
        .unwrap_or_else(|e| panic!("{e}\nbroker log:\n{}", broker.log()));
    let log = agg.log();
    assert!(!log.contains("refused a subscription"), "the ACL refused the aggregator's subscriptions:\n{log}");
    let token = agg.token("trust", "integrator").unwrap();
    let api = agg.api_url().unwrap();
    let stored = |id: Uuid| http_get_as(&format!("{api}/sightings/{id}?purpose=test"), Some(&token)).unwrap().0;

    // A publishes on B's camera between two publishes of its own: mosquitto acknowledges the
    // foreign one and drops it
    let mut a = agent(broker.port, EDGE_A);
    let before = sighting("north");
    let forged = sighting("south");
    let after = sighting("north");
    for s in [&before, &forged, &after] {
        assert!(matches!(a.publish(&sighting_topic(s), s.to_json()), Answer::Acked(_)));
    }
    let mut b = agent(broker.port, EDGE_B);
    let theirs = sighting("south");
    assert!(matches!(b.publish(&sighting_topic(&theirs), theirs.to_json()), Answer::Acked(_)));
    eventually("the legitimate sightings stored", Duration::from_secs(20), || {
        [before.id, after.id, theirs.id].iter().all(|id| stored(*id) == 200)
    })
    .unwrap_or_else(|e| panic!("{e}\nlog:\n{}\nbroker log:\n{}", agg.log(), broker.log()));
    assert_eq!(stored(forged.id), 404, "mosquitto let the forged sighting through");

    // mosquitto grants every subscription and delivers only what the login may read: agent A,
    // subscribed to everything, gets nothing; the observer, subscribed to everything, gets B's
    // crowd count but not the sighting B published just before it (delivered in order)
    for filter in ["#", "sightline/v1/+/+/sighting", "sightline/v1/testsite/south/sighting"] {
        assert!(matches!(a.subscribe(filter), Answer::Acked(_)), "{filter}");
    }
    let mut w = MqttClient::connect(broker.port, WATCHER.0, Some(WATCHER), None).unwrap();
    assert!(matches!(w.subscribe("sightline/v1/#"), Answer::Acked(_)));
    let next = sighting("south");
    assert!(matches!(b.publish(&sighting_topic(&next), next.to_json()), Answer::Acked(_)));
    let crowd = topic::crowd(SITE, "south");
    assert!(matches!(b.publish(&crowd, b"{}".to_vec()), Answer::Acked(_)));
    assert_eq!(
        w.receive_until(&crowd).unwrap(),
        std::slice::from_ref(&crowd),
        "the observer read more than the crowd count"
    );
    eventually("B's next sighting stored", Duration::from_secs(20), || stored(next.id) == 200).unwrap();
    // (mosquitto wrote to every subscriber when it handled the publish the aggregator stored)
    assert_eq!(a.received_within(Duration::from_millis(500)), Vec::<String>::new(), "agent A read messages");

    // a camera without its agent: broker-acl names the key
    let lonely = external_config(dir.path(), 1883).replace("agent = \"edge-b\"\n", "");
    std::fs::write(&config, lonely).unwrap();
    let e = broker_acl(&config, "mosquitto").unwrap_err();
    assert!(e.contains("camera[south].agent"), "{e}");
}

#[test]
fn a_real_edge_agent_logs_in_and_publishes_through_the_gate() {
    let c = Center::start();
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("mqtt-password");
    std::fs::write(&password, format!("{}\n", EDGE_A.1)).unwrap();
    // its camera is nowhere: the agent still publishes its status and the camera's
    let camera = format!("[[camera]]\nid = \"north\"\nrtsp = \"rtsp://127.0.0.1:{}/none\"\n", free_port());
    let keys = format!("username = \"{}\"\npassword_file = \"{}\"", EDGE_A.0, password.display());
    let config = agent_config_with_mqtt(c.port(), &keys, &camera);
    assert!(config.contains("id = \"edge-test\""));
    let agent = Agent::start(&config.replacen("id = \"edge-test\"", &format!("id = \"{}\"", EDGE_A.0), 1)).unwrap();
    for kind in ["agent_status", "camera_status"] {
        let series = format!("sightline_aggregator_messages_total{{kind=\"{kind}\",outcome=\"accepted\"}}");
        wait_metric(&c.base, &series, 0.0, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}\naggregator log:\n{}", agent.log(), c.agg.log()));
    }
    let log = c.agg.log();
    assert!(!log.contains("refused a client"), "{log}");
}
