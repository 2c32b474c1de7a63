//! A raw MQTT 3.1.1 client for the broker trust tests (rumqttc): connects with a chosen client
//! id, login and Will, then publishes and subscribes one packet at a time, reporting what the
//! broker did (acknowledged, refused, or closed the connection). Once the connection is gone
//! the client is never polled again (rumqttc would reconnect).

use std::time::{Duration, Instant};

use rumqttc::{Client, Connection, ConnectionError, Event, LastWill, MqttOptions, Packet, QoS, SubscribeReasonCode};

/// How long any one answer from the broker may take.
const ANSWER: Duration = Duration::from_secs(10);

pub struct MqttClient {
    client: Client,
    conn: Connection,
    closed: bool,
}

/// What a broker answered.
#[derive(Debug)]
pub enum Answer {
    /// PUBACK (for a publish), SUBACK (with its return codes, for a subscribe).
    Acked(Vec<SubscribeReasonCode>),
    /// The connection ended (or a CONNACK refused the client): the error rumqttc reports.
    Closed(ConnectionError),
}

impl Answer {
    pub fn closed(&self) -> bool {
        matches!(self, Answer::Closed(_))
    }
}

impl MqttClient {
    /// Connects as `client_id`, logged in as `login` (user, password), with a retained QoS 1
    /// Will on `will` (topic, payload) if given. `Err` with rumqttc's error when the broker
    /// refuses the client (a CONNACK refusal, or the connection closed before a CONNACK).
    pub fn connect(
        port: u16,
        client_id: &str,
        login: Option<(&str, &str)>,
        will: Option<(&str, Vec<u8>)>,
    ) -> Result<MqttClient, Box<ConnectionError>> {
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        opts.set_keep_alive(Duration::from_secs(30));
        if let Some((user, password)) = login {
            opts.set_credentials(user, password);
        }
        if let Some((topic, payload)) = will {
            opts.set_last_will(LastWill::new(topic, payload, QoS::AtLeastOnce, true));
        }
        let (client, conn) = Client::new(opts, 10);
        let mut c = MqttClient { client, conn, closed: false };
        match c.wait(|p| matches!(p, Packet::ConnAck(_)).then(Vec::new)) {
            Answer::Acked(_) => Ok(c),
            Answer::Closed(e) => Err(Box::new(e)),
        }
    }

    /// Publishes with QoS 1 and waits for the PUBACK or the end of the connection.
    pub fn publish(&mut self, topic: &str, payload: Vec<u8>) -> Answer {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload).expect("rumqttc request queue");
        self.wait(|p| matches!(p, Packet::PubAck(_)).then(Vec::new))
    }

    /// Subscribes with QoS 1 and waits for the SUBACK or the end of the connection.
    pub fn subscribe(&mut self, filter: &str) -> Answer {
        self.client.subscribe(filter, QoS::AtLeastOnce).expect("rumqttc request queue");
        self.wait(|p| match p {
            Packet::SubAck(ack) => Some(ack.return_codes.clone()),
            _ => None,
        })
    }

    /// The topics of the messages received until `topic` arrives (included); `Err` with what came
    /// if it does not within 10 s or the connection ends.
    pub fn receive_until(&mut self, topic: &str) -> Result<Vec<String>, Vec<String>> {
        let mut topics = Vec::new();
        let done = |p: &Packet| match p {
            Packet::Publish(m) => {
                topics.push(m.topic.clone());
                (m.topic == topic).then(Vec::new)
            }
            _ => None,
        };
        match self.wait(done) {
            Answer::Acked(_) => Ok(topics),
            Answer::Closed(_) => Err(topics),
        }
    }

    /// The topics of the messages received within `within` (the connection staying up).
    pub fn received_within(&mut self, within: Duration) -> Vec<String> {
        assert!(!self.closed, "the connection is closed");
        let deadline = Instant::now() + within;
        let mut topics = Vec::new();
        while let Ok(ev) = self.conn.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            match ev {
                Ok(Event::Incoming(Packet::Publish(m))) => topics.push(m.topic.clone()),
                Ok(_) => {}
                Err(e) => panic!("the connection ended: {e}"),
            }
        }
        topics
    }

    /// Ends the session with a DISCONNECT (no Will).
    pub fn disconnect(mut self) {
        if !self.closed {
            let _ = self.client.disconnect();
            let _ = self.conn.recv_timeout(Duration::from_secs(1));
        }
    }

    fn wait(&mut self, mut answer: impl FnMut(&Packet) -> Option<Vec<SubscribeReasonCode>>) -> Answer {
        assert!(!self.closed, "the connection is closed");
        let deadline = Instant::now() + ANSWER;
        loop {
            match self.conn.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Ok(Event::Incoming(p))) => {
                    if let Some(codes) = answer(&p) {
                        return Answer::Acked(codes);
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    self.closed = true;
                    return Answer::Closed(e);
                }
                Err(_) => panic!("no answer from the broker within {ANSWER:?}"),
            }
        }
    }
}
