//! MQTT 5 packets written and read by hand from the OASIS MQTT 5.0
//! specification, for what a stock client library cannot be made to send
//! (a topic alias the server never offered, an AUTH packet, a second
//! CONNECT, a PUBACK with its reason code alone) or cannot show (the
//! reason code and properties of a PUBACK). Nothing here comes from the
//! server's own code or from an MQTT library.
#![allow(dead_code)]

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Property identifiers (§2.2.2.2) used by the tests.
pub mod prop {
    pub const PAYLOAD_FORMAT: u8 = 0x01;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const SUBSCRIPTION_ID: u8 = 0x0b;
    pub const SESSION_EXPIRY: u8 = 0x11;
    pub const ASSIGNED_CLIENT_ID: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTH_METHOD: u8 = 0x15;
    pub const REQUEST_PROBLEM_INFO: u8 = 0x17;
    pub const WILL_DELAY: u8 = 0x18;
    pub const REASON_STRING: u8 = 0x1f;
    pub const RECEIVE_MAX: u8 = 0x21;
    pub const TOPIC_ALIAS_MAX: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAX_PACKET_SIZE: u8 = 0x27;
}

/// Packet types (§2.1.2).
pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const PUBREL: u8 = 6;
pub const PUBCOMP: u8 = 7;
pub const SUBACK: u8 = 9;
pub const UNSUBACK: u8 = 11;
pub const PINGRESP: u8 = 13;
pub const DISCONNECT: u8 = 14;

// The encodings MQTT 5 shares with 3.1.1: Variable Byte Integer
// (§1.5.5, 3.1.1's remaining length), UTF-8 string or binary data
// (§1.5.4, §1.5.6), a fixed header then the body.
#[path = "raw_mqtt.rs"]
mod v311;
pub use v311::{packet, remaining_length as vbi, string};

/// One property (§2.2.2.2), encoded by the type its identifier has.
#[derive(Debug, Clone, PartialEq)]
pub enum Prop {
    Byte(u8, u8),
    Two(u8, u16),
    Four(u8, u32),
    Vbi(u8, usize),
    Str(u8, String),
    Bin(u8, Vec<u8>),
    Pair(u8, String, String),
}

impl Prop {
    pub fn id(&self) -> u8 {
        match self {
            Prop::Byte(i, _)
            | Prop::Two(i, _)
            | Prop::Four(i, _)
            | Prop::Vbi(i, _)
            | Prop::Str(i, _)
            | Prop::Bin(i, _)
            | Prop::Pair(i, _, _) => *i,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        vbi(usize::from(self.id()), out);
        match self {
            Prop::Byte(_, v) => out.push(*v),
            Prop::Two(_, v) => out.extend_from_slice(&v.to_be_bytes()),
            Prop::Four(_, v) => out.extend_from_slice(&v.to_be_bytes()),
            Prop::Vbi(_, v) => vbi(*v, out),
            Prop::Str(_, s) => string(s.as_bytes(), out),
            Prop::Bin(_, b) => string(b, out),
            Prop::Pair(_, k, v) => {
                string(k.as_bytes(), out);
                string(v.as_bytes(), out);
            }
        }
    }
}

/// A property list with its length in front (§2.2.2.1).
pub fn props(list: &[Prop]) -> Vec<u8> {
    let mut body = Vec::new();
    for p in list {
        p.encode(&mut body);
    }
    let mut out = Vec::new();
    vbi(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

/// Reads a property list (§2.2.2); `None` when it is cut short or holds
/// an identifier the specification does not define.
pub fn parse_props(b: &[u8]) -> Option<(Vec<Prop>, usize)> {
    let (len, mut at) = read_vbi(b)?;
    let end = at.checked_add(len)?;
    if end > b.len() {
        return None;
    }
    let mut out = Vec::new();
    let u16_at = |i: usize| Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]));
    let str_at = |i: usize| -> Option<(Vec<u8>, usize)> {
        let n = usize::from(u16_at(i)?);
        Some((b.get(i + 2..i + 2 + n)?.to_vec(), i + 2 + n))
    };
    while at < end {
        let id = b[at];
        at += 1;
        let p = match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2a => {
                at += 1;
                Prop::Byte(id, *b.get(at - 1)?)
            }
            0x13 | 0x21 | 0x22 | 0x23 => {
                at += 2;
                Prop::Two(id, u16_at(at - 2)?)
            }
            0x02 | 0x11 | 0x18 | 0x27 => {
                let v = u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?);
                at += 4;
                Prop::Four(id, v)
            }
            0x0b => {
                let (v, n) = read_vbi(&b[at..])?;
                at += n;
                Prop::Vbi(id, v)
            }
            0x03 | 0x08 | 0x12 | 0x15 | 0x1a | 0x1c | 0x1f => {
                let (s, next) = str_at(at)?;
                at = next;
                Prop::Str(id, String::from_utf8(s).ok()?)
            }
            0x09 | 0x16 => {
                let (s, next) = str_at(at)?;
                at = next;
                Prop::Bin(id, s)
            }
            0x26 => {
                let (k, next) = str_at(at)?;
                let (v, next) = str_at(next)?;
                at = next;
                Prop::Pair(id, String::from_utf8(k).ok()?, String::from_utf8(v).ok()?)
            }
            _ => return None,
        };
        out.push(p);
    }
    (at == end).then_some((out, end))
}

fn read_vbi(b: &[u8]) -> Option<(usize, usize)> {
    let mut n = 0usize;
    for (i, byte) in b.iter().take(4).enumerate() {
        n |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((n, i + 1));
        }
    }
    None
}

/// A last will (§3.1.3.2-3): topic, payload and its properties.
pub struct Will<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub props: Vec<Prop>,
}

/// CONNECT (§3.1) at protocol level 5 with a user name and password.
pub fn connect(
    client_id: &str,
    login: Option<(&str, &str)>,
    keep_alive_s: u16,
    clean_start: bool,
    properties: &[Prop],
    will: Option<&Will<'_>>,
) -> Vec<u8> {
    let mut flags = 0u8;
    if clean_start {
        flags |= 0x02;
    }
    if will.is_some() {
        // Will flag, QoS 1.
        flags |= 0x04 | (1 << 3);
    }
    if login.is_some() {
        flags |= 0xc0;
    }
    let mut body = Vec::new();
    string(b"MQTT", &mut body);
    body.push(5);
    body.push(flags);
    body.extend_from_slice(&keep_alive_s.to_be_bytes());
    body.extend_from_slice(&props(properties));
    string(client_id.as_bytes(), &mut body);
    if let Some(w) = will {
        body.extend_from_slice(&props(&w.props));
        string(w.topic.as_bytes(), &mut body);
        string(w.payload, &mut body);
    }
    if let Some((user, pass)) = login {
        string(user.as_bytes(), &mut body);
        string(pass.as_bytes(), &mut body);
    }
    packet(0x10, &body)
}

/// PUBLISH (§3.3); the packet id only at QoS 1 and 2.
pub fn publish(topic: &str, qos: u8, pkid: u16, properties: &[Prop], payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    string(topic.as_bytes(), &mut body);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(&props(properties));
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// SUBSCRIBE (§3.8) to one filter with subscription options (its QoS in
/// the low bits).
pub fn subscribe(pkid: u16, properties: &[Prop], filter: &str, options: u8) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    body.extend_from_slice(&props(properties));
    string(filter.as_bytes(), &mut body);
    body.push(options);
    packet(0x82, &body)
}

/// UNSUBSCRIBE (§3.10) from one filter.
pub fn unsubscribe(pkid: u16, filter: &str) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    body.push(0);
    string(filter.as_bytes(), &mut body);
    packet(0xa2, &body)
}

/// PUBACK (§3.4) in its shortest form for the reason: remaining length 2
/// for success without one, 3 with the reason code alone (§3.4.2.1).
pub fn puback(pkid: u16, reason: Option<u8>) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    body.extend(reason);
    packet(0x40, &body)
}

/// PUBREL (§3.6), success.
pub fn pubrel(pkid: u16) -> Vec<u8> {
    packet(0x62, &pkid.to_be_bytes())
}

pub const PINGREQ: [u8; 2] = [0xc0, 0x00];
/// DISCONNECT, normal, in its shortest form (§3.14.2.1).
pub const DISCONNECT_NORMAL: [u8; 2] = [0xe0, 0x00];
/// DISCONNECT with its reason code alone, remaining length 1.
pub fn disconnect_with(reason: u8) -> Vec<u8> {
    vec![0xe0, 0x01, reason]
}

/// DISCONNECT with a reason code and properties.
pub fn disconnect_props(reason: u8, properties: &[Prop]) -> Vec<u8> {
    let mut body = vec![reason];
    body.extend_from_slice(&props(properties));
    packet(0xe0, &body)
}

/// One packet as read off the wire.
#[derive(Debug, Clone)]
pub struct Packet {
    pub first: u8,
    pub body: Vec<u8>,
    /// Its whole size on the wire (fixed header included).
    pub size: usize,
}

impl Packet {
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }

    /// CONNACK (§3.2): session present, reason code, properties.
    pub fn connack(&self) -> (bool, u8, Vec<Prop>) {
        assert_eq!(self.kind(), CONNACK, "not a CONNACK: {self:?}");
        let (p, _) = parse_props(&self.body[2..]).expect("CONNACK properties");
        (self.body[0] & 1 == 1, self.body[1], p)
    }

    /// PUBACK, PUBREC, PUBREL or PUBCOMP (§3.4-3.7): packet id, reason
    /// code (0 when left out), properties.
    pub fn ack(&self) -> (u16, u8, Vec<Prop>) {
        let pkid = u16::from_be_bytes([self.body[0], self.body[1]]);
        let reason = self.body.get(2).copied().unwrap_or(0);
        let props = if self.body.len() > 3 {
            parse_props(&self.body[3..]).expect("ack properties").0
        } else {
            Vec::new()
        };
        (pkid, reason, props)
    }

    /// DISCONNECT (§3.14): reason code (0 when left out), properties.
    pub fn disconnect(&self) -> (u8, Vec<Prop>) {
        assert_eq!(self.kind(), DISCONNECT, "not a DISCONNECT: {self:?}");
        let reason = self.body.first().copied().unwrap_or(0);
        let props = if self.body.len() > 1 {
            parse_props(&self.body[1..])
                .expect("DISCONNECT properties")
                .0
        } else {
            Vec::new()
        };
        (reason, props)
    }

    /// SUBACK or UNSUBACK (§3.9, §3.11): packet id, reason codes.
    pub fn suback(&self) -> (u16, Vec<u8>) {
        let pkid = u16::from_be_bytes([self.body[0], self.body[1]]);
        let (_, n) = parse_props(&self.body[2..]).expect("SUBACK properties");
        (pkid, self.body[2 + n..].to_vec())
    }

    /// PUBLISH (§3.3): topic, QoS, packet id, properties, payload.
    pub fn publish(&self) -> Incoming {
        assert_eq!(self.kind(), PUBLISH, "not a PUBLISH: {self:?}");
        let qos = (self.first >> 1) & 3;
        let n = usize::from(u16::from_be_bytes([self.body[0], self.body[1]]));
        let topic = String::from_utf8(self.body[2..2 + n].to_vec()).unwrap();
        let mut at = 2 + n;
        let pkid = if qos > 0 {
            at += 2;
            u16::from_be_bytes([self.body[at - 2], self.body[at - 1]])
        } else {
            0
        };
        let (props, len) = parse_props(&self.body[at..]).expect("PUBLISH properties");
        Incoming {
            topic,
            qos,
            pkid,
            props,
            payload: self.body[at + len..].to_vec(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Incoming {
    pub topic: String,
    pub qos: u8,
    pub pkid: u16,
    pub props: Vec<Prop>,
    pub payload: Vec<u8>,
}

/// The first property with identifier `id`.
pub fn find(props: &[Prop], id: u8) -> Option<&Prop> {
    props.iter().find(|p| p.id() == id)
}

/// A raw MQTT 5 connection to the server.
pub struct Client {
    pub sock: TcpStream,
    buf: Vec<u8>,
}

/// What a read ended with.
#[derive(Debug)]
pub enum Read {
    Packet(Packet),
    /// The server closed the socket (end of stream or reset).
    Closed,
    /// Nothing whole arrived within the wait.
    Quiet,
}

impl Client {
    pub async fn open(addr: &str) -> Client {
        Client {
            sock: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).await.unwrap();
    }

    /// Sends, and tolerates a socket the server already closed.
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.sock.write_all(bytes).await
    }

    /// The next packet, the socket closing, or nothing within `wait`.
    pub async fn read_within(&mut self, wait: Duration) -> Read {
        let until = tokio::time::Instant::now() + wait;
        loop {
            if let Some(p) = self.whole() {
                return Read::Packet(p);
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(until, self.sock.read(&mut chunk)).await {
                Err(_) => return Read::Quiet,
                Ok(Ok(0)) | Ok(Err(_)) => return Read::Closed,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next packet, within the harness's deadline.
    pub async fn next(&mut self) -> Packet {
        match self.read_within(crate::support::DEADLINE).await {
            Read::Packet(p) => p,
            other => panic!("expected a packet from the server, got {other:?}"),
        }
    }

    /// The next packet of `kind`, skipping others (recorded in `seen`).
    pub async fn next_of(&mut self, kind: u8, seen: &mut Vec<Packet>) -> Packet {
        loop {
            let p = self.next().await;
            if p.kind() == kind {
                return p;
            }
            seen.push(p);
        }
    }

    /// Reads until the server closes the socket; the packets before.
    pub async fn until_closed(&mut self) -> Vec<Packet> {
        let mut seen = Vec::new();
        loop {
            match self.read_within(crate::support::DEADLINE).await {
                Read::Packet(p) => seen.push(p),
                Read::Closed => return seen,
                Read::Quiet => panic!("the server did not close the socket; it sent {seen:?}"),
            }
        }
    }

    /// One whole packet out of the buffer, if there is one.
    fn whole(&mut self) -> Option<Packet> {
        let first = *self.buf.first()?;
        let (len, n) = read_vbi(self.buf.get(1..)?)?;
        let size = 1 + n + len;
        if self.buf.len() < size {
            return None;
        }
        let body = self.buf[1 + n..size].to_vec();
        self.buf.drain(..size);
        Some(Packet { first, body, size })
    }
}
