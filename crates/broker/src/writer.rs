//! The telemetry writer: readings go to storage in batches from a bounded
//! queue, flushed when a batch is full or every 100 ms, on a task of its
//! own, so the ingest loop (and with it alerting) never waits on a
//! database round trip.
//!
//! Each reading comes with the intake log position of its message, and
//! each batch is stored with the newest of them in the same transaction
//! ([`Telemetry::insert_readings_at`]): after a crash, exactly the
//! readings not yet stored are written again. A row the database refuses for its
//! content is kept as a dead letter, alone; the rest of its batch is
//! stored.
//!
//! [`Telemetry::insert_readings_at`]: eldercare_store::Telemetry::insert_readings_at
use eldercare_store::{Store, StoredReading};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, error, warn};

/// Readings written in one batch at most. A batch this large forms only
/// when readings queue up faster than they are written (otherwise the
/// 100 ms flush takes what arrived); PostgreSQL then writes it with COPY,
/// which gains with batch size where UNNEST does not (benches/RESULTS.md,
/// "Telemetry writer into PostgreSQL": ~75k readings/s at 1000, 0.50 of
/// `psql \copy`; ~103k at 10,000, 0.73).
pub const BATCH: usize = 10_000;
/// A partial batch waits at most this long.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Readings queued at most; beyond, the ingest loop waits (and with it
/// the intake log and the devices): an acknowledged reading is never
/// dropped here.
pub const QUEUE: usize = 100_000;

/// Handle for queueing readings; cheap to clone.
#[derive(Clone)]
pub struct TelemetryWriter {
    tx: mpsc::Sender<(StoredReading, u64)>,
    stored: Arc<AtomicU64>,
}

impl TelemetryWriter {
    /// Starts the writer task. It ends, after writing everything queued,
    /// when every handle is dropped.
    pub fn start(store: Arc<dyn Store>) -> (TelemetryWriter, tokio::task::JoinHandle<()>) {
        TelemetryWriter::start_with(store, QUEUE, BATCH, FLUSH_EVERY)
    }

    /// As [`TelemetryWriter::start`], for one of several logs (a
    /// cluster's partition): positions are recorded under `key`
    /// ([`eldercare_store::Telemetry::insert_readings_keyed`]).
    pub fn start_keyed(
        store: Arc<dyn Store>,
        key: String,
    ) -> (TelemetryWriter, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stored = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run(
            store,
            Some(key),
            rx,
            BATCH,
            FLUSH_EVERY,
            stored.clone(),
        ));
        (TelemetryWriter { tx, stored }, task)
    }

    pub fn start_with(
        store: Arc<dyn Store>,
        queue: usize,
        batch: usize,
        every: Duration,
    ) -> (TelemetryWriter, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let stored = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run(store, None, rx, batch.max(1), every, stored.clone()));
        (TelemetryWriter { tx, stored }, task)
    }

    /// Queues a reading of the message at intake log position `pos`;
    /// waits when the queue is full.
    pub async fn push(&self, r: StoredReading, pos: u64) {
        if self.tx.send((r, pos)).await.is_err() {
            // Only after shutdown; the intake log still has it.
            metrics::counter!("eldercare_telemetry_dropped_total").increment(1);
        }
    }

    /// The intake position stored with the newest written batch (0: none
    /// in this run).
    pub fn stored_position(&self) -> u64 {
        self.stored.load(Ordering::Acquire)
    }

    /// The same position, readable after the writer has ended.
    pub fn stored_cell(&self) -> Arc<AtomicU64> {
        self.stored.clone()
    }
}

async fn run(
    store: Arc<dyn Store>,
    key: Option<String>,
    mut rx: mpsc::Receiver<(StoredReading, u64)>,
    batch: usize,
    every: Duration,
    stored: Arc<AtomicU64>,
) {
    let mut buf: Vec<StoredReading> = Vec::with_capacity(batch);
    let mut pos = 0;
    loop {
        // Wait for the first reading of a batch, then fill it until it is
        // full or `every` has passed.
        let Some((first, p)) = rx.recv().await else {
            break;
        };
        buf.push(first);
        pos = pos.max(p);
        let deadline = tokio::time::Instant::now() + every;
        while buf.len() < batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((r, p))) => {
                    buf.push(r);
                    pos = pos.max(p);
                }
                Ok(None) | Err(_) => break,
            }
        }
        write(&*store, key.as_deref(), &mut buf, pos, &stored).await;
    }
    write(&*store, key.as_deref(), &mut buf, pos, &stored).await;
    debug!("Telemetry writer stopped; everything queued is written.");
}

async fn write(
    store: &dyn Store,
    key: Option<&str>,
    buf: &mut Vec<StoredReading>,
    pos: u64,
    stored: &AtomicU64,
) {
    if buf.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let written = match key {
        None => store.insert_readings_at(buf, pos).await,
        Some(k) => store.insert_readings_keyed(buf, k, pos).await,
    };
    match written {
        Ok(refused) => {
            let written = buf.len() - refused.len();
            metrics::counter!("eldercare_telemetry_written_total").increment(written as u64);
            metrics::histogram!("eldercare_telemetry_batch_seconds")
                .record(started.elapsed().as_secs_f64());
            stored.fetch_max(pos, Ordering::AcqRel);
            let now = chrono::Utc::now().timestamp_millis();
            // Counted by the store (eldercare_store_readings_refused_total).
            for row in &refused {
                let Some(r) = buf.get(row.index) else {
                    continue;
                };
                let letter = eldercare_store::refused_reading_letter(r, row, now);
                if let Err(e) = store.insert_dead_letter(&letter).await {
                    warn!(error = %e, "Could not keep a reading the database refused as a dead letter.");
                }
            }
        }
        Err(e) => {
            // The spool in front of the database keeps what an outage
            // refuses; an error here was not spooled either. The intake
            // log still has these readings: the next start writes them.
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
            w.push(reading(i), i + 1).await;
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
        assert_eq!(store.intake_position().await.unwrap(), Some(1000));
    }
}
