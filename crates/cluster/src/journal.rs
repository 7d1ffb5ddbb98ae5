//! The intake log of a cluster member: each group of device messages is
//! published to the replicated intake stream, under its elder's
//! partition, and counts as kept (the devices get their PUBACKs) once
//! JetStream has acknowledged every message of the group, that is once a
//! majority of the stream's replicas hold it.
use crate::partition::{Kind, intake_subject, partition_of};
use async_nats::HeaderMap;
use async_nats::jetstream::Context;
use async_nats::jetstream::message::PublishMessage;
use eldercare_intake::{Journal, Record};
use std::time::Duration;
use tracing::warn;

/// Header with the MQTT topic of a device message.
pub const TOPIC_HEADER: &str = "Ec-Topic";

pub struct StreamJournal {
    js: Context,
    rt: tokio::runtime::Handle,
    pos: u64,
    /// Names this process's messages for JetStream's de-duplication.
    run: String,
}

impl StreamJournal {
    /// `rt`: the runtime the client runs on (the intake's writer thread
    /// waits on it).
    pub fn new(js: Context, rt: tokio::runtime::Handle) -> StreamJournal {
        StreamJournal {
            js,
            rt,
            pos: 0,
            run: format!(
                "{:x}{:x}",
                std::process::id(),
                chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
            ),
        }
    }
}

/// The partition of a record: its elder's; a message whose elder the
/// front end did not know (none is accepted without one) by its topic.
fn partition(r: &Record) -> u16 {
    match &r.key {
        Some(k) => partition_of(k),
        None => partition_of(&r.topic),
    }
}

/// How long a group is retried while JetStream cannot take it (a stream
/// electing a new leader after a server was lost answers "no stream" for
/// a few seconds): the devices wait for their PUBACKs meanwhile.
const RETRY_FOR: Duration = Duration::from_secs(20);
/// Messages sent before their acknowledgements are awaited: well under
/// the client's 5,000 awaiting acknowledgement, shared with the owners'
/// ticks and decisions.
const CHUNK: usize = 1024;

impl StreamJournal {
    /// Publishes `records` back to back, then awaits every
    /// acknowledgement: one round of replication for the group. Returns
    /// the records not acknowledged, and the last error.
    async fn publish<'r>(
        &self,
        records: &[&'r Record],
    ) -> (Vec<&'r Record>, Option<async_nats::Error>) {
        let mut acks = Vec::with_capacity(records.len());
        for r in records {
            let mut h = HeaderMap::new();
            h.insert(TOPIC_HEADER, r.topic.as_str());
            let msg = PublishMessage::build()
                .payload(r.payload.clone())
                .headers(h)
                // Sent again after a failure, a message is kept once.
                .message_id(format!("{}.{}", self.run, r.pos));
            let subject = intake_subject(partition(r), Kind::Message);
            acks.push((*r, self.js.send_publish(subject, msg).await));
        }
        let mut failed = Vec::new();
        let mut last = None;
        for (r, ack) in acks {
            let done = match ack {
                Ok(f) => f.await.map(|_| ()).map_err(async_nats::Error::from),
                Err(e) => Err(e.into()),
            };
            if let Err(e) = done {
                failed.push(r);
                last = Some(e);
            }
        }
        (failed, last)
    }
}

impl Journal for StreamJournal {
    fn append(&mut self, records: &[Record]) -> std::io::Result<()> {
        let rt = self.rt.clone();
        let sent = rt.block_on(async {
            let started = std::time::Instant::now();
            let mut delay = Duration::from_millis(100);
            let mut pending: Vec<&Record> = records.iter().collect();
            loop {
                // In chunks, each acknowledged before the next is sent:
                // the client holds at most 5,000 publishes awaiting
                // acknowledgement and makes the next wait for room, so a
                // whole group (up to 8,192) sent first would never see
                // its acknowledgements.
                let mut failed = Vec::new();
                let mut err = None;
                for chunk in pending.chunks(CHUNK) {
                    let (f, e) = self.publish(chunk).await;
                    failed.extend(f);
                    err = e.or(err);
                }
                let Some(err) = err else {
                    return Ok(());
                };
                if started.elapsed() >= RETRY_FOR {
                    return Err(std::io::Error::other(err));
                }
                metrics::counter!("eldercare_cluster_intake_retries_total").increment(1);
                warn!(error = %err, waiting = failed.len(), "Intake stream did not take messages; retrying.");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
                pending = failed;
            }
        });
        match sent {
            Ok(()) => {
                metrics::counter!("eldercare_cluster_intake_published_total")
                    .increment(records.len() as u64);
                if let Some(last) = records.last() {
                    self.pos = last.pos;
                }
                Ok(())
            }
            Err(e) => {
                metrics::counter!("eldercare_cluster_intake_errors_total").increment(1);
                Err(e)
            }
        }
    }

    fn durable_position(&self) -> u64 {
        self.pos
    }

    /// Nothing to replay here: the partitions' owners read the stream.
    fn replay(
        &self,
        _from: u64,
    ) -> std::io::Result<Box<dyn Iterator<Item = std::io::Result<Record>> + Send + '_>> {
        Ok(Box::new(std::iter::empty()))
    }

    /// The stream keeps messages for its own time (see `setup`).
    fn release(&mut self, _upto: u64) -> std::io::Result<()> {
        Ok(())
    }
}
