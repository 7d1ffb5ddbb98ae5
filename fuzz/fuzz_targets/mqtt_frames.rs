//! The MQTT listener's read path (`crates/broker`: `frame.rs`, `wire.rs`,
//! `terms.rs`, `conn.rs`) over an arbitrary byte stream from a device
//! socket: frame with `mqttbytes::check` as `FrameReader` does, read the
//! first frame as a CONNECT in the version it names (`Level`), settle its
//! terms, then read each following frame in that version, the way the
//! session does (a DISCONNECT of reason code alone included), and check
//! the topics it names. The input is the whole stream, so one input
//! carries many frames; the loop stops where the listener would close the
//! connection.
#![no_main]

use bytes::BytesMut;
use eldercare_broker::settings::MqttSettings;
use eldercare_broker::terms::{self, Asked};
use eldercare_broker::wire::{self, Level};
use eldercare_protocol::topic_device_id;
use libfuzzer_sys::fuzz_target;
use rumqttc::mqttbytes;
use rumqttd::protocol::Packet;

fuzz_target!(|data: &[u8]| {
    let settings = MqttSettings::default();
    let mut buf = BytesMut::from(data);
    let mut level = None;
    loop {
        let max = match level {
            None => settings.max_connect_bytes,
            Some(_) => settings.max_packet_bytes,
        };
        let mut frame = match mqttbytes::check(buf.iter(), max) {
            Ok(h) => buf.split_to(h.frame_length()),
            // Waiting for more bytes at the end of the stream, or a bad
            // fixed header that closes the connection: done either way.
            Err(_) => return,
        };
        let Some(l) = level else {
            if frame.first().map(|b| b >> 4) != Some(1) {
                return;
            }
            let Some(l) = Level::of_connect(&frame) else {
                return;
            };
            let Ok(Packet::Connect(c, props, will, will_props, _login)) =
                l.read(&mut frame, usize::MAX)
            else {
                return;
            };
            if let Some(w) = &will {
                let _ = topic_device_id(&String::from_utf8_lossy(&w.topic));
            }
            let asked = Asked {
                level: l,
                keep_alive: c.keep_alive,
                clean: c.clean_session,
                client_id: &c.client_id,
                props: props.as_ref(),
                will_props: will_props.as_ref(),
            };
            if terms::agree(asked, &settings, || "auto".into()).is_err() {
                return;
            }
            level = Some(l);
            continue;
        };
        let _ = wire::publish_qos_pkid(&frame);
        let Ok(packet) = l.read(&mut frame, usize::MAX) else {
            return;
        };
        match &packet {
            Packet::Publish(p, _) => {
                let _ = topic_device_id(&String::from_utf8_lossy(&p.topic));
            }
            Packet::Subscribe(s, _) => {
                for f in &s.filters {
                    let _ = topic_device_id(&f.path);
                }
            }
            Packet::Unsubscribe(u, _) => {
                for t in &u.filters {
                    let _ = topic_device_id(t);
                }
            }
            Packet::Connect(..) | Packet::Disconnect(..) => return,
            _ => {}
        }
    }
});
