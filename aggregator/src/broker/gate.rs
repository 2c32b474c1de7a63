//! The embedded broker's authorising gate. rumqttd checks user names and passwords but has no
//! per-user topic rights, and lets any client take any client id (dropping the connection that
//! held it). So with `[broker] users_file`, rumqttd listens on loopback only and the gate listens
//! on `[broker] listen`: for each client it reads the MQTT 3.1.1 packets ([`super::packet`]),
//! asks the [`Policy`] about the CONNECT (client id, Will topic), every PUBLISH (topic) and every
//! SUBSCRIBE (each filter), and forwards each allowed packet to rumqttd unchanged; what rumqttd
//! sends back is copied through. rumqttd still checks the password.
//!
//! A refused CONNECT is answered with a CONNACK refusal (2, identifier rejected, for a client
//! id; 5, not authorised, otherwise) and the connection closed; a refused PUBLISH or SUBSCRIBE
//! closes the connection (MQTT 3.1.1 has no negative PUBACK) and reaches rumqttd not at all. Each
//! refusal is logged (peer, login, client id, topic or filter, reason; never the password) and
//! counted in `sightline_aggregator_broker_refused_total{reason}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::acl::{Action, Policy, Refusal};
use super::packet::{self, Packet, PacketError, ReadError};
use crate::metrics::Metrics;

/// Time a client has to send its CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Clients served at once; more wait in the listen backlog.
const MAX_CLIENTS: usize = 2048;
/// Room for a PUBLISH's topic and header around the largest payload.
const HEADROOM: usize = 64 << 10;

/// What the gate needs.
pub struct Gate {
    pub policy: Policy,
    pub metrics: Arc<Metrics>,
    /// rumqttd's loopback listener.
    pub upstream: SocketAddr,
    /// `[broker] max_payload_bytes`.
    pub max_payload: usize,
}

/// Who is on a connection, once its CONNECT was read.
struct Session {
    peer: SocketAddr,
    login: Option<String>,
    client_id: String,
}

/// A value from the client, for the log: quoted, escaped, cut at 120 characters.
fn shown(s: &str) -> String {
    match s.char_indices().nth(120) {
        Some((at, _)) => format!("{:?}…", &s[..at]),
        None => format!("{s:?}"),
    }
}

/// The metric label of a packet that could not be read.
fn label(e: &PacketError) -> &'static str {
    match e {
        PacketError::TooLarge { .. } => "too_large",
        PacketError::ProtocolLevel(_) => "protocol_version",
        _ => "malformed",
    }
}

/// Serves `listener` on the current tokio runtime until the process ends.
pub fn spawn(listener: std::net::TcpListener, gate: Gate) -> std::io::Result<()> {
    let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
    let _entered = runtime.enter();
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    runtime.spawn(Arc::new(gate).serve(listener));
    Ok(())
}

impl Gate {
    async fn serve(self: Arc<Self>, listener: TcpListener) {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let gate = self.clone();
                    tokio::spawn(async move {
                        gate.client(stream, peer).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    // e.g. out of file descriptors: do not spin
                    tracing::warn!(error = %e, "embedded MQTT broker: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn max_packet(&self) -> usize {
        self.max_payload + HEADROOM
    }

    /// Serves one client connection until either side closes it or the gate refuses something.
    async fn client(&self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = stream.into_split();
        let mut rd = BufReader::new(rd);
        let first = match tokio::time::timeout(CONNECT_TIMEOUT, packet::read_packet(&mut rd, self.max_packet())).await {
            Err(_) => {
                self.closed(peer, None, None, "connect_timeout", &format!("no CONNECT within {CONNECT_TIMEOUT:?}"));
                return;
            }
            // connected and left (a port check)
            Ok(Ok(None)) | Ok(Err(ReadError::Io(_))) => return,
            Ok(Err(ReadError::Packet(e))) => {
                self.closed(peer, None, None, label(&e), &e.to_string());
                return;
            }
            Ok(Ok(Some(raw))) => raw,
        };
        let connect = match first.parse() {
            Ok(Packet::Connect(c)) => c,
            Ok(_) => {
                self.closed(peer, None, None, "malformed", "the first packet is not a CONNECT");
                return;
            }
            Err(e @ PacketError::ProtocolLevel(_)) => {
                // CONNACK 1: unacceptable protocol version
                let _ = wr.write_all(&[0x20, 2, 0, 1]).await;
                let _ = wr.shutdown().await;
                self.closed(peer, None, None, label(&e), &e.to_string());
                return;
            }
            Err(e) => {
                self.closed(peer, None, None, label(&e), &e.to_string());
                return;
            }
        };
        let session =
            Session { peer, login: connect.username.map(str::to_owned), client_id: connect.client_id.to_owned() };
        let decision =
            self.policy.decide(connect.username, connect.client_id, Action::Connect { will_topic: connect.will_topic });
        if let Err(refusal) = decision {
            let code = if refusal == Refusal::ClientId { 2 } else { 5 };
            let _ = wr.write_all(&[0x20, 2, 0, code]).await;
            let _ = wr.shutdown().await;
            let will = connect.will_topic.map(str::to_owned);
            self.refused(&session, refusal, will.as_deref());
            return;
        }
        let upstream = match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(self.upstream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(%peer, error = %e, "embedded MQTT broker: not reachable behind its gate; client closed");
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, "embedded MQTT broker: no answer behind its gate; client closed");
                return;
            }
        };
        let _ = upstream.set_nodelay(true);
        let (mut up_rd, mut up_wr) = upstream.into_split();
        if up_wr.write_all(&first.bytes).await.is_err() {
            return;
        }
        drop(first);
        tracing::debug!(%peer, login = ?session.login, client_id = %shown(&session.client_id), "MQTT client through the gate");
        tokio::select! {
            _ = self.forward(&mut rd, &mut up_wr, &session) => {}
            _ = tokio::io::copy(&mut up_rd, &mut wr) => {}
        }
        // dropping the halves closes both connections
    }

    /// Client to broker: every packet read, judged, and forwarded whole if allowed. Returns when
    /// the client is gone or was refused.
    async fn forward(&self, rd: &mut (impl AsyncRead + Unpin), up: &mut (impl AsyncWrite + Unpin), s: &Session) {
        loop {
            let raw = match packet::read_packet(rd, self.max_packet()).await {
                Ok(Some(raw)) => raw,
                Ok(None) | Err(ReadError::Io(_)) => return,
                Err(ReadError::Packet(e)) => {
                    self.closed(s.peer, Some(s), None, label(&e), &e.to_string());
                    return;
                }
            };
            let login = s.login.as_deref();
            match raw.parse() {
                Ok(Packet::Publish { topic }) => {
                    if let Err(r) = self.policy.decide(login, &s.client_id, Action::Publish { topic }) {
                        self.refused(s, r, Some(topic));
                        return;
                    }
                }
                Ok(Packet::Subscribe { filters }) => {
                    for filter in filters {
                        if let Err(r) = self.policy.decide(login, &s.client_id, Action::Subscribe { filter }) {
                            self.refused(s, r, Some(filter));
                            return;
                        }
                    }
                }
                Ok(Packet::Connect(_)) => {
                    self.closed(s.peer, Some(s), None, "malformed", "a second CONNECT");
                    return;
                }
                Ok(Packet::Other(_)) => {}
                Err(e) => {
                    self.closed(s.peer, Some(s), None, label(&e), &e.to_string());
                    return;
                }
            }
            if up.write_all(&raw.bytes).await.is_err() {
                return;
            }
        }
    }

    fn refused(&self, s: &Session, refusal: Refusal, topic: Option<&str>) {
        self.closed(s.peer, Some(s), topic, refusal.label(), &refusal.to_string());
    }

    /// Logs and counts a connection the gate closes.
    fn closed(&self, peer: SocketAddr, s: Option<&Session>, topic: Option<&str>, reason: &'static str, why: &str) {
        self.metrics.broker_refused(reason);
        let login = s.and_then(|s| s.login.as_deref()).map(shown);
        let client_id = s.map(|s| shown(&s.client_id));
        tracing::warn!(
            %peer,
            login = %login.as_deref().unwrap_or("-"),
            client_id = %client_id.as_deref().unwrap_or("-"),
            topic = %topic.map(shown).as_deref().unwrap_or("-"),
            %reason,
            "embedded MQTT broker refused a client: {why}; connection closed"
        );
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::super::acl::tests::policy;
    use super::super::packet::tests::{connect_body, packet, publish_body, subscribe_body};
    use super::*;

    /// A gate in front of a stand-in broker that records what reaches it and answers a CONNECT
    /// with CONNACK 0. Returns the gate's address, the metrics and the receiver of what the
    /// broker got on each connection.
    async fn gate() -> (SocketAddr, Arc<Metrics>, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
        let broker = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = broker.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = broker.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    let mut acked = false;
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                        if !acked {
                            acked = true;
                            let _ = s.write_all(&[0x20, 2, 0, 0]).await;
                        }
                    }
                    let _ = tx.send(got);
                });
            }
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        spawn(listener, Gate { policy: policy(), metrics: metrics.clone(), upstream, max_payload: 16 << 10 }).unwrap();
        (addr, metrics, rx)
    }

    /// Sends `packets` one by one; returns what came back until the gate closed the connection.
    async fn session(addr: SocketAddr, packets: &[Vec<u8>]) -> Vec<u8> {
        let mut s = TcpStream::connect(addr).await.unwrap();
        for p in packets {
            if s.write_all(p).await.is_err() {
                break;
            }
            // let the gate judge each packet before the next one comes
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut back = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut back)).await;
        assert!(read.is_ok(), "the gate did not close the connection");
        back
    }

    fn refused(m: &Metrics, reason: &str) -> bool {
        m.encode().contains(&format!("sightline_aggregator_broker_refused_total{{reason=\"{reason}\"}} 1"))
    }

    fn connect(client_id: &str, login: &str, will: Option<&str>) -> Vec<u8> {
        packet(0x10, &connect_body(4, client_id, Some((login, "pw")), will))
    }

    #[tokio::test]
    async fn allowed_packets_pass_unchanged_and_a_foreign_publish_closes_the_connection() {
        let (addr, metrics, mut broker) = gate().await;
        let hello = connect("sightline-edge-edge-a", "edge-a", Some("sightline/v1/s/agent/edge-a/status"));
        let own = packet(0x32, &publish_body(b"sightline/v1/s/gate/sighting", 1));
        let foreign = packet(0x32, &publish_body(b"sightline/v1/s/yard/sighting", 1));
        let back = session(addr, &[hello.clone(), own.clone(), foreign]).await;
        assert_eq!(back, [0x20, 2, 0, 0], "the broker's CONNACK came through");
        let got = broker.recv().await.unwrap();
        assert_eq!(got, [hello, own].concat(), "only the allowed packets reached the broker, byte for byte");
        assert!(refused(&metrics, "publish"), "{}", metrics.encode());
    }

    #[tokio::test]
    async fn refused_connects_get_a_connack_refusal_and_reach_nothing() {
        let (addr, metrics, mut broker) = gate().await;
        // the aggregator's client id
        let back = session(addr, &[connect("sightline-aggregator", "edge-a", None)]).await;
        assert_eq!(back, [0x20, 2, 0, 2]);
        assert!(refused(&metrics, "client_id"));
        // a Will on another agent's status
        let back =
            session(addr, &[connect("sightline-edge-edge-a", "edge-a", Some("sightline/v1/s/agent/edge-b/status"))])
                .await;
        assert_eq!(back, [0x20, 2, 0, 5]);
        assert!(refused(&metrics, "will_topic"));
        // no login, an unknown login
        assert_eq!(session(addr, &[packet(0x10, &connect_body(4, "edge-a", None, None))]).await, [0x20, 2, 0, 5]);
        assert_eq!(session(addr, &[connect("mallory", "mallory", None)]).await, [0x20, 2, 0, 5]);
        assert!(refused(&metrics, "no_login") && refused(&metrics, "unknown_login"));
        // MQTT 5
        let v5 = packet(0x10, &connect_body(5, "edge-a", Some(("edge-a", "pw")), None));
        assert_eq!(session(addr, &[v5]).await, [0x20, 2, 0, 1]);
        assert!(refused(&metrics, "protocol_version"));
        // garbage (a reserved packet type, a packet only servers send), and a packet claiming 268 MB
        assert!(session(addr, &[vec![0xf0, 0x00]]).await.is_empty());
        assert!(session(addr, &[vec![0x20, 0x02, 0, 0]]).await.is_empty());
        assert_eq!(m_count(&metrics, "malformed"), 2);
        assert!(session(addr, &[vec![0x10, 0xff, 0xff, 0xff, 0x7f]]).await.is_empty());
        assert!(refused(&metrics, "too_large"), "{}", metrics.encode());
        assert!(broker.try_recv().is_err(), "nothing reached the broker");
    }

    #[tokio::test]
    async fn subscriptions_are_judged_filter_by_filter() {
        let (addr, metrics, mut broker) = gate().await;
        let hello = connect("dashboard-1", "dashboard", None);
        let fine = packet(0x82, &subscribe_body(&["sightline/v1/s/+/crowd", "sightline/v1/s/agent/+/status"]));
        let greedy = packet(0x82, &subscribe_body(&["sightline/v1/s/+/alert", "sightline/v1/+/+/sighting"]));
        session(addr, &[hello.clone(), fine.clone(), greedy]).await;
        assert_eq!(broker.recv().await.unwrap(), [hello, fine].concat());
        assert!(refused(&metrics, "subscribe"));
        // an agent subscribes to nothing; a PUBLISH with a wildcard is malformed
        let hello = connect("edge-b", "edge-b", None);
        session(addr, &[hello.clone(), packet(0x82, &subscribe_body(&["#"]))]).await;
        assert_eq!(broker.recv().await.unwrap(), hello);
        assert!(m_count(&metrics, "subscribe") == 2);
        session(addr, &[hello.clone(), packet(0x32, &publish_body(b"sightline/v1/s/+/sighting", 1))]).await;
        assert_eq!(broker.recv().await.unwrap(), hello);
        assert!(refused(&metrics, "malformed"));
    }

    fn m_count(m: &Metrics, reason: &str) -> u64 {
        let text = m.encode();
        let series = format!("sightline_aggregator_broker_refused_total{{reason=\"{reason}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(series.as_str())).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}
