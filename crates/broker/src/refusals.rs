//! The dead-letter writer: refused messages are counted by reason and
//! kept in the bounded dead-letter store, without ever blocking whoever
//! refused them (the MQTT guard for topics not owned, the ingest pipeline
//! for everything it cannot decode or attribute).
use eldercare_model::{DeadLetter, EpochMs};
use eldercare_protocol::Refusal;
use eldercare_store::DeadLetters;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Dead letters waiting for the store at most; beyond, new ones are
/// counted and dropped.
const QUEUE: usize = 10_000;

/// Counts refused messages by reason and hands them to the bounded
/// dead-letter store, without ever blocking the caller.
#[derive(Clone)]
pub struct Refusals {
    tx: mpsc::Sender<DeadLetter>,
}

impl Refusals {
    /// Starts the dead-letter writer; it ends when every handle is dropped.
    pub fn start(store: Arc<dyn DeadLetters>) -> (Refusals, tokio::task::JoinHandle<()>) {
        for r in Refusal::REASONS {
            metrics::counter!("eldercare_ingest_refused_total", "reason" => r).absolute(0);
        }
        let (tx, mut rx) = mpsc::channel::<DeadLetter>(QUEUE);
        let h = tokio::spawn(async move {
            while let Some(dl) = rx.recv().await {
                if let Err(e) = store.insert_dead_letter(&dl).await {
                    warn!(error = %e, "Could not keep a dead letter.");
                }
            }
        });
        (Refusals { tx }, h)
    }

    pub fn refuse(&self, topic: &str, sender: Option<&str>, why: &Refusal, payload: &[u8]) {
        metrics::counter!("eldercare_ingest_refused_total", "reason" => why.reason()).increment(1);
        debug!(reason = why.reason(), sender, "Message refused.");
        let dl = DeadLetter {
            id: 0,
            received_at: now_ms(),
            topic: topic.chars().take(256).collect(),
            sender: sender.map(String::from),
            reason: why.reason().to_string(),
            detail: why.to_string(),
            payload: payload[..payload.len().min(eldercare_protocol::MAX_PAYLOAD_BYTES)].to_vec(),
        };
        if self.tx.try_send(dl).is_err() {
            metrics::counter!("eldercare_dead_letters_dropped_total").increment(1);
        }
    }
}

fn now_ms() -> EpochMs {
    chrono::Utc::now().timestamp_millis()
}
