//! MQTT 3.1.1 packets written by hand from the specification, for tests
//! that drive the server as a stranger's client would: nothing here
//! comes from the server's own code or from an MQTT library.
#![allow(dead_code)]

/// Remaining length (§2.2.3): 7 bits a byte, high bit set while more follow.
pub fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

/// A length-prefixed string (§1.5.3).
pub fn string(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// A packet: its first byte, the remaining length, the body.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    remaining_length(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

/// CONNECT (§3.1), clean session, with a login and optionally a QoS 1
/// last will (topic, message).
pub fn connect(
    client_id: &str,
    login: Option<(&str, &str)>,
    keep_alive_s: u16,
    will: Option<(&str, &str)>,
) -> Vec<u8> {
    let mut flags = 0b10;
    if will.is_some() {
        flags |= 0b100 | (1 << 3);
    }
    if login.is_some() {
        flags |= 0xc0;
    }
    let mut body = Vec::new();
    string(b"MQTT", &mut body);
    body.push(4);
    body.push(flags);
    body.extend_from_slice(&keep_alive_s.to_be_bytes());
    string(client_id.as_bytes(), &mut body);
    if let Some((topic, message)) = will {
        string(topic.as_bytes(), &mut body);
        string(message.as_bytes(), &mut body);
    }
    if let Some((user, pass)) = login {
        string(user.as_bytes(), &mut body);
        string(pass.as_bytes(), &mut body);
    }
    packet(0x10, &body)
}

/// PUBLISH (§3.3) at QoS 0 or 1 (the packet id only at QoS 1).
pub fn publish(topic: &str, qos: u8, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    string(topic.as_bytes(), &mut body);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// The DUP flag (§3.3.1.1) set on a PUBLISH: a redelivery.
pub fn redelivered(mut publish: Vec<u8>) -> Vec<u8> {
    publish[0] |= 0x08;
    publish
}

pub const PINGREQ: [u8; 2] = [0xc0, 0x00];
pub const PINGRESP: [u8; 2] = [0xd0, 0x00];
pub const DISCONNECT: [u8; 2] = [0xe0, 0x00];
