//! The part of MQTT 3.1.1 (OASIS standard, protocol level 4) the gate (`gate.rs`) reads from
//! a client: the fixed header and its remaining length, CONNECT (client id, Will topic, user
//! name; the password is skipped, never kept), PUBLISH (topic) and SUBSCRIBE (filters). Every
//! other packet a client may send is recognised by its type and passed on unread; the broker
//! behind the gate checks those.
//!
//! The bytes are hostile: every length is checked against what is there, a packet larger than
//! the limit is refused from its header before its body is read, and nothing here panics on any
//! input (see the tests, which feed random and truncated buffers).

use tokio::io::{AsyncRead, AsyncReadExt};

/// Packet types (the high nibble of the first byte).
pub const CONNECT: u8 = 1;
pub const PUBLISH: u8 = 3;
pub const SUBSCRIBE: u8 = 8;

/// Why bytes are not an acceptable MQTT 3.1.1 packet from a client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("remaining length longer than 4 bytes")]
    RemainingLength,
    #[error("packet of {len} bytes exceeds the {max} byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("{0} is not UTF-8")]
    Utf8(&'static str),
    #[error("protocol level {0}: only MQTT 3.1.1 (level 4) is served")]
    ProtocolLevel(u8),
    #[error("{0}")]
    Malformed(&'static str),
}

/// A packet from a client, as far as the gate reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    Connect(Connect<'a>),
    Publish {
        topic: &'a str,
    },
    Subscribe {
        filters: Vec<&'a str>,
    },
    /// PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBSCRIBE, PINGREQ or DISCONNECT (its type).
    Other(u8),
}

/// What the gate reads of a CONNECT. No password: it is skipped, only its presence noted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub will_topic: Option<&'a str>,
}

/// Decodes a fixed header at the start of `buf`: `(first byte, remaining length, header
/// length)`, or `None` when `buf` ends before the header does.
pub fn fixed_header(buf: &[u8]) -> Result<Option<(u8, usize, usize)>, PacketError> {
    let Some(&first) = buf.first() else { return Ok(None) };
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else { return Ok(None) };
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((first, len, 2 + i)));
        }
    }
    Err(PacketError::RemainingLength)
}

/// One packet read whole from a client: its bytes, exactly as sent (the gate forwards them).
#[derive(Debug)]
pub struct RawPacket {
    pub bytes: Vec<u8>,
    header_len: usize,
}

impl RawPacket {
    /// The packet's type (high nibble of the first byte).
    pub fn kind(&self) -> u8 {
        self.bytes[0] >> 4
    }

    pub fn parse(&self) -> Result<Packet<'_>, PacketError> {
        parse(self.bytes[0], &self.bytes[self.header_len..])
    }
}

/// Why no packet could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Packet(#[from] PacketError),
}

/// Reads the next packet: `None` at a clean end of the stream (between packets). A packet whose
/// remaining length exceeds `max` is refused before its body is read; the body's buffer grows
/// with the bytes that actually arrive, not with the length the header claims.
pub async fn read_packet<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<Option<RawPacket>, ReadError> {
    let mut head = [0u8; 5];
    if r.read(&mut head[..1]).await? == 0 {
        return Ok(None);
    }
    let mut n = 1;
    let (len, header_len) = loop {
        if r.read(&mut head[n..n + 1]).await? == 0 {
            return Err(PacketError::Truncated("fixed header").into());
        }
        n += 1;
        match fixed_header(&head[..n])? {
            Some((_, len, header_len)) => break (len, header_len),
            None => continue,
        }
    };
    if len > max {
        return Err(PacketError::TooLarge { len, max }.into());
    }
    let mut bytes = Vec::with_capacity(header_len + len.min(8 << 10));
    bytes.extend_from_slice(&head[..header_len]);
    let got = r.take(len as u64).read_to_end(&mut bytes).await?;
    if got < len {
        return Err(PacketError::Truncated("packet body").into());
    }
    Ok(Some(RawPacket { bytes, header_len }))
}

/// Parses the body of a packet whose first byte is `first`.
pub fn parse(first: u8, body: &[u8]) -> Result<Packet<'_>, PacketError> {
    let flags = first & 0x0f;
    let mut r = Reader(body);
    match first >> 4 {
        CONNECT => {
            if flags != 0 {
                return Err(PacketError::Malformed("CONNECT with fixed header flags"));
            }
            connect(&mut r).map(Packet::Connect)
        }
        PUBLISH => {
            let qos = (flags >> 1) & 3;
            if qos == 3 {
                return Err(PacketError::Malformed("PUBLISH with QoS 3"));
            }
            let topic = r.string("PUBLISH topic")?;
            check_topic_name(topic, "PUBLISH topic")?;
            if qos > 0 && r.u16("PUBLISH packet id")? == 0 {
                return Err(PacketError::Malformed("PUBLISH with packet id 0"));
            }
            Ok(Packet::Publish { topic })
        }
        SUBSCRIBE => {
            if flags != 0b0010 {
                return Err(PacketError::Malformed("SUBSCRIBE with fixed header flags other than 0010"));
            }
            r.u16("SUBSCRIBE packet id")?;
            let mut filters = Vec::new();
            while !r.0.is_empty() {
                let filter = r.string("SUBSCRIBE filter")?;
                check_filter(filter)?;
                if r.u8("SUBSCRIBE QoS")? > 2 {
                    return Err(PacketError::Malformed("SUBSCRIBE with a requested QoS above 2"));
                }
                filters.push(filter);
            }
            if filters.is_empty() {
                return Err(PacketError::Malformed("SUBSCRIBE without a topic filter"));
            }
            Ok(Packet::Subscribe { filters })
        }
        // the packets a client sends besides those
        kind @ (4..=7 | 10 | 12 | 14) => Ok(Packet::Other(kind)),
        2 | 9 | 11 | 13 => Err(PacketError::Malformed("a packet only a server sends")),
        _ => Err(PacketError::Malformed("reserved packet type")),
    }
}

fn connect<'a>(r: &mut Reader<'a>) -> Result<Connect<'a>, PacketError> {
    let name = r.string("CONNECT protocol name")?;
    let level = r.u8("CONNECT protocol level")?;
    if !matches!(name, "MQTT" | "MQIsdp") {
        return Err(PacketError::Malformed("CONNECT protocol name is neither MQTT nor MQIsdp"));
    }
    if name != "MQTT" || level != 4 {
        return Err(PacketError::ProtocolLevel(level));
    }
    let flags = r.u8("CONNECT flags")?;
    let (username, password, will) = (flags & 0x80 != 0, flags & 0x40 != 0, flags & 0x04 != 0);
    let (will_qos, will_retain) = ((flags >> 3) & 3, flags & 0x20 != 0);
    if flags & 0x01 != 0 {
        return Err(PacketError::Malformed("CONNECT reserved flag set"));
    }
    if will_qos == 3 || (!will && (will_qos != 0 || will_retain)) {
        return Err(PacketError::Malformed("CONNECT Will QoS or retain flags"));
    }
    if password && !username {
        return Err(PacketError::Malformed("CONNECT password flag without the user name flag"));
    }
    r.u16("CONNECT keep alive")?;
    let client_id = r.string("CONNECT client id")?;
    let will_topic = if will {
        let topic = r.string("CONNECT Will topic")?;
        check_topic_name(topic, "CONNECT Will topic")?;
        r.binary("CONNECT Will message")?;
        Some(topic)
    } else {
        None
    };
    let username = if username { Some(r.string("CONNECT user name")?) } else { None };
    if password {
        r.binary("CONNECT password")?;
    }
    if !r.0.is_empty() {
        return Err(PacketError::Malformed("CONNECT with bytes after its payload"));
    }
    Ok(Connect { client_id, username, will_topic })
}

/// A topic name (PUBLISH, Will): at least one character, no wildcard.
fn check_topic_name(topic: &str, what: &'static str) -> Result<(), PacketError> {
    if topic.is_empty() {
        return Err(PacketError::Malformed(if what == "PUBLISH topic" {
            "empty PUBLISH topic"
        } else {
            "empty Will topic"
        }));
    }
    if topic.contains(['+', '#']) {
        return Err(PacketError::Malformed(if what == "PUBLISH topic" {
            "wildcard in a PUBLISH topic"
        } else {
            "wildcard in a Will topic"
        }));
    }
    Ok(())
}

/// A topic filter: `#` only as the whole last level, `+` only as a whole level.
fn check_filter(filter: &str) -> Result<(), PacketError> {
    if filter.is_empty() {
        return Err(PacketError::Malformed("empty SUBSCRIBE filter"));
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let bad_hash = level.contains('#') && (*level != "#" || i + 1 != levels.len());
        let bad_plus = level.contains('+') && *level != "+";
        if bad_hash || bad_plus {
            return Err(PacketError::Malformed("SUBSCRIBE filter with a misplaced wildcard"));
        }
    }
    Ok(())
}

/// A cursor over a packet body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], PacketError> {
        if self.0.len() < n {
            return Err(PacketError::Truncated(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, PacketError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, PacketError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn binary(&mut self, what: &'static str) -> Result<&'a [u8], PacketError> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }

    /// A UTF-8 string without U+0000 (MQTT 3.1.1 section 1.5.3).
    fn string(&mut self, what: &'static str) -> Result<&'a str, PacketError> {
        let s = std::str::from_utf8(self.binary(what)?).map_err(|_| PacketError::Utf8(what))?;
        if s.contains('\0') {
            return Err(PacketError::Malformed("a string holding U+0000"));
        }
        Ok(s)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An MQTT string: length, then the bytes.
    fn s(v: &[u8]) -> Vec<u8> {
        let mut out = (v.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(v);
        out
    }

    /// A whole packet: first byte, remaining length, body.
    pub(crate) fn packet(first: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        let mut len = body.len();
        loop {
            let mut b = (len % 128) as u8;
            len /= 128;
            if len > 0 {
                b |= 0x80;
            }
            out.push(b);
            if len == 0 {
                break;
            }
        }
        out.extend_from_slice(body);
        out
    }

    /// A CONNECT body (protocol level 4 unless `level` says otherwise).
    pub(crate) fn connect_body(level: u8, client_id: &str, login: Option<(&str, &str)>, will: Option<&str>) -> Vec<u8> {
        let mut flags = 0x02;
        if login.is_some() {
            flags |= 0xc0;
        }
        if will.is_some() {
            flags |= 0x04 | 0x08;
        }
        let mut body = s(b"MQTT");
        body.extend([level, flags, 0, 30]);
        body.extend(s(client_id.as_bytes()));
        if let Some(topic) = will {
            body.extend(s(topic.as_bytes()));
            body.extend(s(b"{}"));
        }
        if let Some((user, password)) = login {
            body.extend(s(user.as_bytes()));
            body.extend(s(password.as_bytes()));
        }
        body
    }

    pub(crate) fn publish_body(topic: &[u8], qos: u8) -> Vec<u8> {
        let mut body = s(topic);
        if qos > 0 {
            body.extend([0, 7]);
        }
        body.extend(b"payload");
        body
    }

    pub(crate) fn subscribe_body(filters: &[&str]) -> Vec<u8> {
        let mut body = vec![0, 9];
        for f in filters {
            body.extend(s(f.as_bytes()));
            body.push(1);
        }
        body
    }

    fn read_all(bytes: &[u8], max: usize) -> Result<Option<RawPacket>, ReadError> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(read_packet(&mut &bytes[..], max))
    }

    #[test]
    fn reads_what_a_client_sends() {
        let body = connect_body(4, "sightline-edge-a", Some(("a", "secret")), Some("sightline/v1/s/agent/a/status"));
        let raw = read_all(&packet(0x10, &body), 1 << 20).unwrap().unwrap();
        assert_eq!(raw.kind(), CONNECT);
        assert_eq!(
            raw.parse().unwrap(),
            Packet::Connect(Connect {
                client_id: "sightline-edge-a",
                username: Some("a"),
                will_topic: Some("sightline/v1/s/agent/a/status"),
            })
        );
        assert!(!format!("{:?}", raw.parse().unwrap()).contains("secret"));
        let anonymous = connect_body(4, "", None, None);
        assert_eq!(
            parse(0x10, &anonymous).unwrap(),
            Packet::Connect(Connect { client_id: "", username: None, will_topic: None })
        );
        assert_eq!(parse(0x32, &publish_body(b"a/b", 1)).unwrap(), Packet::Publish { topic: "a/b" });
        assert_eq!(parse(0x30, &publish_body(b"a/b", 0)).unwrap(), Packet::Publish { topic: "a/b" });
        assert_eq!(
            parse(0x82, &subscribe_body(&["a/+/c", "#"])).unwrap(),
            Packet::Subscribe { filters: vec!["a/+/c", "#"] }
        );
        assert_eq!(parse(0xc0, &[]).unwrap(), Packet::Other(12));
        assert_eq!(parse(0x40, &[0, 1]).unwrap(), Packet::Other(4));
        // a long packet: a two-byte remaining length, read whole
        let big = publish_body(&[b'x'; 300], 1);
        let raw = read_all(&packet(0x32, &big), 1 << 20).unwrap().unwrap();
        assert_eq!(raw.bytes, packet(0x32, &big));
        // the end of the stream between packets
        assert!(read_all(&[], 100).unwrap().is_none());
    }

    #[test]
    fn hostile_packets_are_refused_with_a_reason() {
        // a remaining length of 268 MB: refused from the header, nothing allocated for it
        let huge = [0x30, 0xff, 0xff, 0xff, 0x7f];
        assert!(matches!(
            read_all(&huge, 1 << 20),
            Err(ReadError::Packet(PacketError::TooLarge { len: 268_435_455, max: 1_048_576 }))
        ));
        // a fifth length byte
        assert!(matches!(
            read_all(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], 1 << 20),
            Err(ReadError::Packet(PacketError::RemainingLength))
        ));
        // the body ends before its length
        assert!(matches!(
            read_all(&[0x30, 0x10, 0, 3, b'a'], 1 << 20),
            Err(ReadError::Packet(PacketError::Truncated(_)))
        ));
        assert!(matches!(read_all(&[0x30], 1 << 20), Err(ReadError::Packet(PacketError::Truncated(_)))));
        // a topic that is not UTF-8
        assert_eq!(parse(0x30, &publish_body(b"a/\xff\xfe", 0)), Err(PacketError::Utf8("PUBLISH topic")));
        assert_eq!(parse(0x30, &publish_body(b"a/\0", 0)), Err(PacketError::Malformed("a string holding U+0000")));
        // MQTT 5 and 3.1
        assert_eq!(parse(0x10, &connect_body(5, "c", None, None)), Err(PacketError::ProtocolLevel(5)));
        let mut v31 = s(b"MQIsdp");
        v31.extend([3, 2, 0, 30]);
        v31.extend(s(b"c"));
        assert_eq!(parse(0x10, &v31), Err(PacketError::ProtocolLevel(3)));
        // wildcards where a topic name is expected
        for topic in [&b"a/+/c"[..], b"a/#", b"#", b""] {
            assert!(matches!(parse(0x32, &publish_body(topic, 1)), Err(PacketError::Malformed(_))), "{topic:?}");
        }
        let will = connect_body(4, "c", Some(("u", "p")), Some("a/#"));
        assert_eq!(parse(0x10, &will), Err(PacketError::Malformed("wildcard in a Will topic")));
        // misplaced wildcards in a filter, an empty SUBSCRIBE, wrong flags
        for filter in ["a/#/b", "a/b#", "a+/b", ""] {
            assert!(matches!(parse(0x82, &subscribe_body(&[filter])), Err(PacketError::Malformed(_))), "{filter:?}");
        }
        assert!(parse(0x82, &subscribe_body(&[])).is_err());
        assert!(parse(0x80, &subscribe_body(&["a"])).is_err());
        assert!(parse(0x36, &publish_body(b"a", 1)).is_err(), "QoS 3");
        assert!(parse(0x32, &publish_body(b"a", 0)[..3]).is_err(), "no packet id");
        // packets a client never sends
        for first in [0x00, 0x20, 0x90, 0xb0, 0xd0, 0xf0] {
            assert!(matches!(parse(first, &[0, 0]), Err(PacketError::Malformed(_))), "{first:#x}");
        }
        // CONNECT: a password without a user name, trailing bytes, the reserved flag
        let mut body = connect_body(4, "c", None, None);
        body[7] |= 0x40;
        assert!(parse(0x10, &body).is_err());
        let mut body = connect_body(4, "c", None, None);
        body.push(0);
        assert!(parse(0x10, &body).is_err());
        let mut body = connect_body(4, "c", None, None);
        body[7] |= 0x01;
        assert!(parse(0x10, &body).is_err());
    }

    /// xorshift64*: reproducible noise without a dependency.
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn random_truncated_and_corrupted_bytes_never_panic() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut noise = Noise(0x5eed_1234_abcd_0001);
        let valid = [
            packet(
                0x10,
                &connect_body(4, "sightline-edge-a", Some(("a", "pw")), Some("sightline/v1/s/agent/a/status")),
            ),
            packet(0x32, &publish_body(b"sightline/v1/s/c/sighting", 1)),
            packet(0x82, &subscribe_body(&["sightline/v1/+/+/sighting", "#"])),
        ];
        let mut parsed = 0;
        for round in 0..20_000 {
            let bytes = match round % 4 {
                // pure noise, any first byte
                0 => {
                    let n = (noise.next() % 64) as usize;
                    noise.bytes(n)
                }
                // a valid packet cut short
                1 => {
                    let p = &valid[round % valid.len()];
                    p[..(noise.next() as usize) % p.len()].to_vec()
                }
                // a valid packet with a few bytes flipped
                2 => {
                    let mut p = valid[round % valid.len()].clone();
                    for _ in 0..1 + noise.next() % 4 {
                        let at = (noise.next() as usize) % p.len();
                        p[at] ^= noise.next() as u8 | 1;
                    }
                    p
                }
                // a plausible header over a noise body
                _ => {
                    let first = [0x10, 0x30, 0x32, 0x34, 0x82][round % 5];
                    let n = (noise.next() % 40) as usize;
                    packet(first, &noise.bytes(n))
                }
            };
            let _ = fixed_header(&bytes);
            if let Some((&first, body)) = bytes.split_first() {
                let _ = parse(first, body);
            }
            if let Ok(Some(raw)) = rt.block_on(read_packet(&mut &bytes[..], 1024))
                && raw.parse().is_ok()
            {
                parsed += 1;
            }
        }
        // the intact ones among the corrupted and the cut-off still parse
        assert!(parsed > 0);
    }
}
