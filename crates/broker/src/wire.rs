//! The device's side of the wire in its own protocol version: MQTT 3.1.1
//! or MQTT 5, read and written with the embedded broker's codec (one
//! packet type for both versions, and the same packets the broker's
//! in-process links take), and the answers the listener gives itself
//! (CONNACK, PUBACK, SUBACK, DISCONNECT) in the version the device spoke.
//!
//! rumqttd's codec panics on a reason code its version lacks, so every
//! code the listener sends goes through [`Level`], which maps it.
use bytes::{Bytes, BytesMut};
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::v5::V5;
use rumqttd::protocol::{
    ConnAck, ConnAckProperties, ConnectReturnCode, Disconnect, DisconnectProperties,
    DisconnectReasonCode, Packet, Protocol, PubAck, PubAckProperties, PubAckReason, PubComp,
    PubCompReason, PubRec, PubRecProperties, PubRecReason, QoS, SubAck, SubscribeReasonCode,
    UnsubAck, UnsubAckReason,
};

/// Why a message is refused, in the reason codes PUBACK and PUBREC share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// 0x87: another device's topic.
    NotAuthorized,
    /// 0x99: a payload the backend cannot take.
    PayloadFormatInvalid,
}

/// The protocol version a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    /// MQTT 5.
    V5,
}

/// A CONNACK code in terms of the listener's decisions; each version
/// says it its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnCode {
    Accepted,
    BadCredentials,
    NotAuthorized,
    /// The registry cannot answer now: retry later.
    Unavailable,
    /// MQTT 5 only (3.1.1 has no such code; it gets `NotAuthorized`).
    BadAuthMethod,
    /// MQTT 5 only: a CONNECT the listener cannot take (e.g. a will with
    /// QoS 2 was fine, but a malformed property is not).
    ProtocolError,
}

impl Level {
    /// The level of a CONNECT frame; `None` for one neither 3.1.1 nor 5.
    pub fn of_connect(frame: &[u8]) -> Option<Level> {
        match crate::frame::protocol_level(frame)? {
            4 => Some(Level::V4),
            5 => Some(Level::V5),
            _ => None,
        }
    }

    pub fn is_v5(self) -> bool {
        self == Level::V5
    }

    /// Reads one whole frame.
    pub fn read(self, frame: &mut BytesMut, max: usize) -> Result<Packet, String> {
        // Only what a client may send reaches the codec: rumqttd's MQTT 5
        // reader panics on a CONNACK or UNSUBACK with a body.
        let kind = crate::frame::packet_type(frame);
        if !matches!(kind, 1 | 3..=8 | 10 | 12 | 14) {
            return Err(format!("packet type {kind} is not sent by a client"));
        }
        if self == Level::V5 && frame[..] == [0xe0, 0x01, frame.get(2).copied().unwrap_or(0)] {
            // A DISCONNECT with its reason code alone: MQTT 5 §3.14.2.2.1
            // lets the property length go when the remaining length is
            // below 2, and clients do; rumqttd's codec wants it.
            frame[1] = 0x02;
            frame.extend_from_slice(&[0x00]);
        }
        match self {
            Level::V4 => V4.read_mut(frame, max),
            Level::V5 => V5.read_mut(frame, max),
        }
        .map_err(|e| format!("{e:?}"))
    }

    /// Writes a packet; properties are dropped for 3.1.1 by the codec.
    pub fn write(self, packet: Packet, out: &mut BytesMut) -> Result<(), String> {
        match self {
            Level::V4 => V4.write(packet, out),
            Level::V5 => V5.write(packet, out),
        }
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
    }

    /// Encodes a packet the listener built itself (it cannot fail: the
    /// codes are mapped to this version first).
    pub fn encode(self, packet: Packet) -> BytesMut {
        let mut out = BytesMut::new();
        if let Err(e) = self.write(packet, &mut out) {
            // Only packets the broker sent can fail, and those are
            // written with `write`.
            tracing::error!(error = %e, "An MQTT packet of the listener could not be encoded.");
            out.clear();
        }
        out
    }

    pub fn connack(
        self,
        code: ConnCode,
        session_present: bool,
        properties: Option<ConnAckProperties>,
    ) -> BytesMut {
        let code = match (self, code) {
            (_, ConnCode::Accepted) => ConnectReturnCode::Success,
            (Level::V4, ConnCode::BadCredentials) => ConnectReturnCode::BadUserNamePassword,
            (Level::V4, ConnCode::Unavailable) => ConnectReturnCode::ServiceUnavailable,
            (Level::V4, _) => ConnectReturnCode::NotAuthorized,
            (Level::V5, ConnCode::BadCredentials) => ConnectReturnCode::BadUserNamePassword,
            (Level::V5, ConnCode::NotAuthorized) => ConnectReturnCode::NotAuthorized,
            (Level::V5, ConnCode::Unavailable) => ConnectReturnCode::ServerUnavailable,
            (Level::V5, ConnCode::BadAuthMethod) => ConnectReturnCode::BadAuthenticationMethod,
            (Level::V5, ConnCode::ProtocolError) => ConnectReturnCode::ProtocolError,
        };
        let properties = if self.is_v5() { properties } else { None };
        self.encode(Packet::ConnAck(
            ConnAck {
                session_present: session_present && code == ConnectReturnCode::Success,
                code,
            },
            properties,
        ))
    }

    /// A PUBACK; a refusal (and its text) only in MQTT 5, where a refused
    /// message is not acknowledged as if it were taken.
    pub fn puback(self, pkid: u16, refused: Option<(Why, Option<String>)>) -> BytesMut {
        let Some((why, text)) = refused.filter(|_| self.is_v5()) else {
            return BytesMut::from(&crate::frame::puback(pkid)[..]);
        };
        let reason = match why {
            Why::NotAuthorized => PubAckReason::NotAuthorized,
            Why::PayloadFormatInvalid => PubAckReason::PayloadFormatInvalid,
        };
        let properties = text.map(|t| PubAckProperties {
            reason_string: Some(t),
            user_properties: Vec::new(),
        });
        self.encode(Packet::PubAck(PubAck { pkid, reason }, properties))
    }

    /// A PUBREC (QoS 2); a refusal only in MQTT 5.
    pub fn pubrec(self, pkid: u16, refused: Option<(Why, Option<String>)>) -> BytesMut {
        let (reason, properties) = match refused.filter(|_| self.is_v5()) {
            None => (PubRecReason::Success, None),
            Some((why, text)) => (
                match why {
                    Why::NotAuthorized => PubRecReason::NotAuthorized,
                    Why::PayloadFormatInvalid => PubRecReason::PayloadFormatInvalid,
                },
                text.map(|t| PubRecProperties {
                    reason_string: Some(t),
                    user_properties: Vec::new(),
                }),
            ),
        };
        self.encode(Packet::PubRec(PubRec { pkid, reason }, properties))
    }

    /// A PUBCOMP; `known`: the packet id was waiting for its PUBREL (MQTT 5
    /// says when it was not).
    pub fn pubcomp(self, pkid: u16, known: bool) -> BytesMut {
        let reason = if known || !self.is_v5() {
            PubCompReason::Success
        } else {
            PubCompReason::PacketIdentifierNotFound
        };
        self.encode(Packet::PubComp(PubComp { pkid, reason }, None))
    }

    /// A SUBACK granting these QoS levels.
    pub fn suback(self, pkid: u16, granted: &[u8]) -> BytesMut {
        let return_codes = granted
            .iter()
            .map(|q| {
                SubscribeReasonCode::Success(if *q == 0 {
                    QoS::AtMostOnce
                } else {
                    QoS::AtLeastOnce
                })
            })
            .collect();
        self.encode(Packet::SubAck(SubAck { pkid, return_codes }, None))
    }

    /// An UNSUBACK; `had`: whether each filter was subscribed (MQTT 5 says
    /// so; 3.1.1 has no reasons).
    pub fn unsuback(self, pkid: u16, had: &[bool]) -> BytesMut {
        let reasons = had
            .iter()
            .map(|h| {
                if *h {
                    UnsubAckReason::Success
                } else {
                    UnsubAckReason::NoSubscriptionExisted
                }
            })
            .collect();
        self.encode(Packet::UnsubAck(UnsubAck { pkid, reasons }, None))
    }

    /// A command for the device, at `qos` (0 or 1) with packet id `pkid`.
    pub fn command(self, topic: &[u8], payload: &Bytes, qos: u8, pkid: u16) -> BytesMut {
        // Written with rumqttc's codec: rumqttd's keeps a PUBLISH's QoS
        // and packet id to itself.
        let mut out = BytesMut::new();
        let written = match self {
            Level::V4 => {
                let mut p = rumqttc::mqttbytes::v4::Publish::new(
                    String::from_utf8_lossy(topic),
                    qos_of(qos),
                    payload.to_vec(),
                );
                p.pkid = pkid;
                rumqttc::mqttbytes::v4::Packet::Publish(p)
                    .write(&mut out, usize::MAX)
                    .is_ok()
            }
            Level::V5 => {
                let mut p = rumqttc::v5::mqttbytes::v5::Publish::new(
                    String::from_utf8_lossy(topic),
                    qos_of_v5(qos),
                    payload.clone(),
                    None,
                );
                p.pkid = pkid;
                rumqttc::v5::mqttbytes::v5::Packet::Publish(p)
                    .write(&mut out, None)
                    .is_ok()
            }
        };
        if !written {
            out.clear();
        }
        out
    }

    /// A SUBACK refusing every filter: "not authorized" in MQTT 5, the
    /// plain failure code in 3.1.1.
    pub fn suback_refused(self, pkid: u16, filters: usize) -> BytesMut {
        let code = match self {
            Level::V4 => SubscribeReasonCode::Failure,
            Level::V5 => SubscribeReasonCode::NotAuthorized,
        };
        self.encode(Packet::SubAck(
            SubAck {
                pkid,
                return_codes: vec![code; filters],
            },
            None,
        ))
    }

    /// The DISCONNECT the listener sends before it closes a session: only
    /// MQTT 5 has one (3.1.1 just closes the socket). Its reason string is
    /// left out when it would make the packet larger than the device
    /// takes (`max_packet`, MQTT 5 §3.14.2.2.3).
    pub fn disconnect(
        self,
        reason: DisconnectReasonCode,
        text: &str,
        max_packet: Option<u32>,
    ) -> Option<BytesMut> {
        if !self.is_v5() {
            return None;
        }
        let build = |text: Option<&str>| {
            self.encode(Packet::Disconnect(
                Disconnect {
                    reason_code: reason,
                },
                text.map(|t| DisconnectProperties {
                    session_expiry_interval: None,
                    reason_string: Some(t.to_string()),
                    user_properties: Vec::new(),
                    server_reference: None,
                }),
            ))
        };
        let full = build(Some(text));
        Some(match max_packet {
            Some(m) if full.len() > m as usize => build(None),
            _ => full,
        })
    }
}

fn qos_of(q: u8) -> rumqttc::mqttbytes::QoS {
    if q == 0 {
        rumqttc::mqttbytes::QoS::AtMostOnce
    } else {
        rumqttc::mqttbytes::QoS::AtLeastOnce
    }
}

fn qos_of_v5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    if q == 0 {
        rumqttc::v5::mqttbytes::QoS::AtMostOnce
    } else {
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce
    }
}

/// QoS and packet id of a PUBLISH frame (the codec keeps them to itself).
/// `None` when the frame is not a PUBLISH or is cut short.
pub fn publish_qos_pkid(frame: &[u8]) -> Option<(u8, u16)> {
    let first = *frame.first()?;
    if first >> 4 != crate::frame::PUBLISH {
        return None;
    }
    let qos = (first >> 1) & 0b11;
    if qos == 0 {
        return Some((0, 0));
    }
    let len_bytes = frame.iter().skip(1).take(4).position(|b| b & 0x80 == 0)? + 1;
    let body = frame.get(1 + len_bytes..)?;
    let topic_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let id = body.get(2 + topic_len..4 + topic_len)?;
    Some((qos, u16::from_be_bytes([id[0], id[1]])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_written_in_each_version_with_its_qos_and_packet_id() {
        let payload = Bytes::from_static(b"{}");
        for level in [Level::V4, Level::V5] {
            let f = level.command(b"eldercare/v1/btn-1/cmd", &payload, 1, 42);
            assert_eq!(publish_qos_pkid(&f), Some((1, 42)), "{level:?}");
            let mut b = f.clone();
            match level.read(&mut b, 1024) {
                Ok(Packet::Publish(p, _)) => assert_eq!(&p.payload[..], b"{}"),
                other => panic!("{other:?}"),
            }
        }
        let f = Level::V4.command(b"t", &payload, 0, 0);
        assert_eq!(&f[..], &[0x30, 5, 0, 1, b't', b'{', b'}']);
    }

    #[test]
    fn qos_and_packet_id_are_read_from_a_publish_frame() {
        // QoS 1, topic "a/b", id 0x0102, payload "x".
        let f = [0x32, 0x08, 0, 3, b'a', b'/', b'b', 1, 2, b'x'];
        assert_eq!(publish_qos_pkid(&f), Some((1, 0x0102)));
        assert_eq!(
            publish_qos_pkid(&[0x30, 0x04, 0, 1, b'a', b'x']),
            Some((0, 0))
        );
        assert_eq!(publish_qos_pkid(&[0x32, 0x03, 0, 3, b'a']), None);
        assert_eq!(publish_qos_pkid(&[0xc0, 0x00]), None);
    }

    #[test]
    fn what_only_a_server_sends_is_refused_before_the_codec() {
        // A CONNACK, SUBACK, UNSUBACK or PINGRESP from a device, with a
        // body: rumqttd's MQTT 5 reader would panic on the first and third.
        for frame in [
            &[0x20, 0x03, 0x00, 0x00, 0x00][..],
            &[0x90, 0x03, 0x00, 0x01, 0x00][..],
            &[0xb0, 0x03, 0x00, 0x01, 0x00][..],
            &[0xd0, 0x00][..],
            &[0xf0, 0x00][..],
        ] {
            for level in [Level::V4, Level::V5] {
                assert!(
                    level.read(&mut BytesMut::from(frame), 1024).is_err(),
                    "{frame:?}"
                );
            }
        }
    }

    #[test]
    fn an_mqtt5_disconnect_with_its_reason_code_alone_is_read() {
        use rumqttd::protocol::DisconnectReasonCode as R;
        for (bytes, want) in [
            (&[0xe0, 0x00][..], R::NormalDisconnection),
            (&[0xe0, 0x01, 0x00][..], R::NormalDisconnection),
            (&[0xe0, 0x01, 0x04][..], R::DisconnectWithWillMessage),
            (&[0xe0, 0x02, 0x04, 0x00][..], R::DisconnectWithWillMessage),
        ] {
            match Level::V5.read(&mut BytesMut::from(bytes), 1024) {
                Ok(Packet::Disconnect(d, _)) => assert_eq!(d.reason_code, want, "{bytes:?}"),
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn refusals_are_said_in_each_version() {
        assert_eq!(
            &Level::V4.connack(ConnCode::BadCredentials, false, None)[..],
            &[0x20, 2, 0, 4]
        );
        assert_eq!(
            &Level::V4.connack(ConnCode::BadAuthMethod, false, None)[..],
            &[0x20, 2, 0, 5]
        );
        assert_eq!(
            &Level::V4.connack(ConnCode::Unavailable, true, None)[..],
            &[0x20, 2, 0, 3]
        );
        let v5 = Level::V5.connack(ConnCode::Unavailable, false, None);
        assert_eq!(&v5[..4], &[0x20, 3, 0, 0x88]);
        let refused = Some((Why::NotAuthorized, None));
        assert_eq!(&Level::V4.puback(7, refused.clone())[..], &[0x40, 2, 0, 7]);
        let p = Level::V5.puback(7, refused.clone());
        assert_eq!(&p[..5], &[0x40, 4, 0, 7, 0x87]);
        assert_eq!(&Level::V4.pubrec(7, refused.clone())[..], &[0x50, 2, 0, 7]);
        assert_eq!(&Level::V5.pubrec(7, refused)[..5], &[0x50, 4, 0, 7, 0x87]);
        assert_eq!(&Level::V5.pubrec(7, None)[..], &[0x50, 2, 0, 7]);
        assert_eq!(&Level::V4.pubcomp(7, false)[..], &[0x70, 2, 0, 7]);
        assert_eq!(&Level::V5.pubcomp(7, false)[..5], &[0x70, 4, 0, 7, 0x92]);
        assert_eq!(&Level::V4.suback(9, &[1, 0])[..], &[0x90, 4, 0, 9, 1, 0]);
        assert_eq!(&Level::V4.unsuback(9, &[true])[..], &[0xb0, 2, 0, 9]);
        assert_eq!(
            &Level::V5.unsuback(9, &[false])[..],
            &[0xb0, 4, 0, 9, 0, 0x11]
        );
        assert_eq!(
            &Level::V4.suback_refused(9, 2)[..],
            &[0x90, 4, 0, 9, 0x80, 0x80]
        );
        assert_eq!(
            &Level::V5.suback_refused(9, 1)[..],
            &[0x90, 4, 0, 9, 0, 0x87]
        );
        assert!(
            Level::V4
                .disconnect(DisconnectReasonCode::KeepAliveTimeout, "x", None)
                .is_none()
        );
        let d = Level::V5
            .disconnect(DisconnectReasonCode::KeepAliveTimeout, "x", None)
            .unwrap();
        assert_eq!(&d[..3], &[0xe0, d.len() as u8 - 2, 0x8d]);
        let short = Level::V5
            .disconnect(DisconnectReasonCode::KeepAliveTimeout, "x", Some(4))
            .unwrap();
        assert!(
            short.len() <= 4,
            "no reason string beyond the device's size: {short:?}"
        );
    }
}
