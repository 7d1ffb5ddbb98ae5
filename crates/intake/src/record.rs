//! A record on disk: a header of body length and CRC-32 of the body,
//! then the body (position, receive time, topic, payload). The CRC tells
//! a record torn by a crash mid-write from a whole one.
//!
//! ```text
//! u32 LE body length | u32 LE crc32(body) | u64 LE pos | i64 LE received_at
//!   | u16 LE topic length | topic | payload
//! ```
use crate::Record;
use bytes::Bytes;
use std::io::Read;

const HEADER: usize = 8;
const FIXED: usize = 8 + 8 + 2;
/// Larger than any MQTT packet the front end accepts; a length beyond it
/// is garbage, not a record.
pub const MAX_BODY: usize = 1 << 20;

pub fn encode(r: &Record, out: &mut Vec<u8>) {
    let topic = r.topic.as_bytes();
    let topic_len = topic.len().min(usize::from(u16::MAX));
    let body_len = FIXED + topic_len + r.payload.len();
    let start = out.len();
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&r.pos.to_le_bytes());
    out.extend_from_slice(&r.received_at.to_le_bytes());
    out.extend_from_slice(&(topic_len as u16).to_le_bytes());
    out.extend_from_slice(&topic[..topic_len]);
    out.extend_from_slice(&r.payload);
    let crc = crc32fast::hash(&out[start + HEADER..]);
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// What reading the next record found.
#[derive(Debug)]
pub enum Next {
    Record(Record, usize),
    /// Clean end of the file.
    End,
    /// A partial or damaged record: where a crash cut the last write.
    Torn,
}

/// Reads one record; the `usize` with a record is its size on disk.
pub fn read(r: &mut impl Read) -> std::io::Result<Next> {
    let mut head = [0u8; HEADER];
    match read_full(r, &mut head)? {
        0 => return Ok(Next::End),
        n if n < HEADER => return Ok(Next::Torn),
        _ => {}
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if !(FIXED..=MAX_BODY).contains(&len) {
        return Ok(Next::Torn);
    }
    let mut body = vec![0u8; len];
    if read_full(r, &mut body)? < len || crc32fast::hash(&body) != crc {
        return Ok(Next::Torn);
    }
    let pos = u64::from_le_bytes(body[0..8].try_into().unwrap_or_default());
    let received_at = i64::from_le_bytes(body[8..16].try_into().unwrap_or_default());
    let topic_len = usize::from(u16::from_le_bytes([body[16], body[17]]));
    if FIXED + topic_len > len {
        return Ok(Next::Torn);
    }
    let Ok(topic) = std::str::from_utf8(&body[FIXED..FIXED + topic_len]) else {
        return Ok(Next::Torn);
    };
    let topic = topic.to_string();
    let payload = Bytes::copy_from_slice(&body[FIXED + topic_len..]);
    Ok(Next::Record(
        Record {
            pos,
            received_at,
            topic,
            payload,
            key: None,
        },
        HEADER + len,
    ))
}

/// Reads until `buf` is full or the input ends; returns how much it read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pos: u64, payload: &str) -> Record {
        Record {
            pos,
            received_at: 1_700_000_000_000 + pos as i64,
            topic: format!("eldercare/v1/dev-{pos}/vitals"),
            payload: Bytes::from(payload.to_string()),
            key: None,
        }
    }

    #[test]
    fn records_round_trip_and_a_cut_or_flipped_one_is_torn() {
        let mut buf = Vec::new();
        encode(&rec(1, "{\"hr\":70}"), &mut buf);
        encode(&rec(2, ""), &mut buf);
        let mut r = &buf[..];
        let Next::Record(a, n) = read(&mut r).unwrap() else {
            panic!("first record")
        };
        assert_eq!(a, rec(1, "{\"hr\":70}"));
        let Next::Record(b, m) = read(&mut r).unwrap() else {
            panic!("second record")
        };
        assert_eq!(b, rec(2, ""));
        assert_eq!(n + m, buf.len());
        assert!(matches!(read(&mut r).unwrap(), Next::End));

        for cut in 1..n {
            let mut r = &buf[..cut];
            assert!(matches!(read(&mut r).unwrap(), Next::Torn), "cut at {cut}");
        }
        let mut flipped = buf.clone();
        flipped[20] ^= 0x40;
        assert!(matches!(read(&mut &flipped[..]).unwrap(), Next::Torn));
    }
}
