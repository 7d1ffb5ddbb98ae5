//! The writer thread: takes what the sessions appended (urgent first),
//! writes it to the journal as one group with one fsync, resolves the
//! sessions' [`Durable`] handles, and hands the records on, in position
//! order, to the ingest pipeline.
//!
//! A thread of its own, not a task: `fdatasync` blocks for milliseconds,
//! and group commit wants exactly one writer that blocks while the next
//! group gathers.
use crate::{Appender, Closed, Durable, Journal, Lane, Record};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tracing::{debug, error};

/// How the intake runs.
#[derive(Debug, Clone)]
pub struct IntakeConfig {
    /// Routine messages queued (appended, not yet written) at most; beyond
    /// it appenders wait and QoS 0 telemetry is shed.
    pub queue: usize,
    /// Messages written in one group at most.
    pub max_group: usize,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig {
            queue: 16_384,
            max_group: 8_192,
        }
    }
}

struct Pending {
    key: Option<Arc<str>>,
    topic: String,
    payload: Bytes,
    done: oneshot::Sender<Result<(), Closed>>,
    /// Room in the routine queue, given back once written.
    _permit: Option<OwnedSemaphorePermit>,
}

#[derive(Default)]
struct Queues {
    urgent: VecDeque<Pending>,
    routine: VecDeque<Pending>,
    closed: bool,
}

pub(crate) struct Shared {
    queues: Mutex<Queues>,
    wake: Condvar,
    pub(crate) room: Arc<Semaphore>,
    durable: AtomicU64,
    release: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn push(
        &self,
        lane: Lane,
        key: Option<Arc<str>>,
        topic: String,
        payload: Bytes,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<Durable, Closed> {
        let (done, rx) = oneshot::channel();
        let p = Pending {
            key,
            topic,
            payload,
            done,
            _permit: permit,
        };
        {
            let mut q = self.lock();
            if q.closed {
                return Err(Closed);
            }
            match lane {
                Lane::Urgent => q.urgent.push_back(p),
                Lane::Routine => q.routine.push_back(p),
            }
        }
        self.wake.notify_one();
        Ok(Durable(rx))
    }
}

/// The running intake: its writer thread and what controls it.
pub struct Intake {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Intake {
    /// Starts the writer thread over `journal`, which must already have
    /// been replayed by the caller: new records follow its durable
    /// position and go, once durable, to `out`.
    pub fn start(
        journal: Box<dyn Journal>,
        cfg: IntakeConfig,
        out: mpsc::Sender<Record>,
    ) -> std::io::Result<(Intake, Appender)> {
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            wake: Condvar::new(),
            room: Arc::new(Semaphore::new(cfg.queue.max(1))),
            durable: AtomicU64::new(journal.durable_position()),
            release: AtomicU64::new(0),
        });
        for name in [
            "eldercare_intake_append_errors_total",
            "eldercare_intake_records_total",
        ] {
            metrics::counter!(name).absolute(0);
        }
        let s = shared.clone();
        let max_group = cfg.max_group.max(1);
        let thread = std::thread::Builder::new()
            .name("intake-log".into())
            .spawn(move || run(journal, s, max_group, out))?;
        let appender = Appender {
            shared: shared.clone(),
        };
        Ok((
            Intake {
                shared,
                thread: Some(thread),
            },
            appender,
        ))
    }

    /// Position of the newest durable record.
    pub fn durable_position(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// Everything up to `upto` is processed and stored: the journal may
    /// forget it (done by the writer thread at its next group).
    pub fn release(&self, upto: u64) {
        self.shared.release.fetch_max(upto, Ordering::AcqRel);
        self.shared.wake.notify_one();
    }

    /// Stops taking messages, writes what is queued, and waits for the
    /// writer thread to end.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.room.close();
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        self.stop();
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Waits for work, then takes a group: every urgent message first, then
/// routine ones up to `max`. Empty once closed and drained.
fn take_group(shared: &Shared, max: usize, released: u64) -> (Vec<Pending>, bool) {
    let mut q = shared.lock();
    while q.urgent.is_empty()
        && q.routine.is_empty()
        && !q.closed
        && shared.release.load(Ordering::Acquire) == released
    {
        q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
    }
    let mut group: Vec<Pending> = q.urgent.drain(..).collect();
    let room = max.saturating_sub(group.len());
    let n = room.min(q.routine.len());
    group.extend(q.routine.drain(..n));
    let done = q.closed && q.urgent.is_empty() && q.routine.is_empty();
    metrics::gauge!("eldercare_intake_queued").set((q.urgent.len() + q.routine.len()) as f64);
    (group, done)
}

fn run(mut journal: Box<dyn Journal>, shared: Arc<Shared>, max: usize, out: mpsc::Sender<Record>) {
    let mut released = 0;
    let mut records: Vec<Record> = Vec::new();
    loop {
        let (group, done) = take_group(&shared, max, released);
        let want = shared.release.load(Ordering::Acquire);
        if want > released {
            match journal.release(want) {
                Ok(()) => released = want,
                Err(e) => error!(error = %e, "Intake log: could not delete processed segments."),
            }
        }
        if !group.is_empty() {
            let received_at = now_ms();
            let first = journal.durable_position() + 1;
            records.clear();
            records.extend(group.iter().enumerate().map(|(i, p)| Record {
                pos: first + i as u64,
                received_at,
                topic: p.topic.clone(),
                payload: p.payload.clone(),
                key: p.key.clone(),
            }));
            let started = std::time::Instant::now();
            match journal.append(&records) {
                Ok(()) => {
                    metrics::histogram!("eldercare_intake_fsync_seconds")
                        .record(started.elapsed().as_secs_f64());
                    metrics::histogram!("eldercare_intake_group_size").record(group.len() as f64);
                    metrics::counter!("eldercare_intake_records_total")
                        .increment(group.len() as u64);
                    shared
                        .durable
                        .store(journal.durable_position(), Ordering::Release);
                    for p in group {
                        let _ = p.done.send(Ok(()));
                    }
                    for r in records.drain(..) {
                        // Waits when the pipeline is behind: the sessions'
                        // queues then fill and devices slow down.
                        if out.blocking_send(r).is_err() {
                            debug!("Intake log: the pipeline has stopped.");
                        }
                    }
                }
                Err(e) => {
                    // Not kept: no PUBACK; the devices send again.
                    error!(error = %e, count = group.len(), "Intake log: write failed; the messages are refused.");
                    metrics::counter!("eldercare_intake_append_errors_total").increment(1);
                    for p in group {
                        let _ = p.done.send(Err(Closed));
                    }
                }
            }
        }
        if done {
            break;
        }
    }
    debug!("Intake log writer stopped.");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Durability, FileJournal};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appended_messages_are_durable_in_order_and_replayed_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let journal = FileJournal::open(dir.path(), Durability::Fsync).unwrap();
        let (tx, mut rx) = mpsc::channel(100_000);
        let (intake, app) = Intake::start(Box::new(journal), IntakeConfig::default(), tx).unwrap();
        let mut handles = Vec::new();
        for i in 0..2000u32 {
            let d = app
                .append(
                    Lane::Routine,
                    None,
                    format!("eldercare/v1/d{i}/vitals"),
                    Bytes::from(i.to_string()),
                )
                .await
                .unwrap();
            handles.push(d);
        }
        let sos = app
            .append(
                Lane::Urgent,
                None,
                "eldercare/v1/b/event".into(),
                Bytes::from("sos"),
            )
            .await
            .unwrap();
        sos.await.unwrap();
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(intake.durable_position(), 2001);
        let mut got = Vec::new();
        while got.len() < 2001 {
            got.push(rx.recv().await.unwrap());
        }
        let positions: Vec<u64> = got.iter().map(|r| r.pos).collect();
        assert_eq!(
            positions,
            (1..=2001).collect::<Vec<_>>(),
            "gap-free, in order"
        );
        intake.close();
        assert!(
            app.append(Lane::Urgent, None, "t".into(), Bytes::new())
                .await
                .is_err(),
            "closed"
        );

        let journal = FileJournal::open(dir.path(), Durability::Fsync).unwrap();
        let replayed: Vec<Record> = journal.replay(1).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(replayed, got, "what was durable is what is replayed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_routine_queue_sheds_try_appends_but_never_urgent_ones() {
        let dir = tempfile::tempdir().unwrap();
        let journal = FileJournal::open(dir.path(), Durability::None).unwrap();
        // A pipeline that does not read: the writer blocks after one record.
        let (tx, rx) = mpsc::channel(1);
        let cfg = IntakeConfig {
            queue: 4,
            max_group: 1,
        };
        let (intake, app) = Intake::start(Box::new(journal), cfg, tx).unwrap();
        let mut full = false;
        for i in 0..100 {
            match app.try_append(Lane::Routine, None, format!("t{i}"), Bytes::new()) {
                Ok(_) => {}
                Err(crate::TryAppendError::Full) => {
                    full = true;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(full, "routine telemetry is shed once the queue is full");
        assert!(
            app.try_append(Lane::Urgent, None, "e".into(), Bytes::new())
                .is_ok(),
            "an SOS is never shed"
        );
        // The pipeline goes away first, as at shutdown: the writer ends.
        drop(rx);
        intake.close();
    }
}
