//! The intake log of a cluster member: each group of device messages is
//! published to the replicated intake stream, under its elder's
//! partition, and counts as kept (the devices get their PUBACKs) once
//! JetStream has acknowledged every message of the group, that is once a
//! majority of the stream's replicas hold it.
use crate::partition::{Kind, intake_subject, partition_of};
use async_nats::HeaderMap;
use async_nats::jetstream::Context;
use eldercare_intake::{Journal, Record};

/// Header with the MQTT topic of a device message.
pub const TOPIC_HEADER: &str = "Ec-Topic";

pub struct StreamJournal {
    js: Context,
    rt: tokio::runtime::Handle,
    pos: u64,
}

impl StreamJournal {
    /// `rt`: the runtime the client runs on (the intake's writer thread
    /// waits on it).
    pub fn new(js: Context, rt: tokio::runtime::Handle) -> StreamJournal {
        StreamJournal { js, rt, pos: 0 }
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

impl Journal for StreamJournal {
    fn append(&mut self, records: &[Record]) -> std::io::Result<()> {
        let js = self.js.clone();
        let sent = self.rt.block_on(async move {
            // Published back to back, then every acknowledgement awaited:
            // one round of replication for the group.
            let mut acks = Vec::with_capacity(records.len());
            for r in records {
                let mut h = HeaderMap::new();
                h.insert(TOPIC_HEADER, r.topic.as_str());
                let subject = intake_subject(partition(r), Kind::Message);
                acks.push(
                    js.publish_with_headers(subject, h, r.payload.clone())
                        .await
                        .map_err(std::io::Error::other)?,
                );
            }
            for a in acks {
                a.await.map_err(std::io::Error::other)?;
            }
            Ok::<_, std::io::Error>(())
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
