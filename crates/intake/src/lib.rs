//! The intake log: every device message is appended here, and made
//! durable, before the device gets its PUBACK and before anything acts
//! on it. A message the server has acknowledged is therefore on disk:
//! after a crash (`kill -9`, power loss) the server replays what is
//! durable but not yet processed.
//!
//! ```text
//! MQTT sessions --append--> [urgent | routine queues] --writer thread-->
//!    Journal::append (one write + one fsync per group of messages)
//!       --> Durable resolves (PUBACK)  --> Record to the ingest pipeline
//! ```
//!
//! - [`Appender`]: what the MQTT front end holds. Two lanes: SOS and fall
//!   events ([`Lane::Urgent`]) jump ahead of queued routine telemetry, and
//!   only routine telemetry waits for room (back-pressure).
//! - [`Journal`]: where records are kept: append a group, the durable
//!   position, replay from a position, release what is processed.
//!   [`FileJournal`] keeps segment files in the data directory; a cluster
//!   puts a replicated log behind the same four calls.
//! - [`Intake`]: the writer thread between the two, doing group commit:
//!   whatever arrived while the previous fsync ran is written and synced
//!   together, so the wait for durability is bounded by about one fsync
//!   and throughput does not fall with it.
#![forbid(unsafe_code)]

mod file;
mod record;
mod writer;

pub use file::FileJournal;
pub use writer::{Intake, IntakeConfig};

use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::oneshot;

/// Milliseconds since the Unix epoch, UTC.
pub type EpochMs = i64;

/// One device message as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its place in the log: 1, 2, 3, ... with no gap.
    pub pos: u64,
    /// Server time it was received (written), so a replay judges it at
    /// the time it arrived, not at the time of the replay.
    pub received_at: EpochMs,
    pub topic: String,
    pub payload: Bytes,
    /// The elder the sending device belongs to, when the front end knows
    /// it: a cluster's log is partitioned by it. Not kept by a
    /// [`FileJournal`] (a single node has one partition).
    pub key: Option<std::sync::Arc<str>>,
}

/// Which queue a message waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// SOS buttons and fall detectors: written before any queued
    /// telemetry, and never shed.
    Urgent,
    /// Everything else: waits for room when the log is behind, and a
    /// QoS 0 message may be shed then.
    Routine,
}

impl Lane {
    /// `eldercare/v1/<device>/event` (and its protobuf form,
    /// `.../event/pb`) carries SOS and falls.
    pub fn of_topic(topic: &str) -> Lane {
        if topic.ends_with("/event") || topic.ends_with("/event/pb") {
            Lane::Urgent
        } else {
            Lane::Routine
        }
    }
}

/// How hard an append is kept before it counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Written and fsynced: survives a crash of the process and of the
    /// machine.
    #[default]
    Fsync,
    /// Written, not synced: survives a crash of the process (the kernel
    /// still has it), not a power loss.
    None,
}

impl Durability {
    pub fn parse(s: &str) -> Option<Durability> {
        match s {
            "fsync" => Some(Durability::Fsync),
            "none" => Some(Durability::None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::None => "none",
        }
    }
}

/// The log no longer takes messages (the server is stopping, or the
/// disk failed this group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the intake log did not keep the message")]
pub struct Closed;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryAppendError {
    #[error("the intake log's routine queue is full")]
    Full,
    #[error(transparent)]
    Closed(#[from] Closed),
}

/// Resolves once the appended message is durable (then it may be
/// acknowledged), or with [`Closed`] if it was not kept. Handles resolve
/// in the order their messages were appended within a lane.
#[derive(Debug)]
pub struct Durable(oneshot::Receiver<Result<(), Closed>>);

impl Future for Durable {
    type Output = Result<(), Closed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Closed)))
    }
}

/// Where records are kept. The writer thread calls it; nothing else
/// does while the intake runs.
pub trait Journal: Send + 'static {
    /// Keeps `records` (positions consecutive, following
    /// [`Journal::durable_position`]); when it returns `Ok` they are as
    /// durable as configured. On `Err` none of them counts as kept.
    fn append(&mut self, records: &[Record]) -> std::io::Result<()>;
    /// Position of the newest kept record (0: none yet).
    fn durable_position(&self) -> u64;
    /// The kept records from position `from` on, in order.
    fn replay(
        &self,
        from: u64,
    ) -> std::io::Result<Box<dyn Iterator<Item = std::io::Result<Record>> + Send + '_>>;
    /// Everything up to `upto` is processed and stored elsewhere; the
    /// journal may forget it.
    fn release(&mut self, upto: u64) -> std::io::Result<()>;
}

/// What the MQTT front end holds to append messages; cheap to clone.
#[derive(Clone)]
pub struct Appender {
    shared: Arc<writer::Shared>,
}

impl Appender {
    /// Queues a message, waiting for room when it is routine and the log
    /// is behind (so devices slow down rather than memory grows); an
    /// urgent message never waits. The returned handle resolves once the
    /// message is durable.
    pub async fn append(
        &self,
        lane: Lane,
        key: Option<std::sync::Arc<str>>,
        topic: String,
        payload: Bytes,
    ) -> Result<Durable, Closed> {
        let permit = match lane {
            Lane::Urgent => None,
            Lane::Routine => Some(
                self.shared
                    .room
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| Closed)?,
            ),
        };
        self.shared.push(lane, key, topic, payload, permit)
    }

    /// As [`Appender::append`], but a routine message finding the queue
    /// full is not queued: [`TryAppendError::Full`].
    pub fn try_append(
        &self,
        lane: Lane,
        key: Option<std::sync::Arc<str>>,
        topic: String,
        payload: Bytes,
    ) -> Result<Durable, TryAppendError> {
        let permit = match lane {
            Lane::Urgent => None,
            Lane::Routine => match self.shared.room.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(tokio::sync::TryAcquireError::NoPermits) => return Err(TryAppendError::Full),
                Err(tokio::sync::TryAcquireError::Closed) => return Err(Closed.into()),
            },
        };
        Ok(self.shared.push(lane, key, topic, payload, permit)?)
    }
}

#[cfg(test)]
mod tests {
    use super::Lane;

    #[test]
    fn sos_and_falls_take_the_urgent_lane_in_json_and_protobuf() {
        assert_eq!(Lane::of_topic("eldercare/v1/btn-1/event"), Lane::Urgent);
        assert_eq!(Lane::of_topic("eldercare/v1/btn-1/event/pb"), Lane::Urgent);
        assert_eq!(Lane::of_topic("eldercare/v1/band-1/vitals"), Lane::Routine);
        assert_eq!(
            Lane::of_topic("eldercare/v1/band-1/vitals/pb"),
            Lane::Routine
        );
    }
}
