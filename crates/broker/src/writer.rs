//! The telemetry writer: readings go to storage in batches from a bounded
//! queue, flushed when a batch is full or every 100 ms, on a task of its
//! own, so the ingest loop (and with it alerting) never waits on a
//! database round trip.
use eldercare_store::{Store, StoredReading};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, error};

/// Readings written in one batch at most. A batch this large forms only
/// when readings queue up faster than they are written (otherwise the
/// 100 ms flush takes what arrived); PostgreSQL then writes it with COPY,
/// which gains with batch size where UNNEST does not (benches/RESULTS.md,
/// "Telemetry writer into PostgreSQL": ~75k readings/s at 1000, 0.50 of
/// `psql \copy`; ~103k at 10,000, 0.73).
pub const BATCH: usize = 10_000;
/// A partial batch waits at most this long.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Readings queued at most; beyond, new readings are dropped and counted
/// (alerting goes on: readings reach the rule engine before this queue).
pub const QUEUE: usize = 100_000;

/// Handle for queueing readings; cheap to clone.
#[derive(Clone)]
pub struct TelemetryWriter {
    tx: mpsc::Sender<StoredReading>,
}

impl TelemetryWriter {
    /// Starts the writer task. It ends, after writing everything queued,
    /// when every handle is dropped.
    pub fn start(store: Arc<dyn Store>) -> (TelemetryWriter, tokio::task::JoinHandle<()>) {
        TelemetryWriter::start_with(store, QUEUE, BATCH, FLUSH_EVERY)
    }

    pub fn start_with(
        store: Arc<dyn Store>,
        queue: usize,
        batch: usize,
        every: Duration,
    ) -> (TelemetryWriter, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let task = tokio::spawn(run(store, rx, batch.max(1), every));
        (TelemetryWriter { tx }, task)
    }

    /// Queues a reading; never waits. A full queue drops it, counted.
    pub fn push(&self, r: StoredReading) {
        if self.tx.try_send(r).is_err() {
            metrics::counter!("eldercare_telemetry_dropped_total").increment(1);
        }
    }
}

async fn run(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<StoredReading>,
    batch: usize,
    every: Duration,
) {
    let mut buf: Vec<StoredReading> = Vec::with_capacity(batch);
    loop {
        // Wait for the first reading of a batch, then fill it until it is
        // full or `every` has passed.
        let Some(first) = rx.recv().await else { break };
        buf.push(first);
        let deadline = tokio::time::Instant::now() + every;
        while buf.len() < batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => buf.push(r),
                Ok(None) | Err(_) => break,
            }
        }
        write(&*store, &mut buf).await;
    }
    write(&*store, &mut buf).await;
    debug!("Telemetry writer stopped; everything queued is written.");
}

async fn write(store: &dyn Store, buf: &mut Vec<StoredReading>) {
    if buf.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    match store.insert_readings(buf).await {
        Ok(()) => {
            metrics::counter!("eldercare_telemetry_written_total").increment(buf.len() as u64);
            metrics::histogram!("eldercare_telemetry_batch_seconds")
                .record(started.elapsed().as_secs_f64());
        }
        Err(e) => {
            error!(error = %e, count = buf.len(), "Could not store telemetry.");
            metrics::counter!("eldercare_telemetry_write_errors_total").increment(1);
        }
    }
    buf.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use eldercare_model::{Body, Reading, Status};

    fn reading(i: u64) -> StoredReading {
        StoredReading {
            elder_id: "E1".into(),
            reading: Reading {
                device_id: "btn-1".into(),
                seq: Some(i),
                ts_ms: 1_000 + i as i64,
                body: Body::Status(Status {
                    battery_pct: Some(50),
                    ..Default::default()
                }),
            },
        }
    }

    #[tokio::test]
    async fn everything_queued_is_written_in_batches_and_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            eldercare_store::SqliteStore::open(dir.path())
                .await
                .unwrap(),
        );
        let (w, task) = TelemetryWriter::start_with(store.clone(), 10_000, 64, FLUSH_EVERY);
        for i in 0..1000 {
            w.push(reading(i));
        }
        drop(w);
        task.await.unwrap();
        let got = store
            .query_readings(&eldercare_store::ReadingQuery {
                subject: eldercare_store::ReadingSubject::Device("btn-1".into()),
                from: None,
                to: None,
                streams: Vec::new(),
                newest_first: false,
                after: None,
                limit: 5000,
            })
            .await
            .unwrap();
        assert_eq!(got.len(), 1000);
    }
}
