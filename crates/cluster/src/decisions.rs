//! A partition owner's rule decisions, published to the decision stream.
//!
//! Each decision has an id made of the partition, the intake sequence of
//! the record it came from and its index among that record's decisions:
//! a new owner replaying records the old one judged makes the same
//! decisions with the same ids, and JetStream's de-duplication keeps one.
//! Every publish expects the last sequence this owner knows on its
//! partition's subject; a new owner first publishes a fence, so a stale
//! owner's next decision is refused and it learns it lost the partition.
use crate::partition::decision_subject;
use async_nats::jetstream::Context;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use eldercare_broker::decider::{Decider, NotTaken, Pending};
use eldercare_rules::Decision;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;
use tracing::{error, warn};

/// Header of the fence a new owner publishes.
pub const FENCE_HEADER: &str = "Ec-Fence";

struct Last {
    /// The newest sequence on the partition's subject this owner knows.
    subject_seq: u64,
    /// The record the last decision came from, and its index there.
    pos: u64,
    index: u32,
}

pub struct DecisionLog {
    js: Context,
    partition: u16,
    subject: String,
    last: Mutex<Last>,
    /// Set when a publish found another owner's fence.
    pub fenced: Arc<AtomicBool>,
}

/// How long a decision is retried while JetStream does not answer
/// (a leader election) before it is given up as not taken.
const RETRY_FOR: Duration = Duration::from_secs(30);

impl DecisionLog {
    /// Takes the partition's decision subject: publishes a fence after
    /// whatever is there, so a previous owner can publish nothing more.
    pub async fn fence(
        js: Context,
        partition: u16,
        member: &str,
    ) -> Result<DecisionLog, async_nats::Error> {
        let subject = decision_subject(partition);
        let stream = js.get_stream(crate::partition::DECISION_STREAM).await?;
        let last = match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => m.sequence,
            Err(e)
                if e.kind()
                    == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                0
            }
            Err(e) => return Err(e.into()),
        };
        let mut h = async_nats::HeaderMap::new();
        h.insert(FENCE_HEADER, member);
        let ack = js
            .send_publish(
                subject.clone(),
                PublishMessage::build()
                    .headers(h)
                    .expected_last_subject_sequence(last),
            )
            .await?
            .await?;
        Ok(DecisionLog {
            js,
            partition,
            subject,
            last: Mutex::new(Last {
                subject_seq: ack.sequence,
                pos: 0,
                index: 0,
            }),
            fenced: Arc::new(AtomicBool::new(false)),
        })
    }

    async fn publish(&self, d: Decision, pos: u64) -> Result<(), NotTaken> {
        if self.fenced.load(Ordering::Acquire) {
            return Err(NotTaken);
        }
        let body = serde_json::to_vec(&d).map_err(|_| NotTaken)?;
        let mut last = self.last.lock().await;
        if pos == last.pos {
            last.index += 1;
        } else {
            last.pos = pos;
            last.index = 0;
        }
        let id = format!("{}.{}.{}", self.partition, pos, last.index);
        let started = std::time::Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            let msg = PublishMessage::build()
                .payload(body.clone().into())
                .message_id(&id)
                .expected_last_subject_sequence(last.subject_seq);
            let r = match self.js.send_publish(self.subject.clone(), msg).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match r {
                Ok(ack) => {
                    if !ack.duplicate {
                        last.subject_seq = ack.sequence;
                    }
                    metrics::counter!("eldercare_cluster_decisions_published_total",
                        "duplicate" => if ack.duplicate { "true" } else { "false" })
                    .increment(1);
                    return Ok(());
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    warn!(
                        partition = self.partition,
                        "Another member has taken this partition; its decisions stop here."
                    );
                    self.fenced.store(true, Ordering::Release);
                    metrics::counter!("eldercare_cluster_fenced_total").increment(1);
                    return Err(NotTaken);
                }
                Err(e) if started.elapsed() < RETRY_FOR => {
                    warn!(error = %e, partition = self.partition, "Decision not published yet; retrying.");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    // Not kept: this owner must not snapshot past it; it
                    // stops, and the next owner decides it again.
                    error!(error = %e, partition = self.partition, "Decision could not be published; giving the partition up.");
                    self.fenced.store(true, Ordering::Release);
                    return Err(NotTaken);
                }
            }
        }
    }
}

impl Decider for DecisionLog {
    fn decide(&self, d: Decision, pos: Option<u64>) -> Pending<'_> {
        Box::pin(self.publish(d, pos.unwrap_or(0)))
    }

    /// Each decision is acknowledged before the next is made.
    fn sync(&self) -> Pending<'_> {
        Box::pin(async move {
            if self.fenced.load(Ordering::Acquire) {
                Err(NotTaken)
            } else {
                Ok(())
            }
        })
    }
}
