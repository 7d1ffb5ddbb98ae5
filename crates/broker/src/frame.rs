//! MQTT frames off the wire: whole packets read from a device within a
//! per-packet size limit and a byte budget shared by all connections,
//! and the few fixed packets the guard writes itself.
use bytes::{BufMut, BytesMut};
use rumqttc::mqttbytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Semaphore;

/// Bytes read from a stream at once, into the reader's own small buffer,
/// before any room is taken from the budget: an idle connection holds
/// none of it.
const SCRATCH: usize = 1024;
/// Bytes read at once into the frame when the rest of a larger frame is
/// known to be on its way (room for them is taken first).
const READ_CHUNK: usize = 16 * 1024;

pub const PINGREQ: [u8; 2] = [0xc0, 0x00];
pub const PINGRESP: [u8; 2] = [0xd0, 0x00];

pub fn connack(code: u8) -> [u8; 4] {
    [0x20, 0x02, 0x00, code]
}

pub fn puback(pkid: u16) -> [u8; 4] {
    let [hi, lo] = pkid.to_be_bytes();
    [0x40, 0x02, hi, lo]
}

/// The MQTT packet type of a frame (its first byte's upper half).
pub fn packet_type(frame: &[u8]) -> u8 {
    frame.first().map_or(0, |b| b >> 4)
}

pub const CONNECT: u8 = 1;
pub const PUBLISH: u8 = 3;
/// MQTT 5 AUTH.
pub const AUTH_TYPE: u8 = 15;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("a packet of {0} bytes, above the limit")]
    TooLarge(usize),
    #[error("not an MQTT packet: {0}")]
    Malformed(String),
    #[error("no room in the listener's buffer budget")]
    NoRoom,
}

/// Bytes that all connections together may hold in unfinished packets.
#[derive(Clone)]
pub struct Budget {
    sem: Arc<Semaphore>,
    total: usize,
    /// How long a connection may wait for room before it is closed.
    wait: Duration,
}

impl Budget {
    pub fn new(total: usize, wait: Duration) -> Budget {
        Budget {
            sem: Arc::new(Semaphore::new(total)),
            total,
            wait,
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.total - self.sem.available_permits()
    }
}

/// Reads whole frames from a device. Bytes are only read once the budget
/// has room for them; a frame announcing more than `max` bytes is refused
/// from its fixed header, before its body is read.
pub struct FrameReader {
    buf: BytesMut,
    /// Bytes read but not yet given room in `buf` (a call cancelled while
    /// waiting for room leaves them here for the next one).
    scratch: Box<[u8; SCRATCH]>,
    scratch_len: usize,
    /// Bytes taken from the budget: what `buf` holds, plus, during a read,
    /// the room read into.
    held: usize,
    budget: Budget,
    max: usize,
}

/// What the buffer holds.
enum Buffered {
    Frame(BytesMut),
    /// This many more bytes at least are needed for the next frame.
    Short(usize),
}

impl FrameReader {
    pub fn new(budget: Budget, max: usize) -> FrameReader {
        FrameReader {
            buf: BytesMut::new(),
            scratch: Box::new([0; SCRATCH]),
            scratch_len: 0,
            held: 0,
            budget,
            max,
        }
    }

    /// A new limit for the frames still to come (CONNECT has its own).
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    fn buffered(&mut self) -> Result<Buffered, FrameError> {
        match mqttbytes::check(self.buf.iter(), self.max) {
            Ok(h) => Ok(Buffered::Frame(self.buf.split_to(h.frame_length()))),
            Err(mqttbytes::Error::InsufficientBytes(n)) => Ok(Buffered::Short(n)),
            Err(mqttbytes::Error::PayloadSizeLimitExceeded(n)) => Err(FrameError::TooLarge(n)),
            Err(e) => Err(FrameError::Malformed(format!("{e:?}"))),
        }
    }

    /// The next whole frame; `None` at the end of the stream. Cancel safe:
    /// what was read stays buffered for the next call. Works on any byte
    /// stream (plain TCP or TLS): small reads land in the reader's own
    /// buffer first and take room only for what came.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
    ) -> Result<Option<BytesMut>, FrameError> {
        loop {
            if self.scratch_len > 0 {
                self.reserve(self.buf.len() + self.scratch_len).await?;
                self.buf
                    .extend_from_slice(&self.scratch[..self.scratch_len]);
                self.scratch_len = 0;
            }
            let short = match self.buffered()? {
                Buffered::Frame(f) => {
                    self.settle();
                    return Ok(Some(f));
                }
                Buffered::Short(n) => n,
            };
            if short <= SCRATCH {
                let n = rd.read(&mut self.scratch[..]).await?;
                if n == 0 {
                    return Ok(None);
                }
                self.scratch_len = n;
                continue;
            }
            // The rest of a large frame is on its way: room for it first.
            let window = short.min(READ_CHUNK);
            self.reserve(self.buf.len() + window).await?;
            self.buf.reserve(window);
            let read = rd.read_buf(&mut (&mut self.buf).limit(window)).await;
            self.settle();
            if read? == 0 {
                return Ok(None);
            }
        }
    }

    /// Takes room from the budget until `total` bytes are held.
    async fn reserve(&mut self, total: usize) -> Result<(), FrameError> {
        let Some(more) = total.checked_sub(self.held).filter(|m| *m > 0) else {
            return Ok(());
        };
        let n = u32::try_from(more).map_err(|_| FrameError::TooLarge(more))?;
        let permit = match self.budget.sem.clone().try_acquire_many_owned(n) {
            Ok(p) => p,
            Err(_) => {
                metrics::counter!("eldercare_mqtt_buffer_waits_total").increment(1);
                match tokio::time::timeout(
                    self.budget.wait,
                    self.budget.sem.clone().acquire_many_owned(n),
                )
                .await
                {
                    Ok(Ok(p)) => p,
                    _ => return Err(FrameError::NoRoom),
                }
            }
        };
        permit.forget();
        self.held += more;
        Ok(())
    }

    /// Gives back what the buffer no longer holds; an empty buffer that
    /// grew for a large frame is let go.
    fn settle(&mut self) {
        let keep = self.buf.len();
        if self.held > keep {
            self.budget.sem.add_permits(self.held - keep);
            self.held = keep;
        }
        if self.buf.is_empty() && self.buf.capacity() > 2 * READ_CHUNK {
            self.buf = BytesMut::new();
        }
    }
}

impl Drop for FrameReader {
    fn drop(&mut self) {
        self.budget.sem.add_permits(self.held);
    }
}

/// The protocol level byte of a CONNECT frame (4 for 3.1.1, 5 for MQTT 5).
pub fn protocol_level(frame: &[u8]) -> Option<u8> {
    // Fixed header: one type byte, then a 1–4 byte variable-length integer.
    let len_bytes = frame.iter().skip(1).take(4).position(|b| b & 0x80 == 0)? + 1;
    let body = frame.get(1 + len_bytes..)?;
    let name_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2 + name_len).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use tokio::net::tcp::OwnedReadHalf;

    /// A client socket and the server's read half (its write half kept
    /// open beside it).
    async fn pair() -> (TcpStream, OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        let (r, w) = s.into_split();
        (c, r, w)
    }

    #[tokio::test]
    async fn frames_are_split_and_the_budget_given_back() {
        let budget = Budget::new(64 * 1024, Duration::from_secs(1));
        let (mut c, mut r, _w) = pair().await;
        let mut fr = FrameReader::new(budget.clone(), 1024);
        // Two PINGREQs and half a PUBLISH in one write.
        c.write_all(&[0xc0, 0, 0xc0, 0, 0x30, 0x05, 0, 1])
            .await
            .unwrap();
        assert_eq!(&fr.next(&mut r).await.unwrap().unwrap()[..], &PINGREQ);
        assert_eq!(&fr.next(&mut r).await.unwrap().unwrap()[..], &PINGREQ);
        assert_eq!(budget.used(), 4, "only the half packet is held");
        c.write_all(&[b't', 0xff, 0xfe]).await.unwrap();
        let f = fr.next(&mut r).await.unwrap().unwrap();
        assert_eq!(&f[..], &[0x30, 0x05, 0, 1, b't', 0xff, 0xfe]);
        assert_eq!(budget.used(), 0);
        drop(c);
        assert!(fr.next(&mut r).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_frame_above_the_limit_is_refused_from_its_header() {
        let budget = Budget::new(64 * 1024, Duration::from_secs(1));
        let (mut c, mut r, _w) = pair().await;
        let mut fr = FrameReader::new(budget.clone(), 1024);
        // A CONNECT announcing 256 KiB: only its first bytes are sent.
        c.write_all(&[0x10, 0x80, 0x80, 0x10]).await.unwrap();
        match fr.next(&mut r).await {
            Err(FrameError::TooLarge(n)) => assert_eq!(n, 256 * 1024),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_full_budget_makes_a_reader_wait_then_gives_up() {
        // Room for a thousand bytes and one more.
        let budget = Budget::new(1001, Duration::from_millis(200));
        let (mut c1, mut r1, _w1) = pair().await;
        let (mut c2, mut r2, _w2) = pair().await;
        let mut a = FrameReader::new(budget.clone(), 64 * 1024);
        let mut b = FrameReader::new(budget.clone(), 64 * 1024);
        // `a` holds the first 1000 bytes of a 3003-byte frame.
        let mut big = vec![0x30, 0xb8, 0x17];
        big.extend(std::iter::repeat_n(0u8, 997));
        c1.write_all(&big).await.unwrap();
        let pending = tokio::time::timeout(Duration::from_millis(100), a.next(&mut r1)).await;
        assert!(pending.is_err(), "the frame is not whole");
        assert_eq!(budget.used(), 1000);
        // `b` needs room for the PINGREQ it read: not there.
        c2.write_all(&PINGREQ).await.unwrap();
        assert!(matches!(b.next(&mut r2).await, Err(FrameError::NoRoom)));
        drop(a);
        assert_eq!(budget.used(), 0, "a dropped reader gives its room back");
        // What `b` read is still there for its next call.
        assert_eq!(&b.next(&mut r2).await.unwrap().unwrap()[..], &PINGREQ);
    }

    #[test]
    fn protocol_levels_are_read_from_connect_frames() {
        let v4 = [0x10, 0x0c, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 0];
        assert_eq!(protocol_level(&v4), Some(4));
        let v5 = [
            0x10, 0x0d, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0, 0, 0,
        ];
        assert_eq!(protocol_level(&v5), Some(5));
        assert_eq!(protocol_level(&[0x10]), None);
        assert_eq!(puback(0x1234), [0x40, 2, 0x12, 0x34]);
    }
}
