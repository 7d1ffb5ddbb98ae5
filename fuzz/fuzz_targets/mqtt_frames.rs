//! The MQTT front end's read path (`crates/broker/src/guard.rs` and
//! `frame.rs`) over an arbitrary byte stream from a device socket: frame
//! with `mqttbytes::check`, look at the first frame's type and protocol
//! level, parse each frame with `v4::Packet::read`, and check the topics
//! it names. The input is the whole stream, so one input carries many
//! frames; the loop stops where the front end would close the connection.
#![no_main]

use bytes::BytesMut;
use eldercare_protocol::topic_device_id;
use libfuzzer_sys::fuzz_target;
use rumqttc::mqttbytes::{self, v4::Packet};

/// The front end's default limits (`max_connect_bytes`,
/// `max_packet_bytes` in crates/broker/src/settings.rs).
const MAX_CONNECT: usize = 64 * 1024;
const MAX_PACKET: usize = 256 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut max = MAX_CONNECT;
    loop {
        let mut frame = match mqttbytes::check(buf.iter(), max) {
            Ok(h) => buf.split_to(h.frame_length()),
            // Waiting for more bytes at the end of the stream, or a bad
            // fixed header that closes the connection: done either way.
            Err(_) => return,
        };
        // Frames are already within the limit when they are parsed.
        if max == MAX_CONNECT {
            max = MAX_PACKET;
            if frame.first().map(|b| b >> 4) != Some(1) {
                return;
            }
            if protocol_level(&frame) == Some(5) {
                // Refused with a CONNACK before any parsing.
                return;
            }
            let Ok(Packet::Connect(connect)) = Packet::read(&mut frame, usize::MAX) else {
                return;
            };
            if let Some(will) = &connect.last_will {
                let _ = topic_device_id(&will.topic);
            }
            continue;
        }
        let Ok(packet) = Packet::read(&mut frame, usize::MAX) else {
            return;
        };
        match &packet {
            Packet::Publish(p) => {
                let _ = topic_device_id(&p.topic);
            }
            Packet::Subscribe(s) => {
                for f in &s.filters {
                    let _ = topic_device_id(&f.path);
                }
            }
            Packet::Unsubscribe(u) => {
                for t in &u.topics {
                    let _ = topic_device_id(t);
                }
            }
            _ => {}
        }
    }
});

/// The protocol level byte of a CONNECT frame (4 for 3.1.1, 5 for MQTT 5).
/// A copy of `frame::protocol_level` in the broker crate, which this crate
/// does not build: keep the two the same.
fn protocol_level(frame: &[u8]) -> Option<u8> {
    // Fixed header: one type byte, then a 1–4 byte variable-length integer.
    let len_bytes = frame.iter().skip(1).take(4).position(|b| b & 0x80 == 0)? + 1;
    let body = frame.get(1 + len_bytes..)?;
    let name_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2 + name_len).copied()
}
