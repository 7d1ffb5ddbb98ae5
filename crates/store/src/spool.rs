//! Riding out a database outage: [`SpoolingStore`] sits in front of any
//! [`Store`]. When a write of telemetry or of an alert event fails because
//! the database is unreachable ([`StoreError::is_outage`]), it goes to a
//! bounded spool on disk (in the data directory) instead, and the system
//! carries on: alert events keep their gap-free `seq` and hash chain
//! (assigned here, exactly as the database would) and are delivered to
//! subscribers at once; a background task writes the spool to the
//! database, in order, when it is back.
//!
//! A database that *refuses* data ([`StoreError::is_refusal`]: a NUL in
//! text, a value out of range, a constraint) is not an outage: retrying
//! the same row would fail forever and hold every later reading in the
//! spool. Such readings are left out of their batch and handed back
//! ([`RefusedRow`]), or, when found while draining the spool, kept as
//! dead letters here ([`refused_reading_letter`]); they are never spooled.
//!
//! Alert events are never dropped. Telemetry is bounded: when the spool
//! is full, the oldest spooled readings are dropped and counted. While
//! anything is spooled, new writes of the same kind queue behind it, so
//! order holds per kind. The two kinds have their own locks, and the
//! drain writes readings in slices of [`DRAIN_SLICE`], taking the readings
//! lock one slice at a time: a new alert event never waits for telemetry.
//!
//! Files, in the spool directory: `events.jsonl` and `readings.jsonl`, a
//! JSON line per spooled write, appended and synced before the write is
//! acknowledged; `readings.gone`, the number of the last spooled reading
//! that is gone (written, refused or dropped), so a drain does not rewrite
//! the whole readings file after each slice (it is compacted only once
//! most of it is gone). A half-written last line, left by a crash in the
//! middle of an append, is skipped when the spool is opened (counted and
//! logged, never its content); a damaged line anywhere else is an error.
//!
//! Exactly once across a crash: readings spooled by
//! [`Telemetry::insert_readings_at`] keep their intake position, each drained
//! slice is written with the position of the newest batch it holds (a
//! slice never splits a batch), and the position is recorded in the same
//! transaction as the slice. A crash after that transaction but before
//! the spool notes the slice as gone leaves readings whose position the
//! database already has; the next drain skips them.
//!
//! The chain head without the database: `head.json` holds the `seq` and
//! hash of the newest alert event, rewritten (atomically, synced) after
//! every event appended, stored or spooled. When the database is
//! unreachable at start and nothing is spooled, the spool numbers and
//! chains the next events from it. It can be stale: a power loss after
//! the database committed an event but before the file was rewritten
//! leaves it one event behind (a database restored from an older backup
//! leaves it ahead). The spool then gives its events seqs the database
//! has already used (or skips some). This is caught when they are
//! written: the database assigns seq and hash itself, from its own head,
//! so its chain stays gap-free and intact; a spooled event stored with
//! another seq or hash than the spool gave it is a *seq conflict*,
//! logged at error level with both seqs and counted
//! (`eldercare_spool_seq_conflicts_total`), since subscribers were given
//! the spool's seq. Without the file (a first start, or a data directory
//! older than it) and without the database, alert events cannot be
//! numbered: they fail, as before, until the database answers.
//!
//! Reads fall back to the local copies (module `local`) while the
//! database is unreachable: a device, an elder, the registry's full
//! listings and pages, the unresolved alerts and the active silences. A
//! device or elder the copy does not hold is still the outage error, not
//! "no such device": the copy may simply be older than the registry, and
//! the MQTT guard answers "server unavailable" to a device it cannot
//! look up. A registry delta (`changed_since`) is never answered from
//! the copy: it knows no change times, and an answer would move the
//! caller's window past changes it has not seen.
use crate::local::{Half, LocalCopies};
use crate::refusal::{self, RefusedRow, refused_reading_letter};
use crate::{
    AlertLog, AlertQuery, ChainReport, DeadLetters, DeviceQuery, DeviceWrite, ElderDeletion,
    ElderQuery, NewAlertEvent, ReadingQuery, ReadingRecord, Registry, Result, Store, StoreError,
    StoredReading, Telemetry, VitalsHour, event_hash,
};
use async_trait::async_trait;
use eldercare_model::{
    Alert, AlertEvent, AlertEventKind, Body, Carer, DeadLetter, Device, Elder, EpochMs, Provider,
    Reading, Silence, Stream, VisitPlan,
};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, error, info, warn};

/// How much telemetry the spool holds at most, by default.
pub const SPOOL_READINGS: usize = 1_000_000;

/// Spooled readings written to the database in one transaction, at most
/// (more only to keep one batch together), and the readings lock is
/// released between two slices.
pub const DRAIN_SLICE: usize = 10_000;

const EVENTS_FILE: &str = "events.jsonl";
const READINGS_FILE: &str = "readings.jsonl";
const GONE_FILE: &str = "readings.gone";
const HEAD_FILE: &str = "head.json";

/// The newest alert event's seq and hash, as `head.json` keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
}

/// The head as the database has it.
async fn db_head(inner: &dyn AlertLog) -> Result<Head> {
    let seq = inner.last_seq().await?;
    let hash = match seq {
        0 => String::new(),
        s => inner
            .events_after(s - 1, 1)
            .await?
            .pop()
            .map(|e| e.hash)
            .unwrap_or_default(),
    };
    Ok(Head { seq, hash })
}

/// `head.json`, if there is a readable one.
fn read_head(dir: &Path) -> Option<Head> {
    let path = dir.join(HEAD_FILE);
    match std::fs::read(&path) {
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(h) => Some(h),
            Err(e) => {
                warn!(file = %path.display(), error = %e, "The chain head file is damaged; ignoring it.");
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            warn!(file = %path.display(), error = %e, "Cannot read the chain head file; ignoring it.");
            None
        }
    }
}

/// An alert event as spooled: everything the database would store.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SpooledEvent {
    seq: u64,
    kind: AlertEventKind,
    alert: Alert,
    actor: String,
    at: EpochMs,
    note: Option<String>,
    hash: String,
}

impl SpooledEvent {
    fn event(&self) -> AlertEvent {
        AlertEvent {
            seq: self.seq,
            kind: self.kind,
            alert: self.alert.clone(),
            actor: self.actor.clone(),
            at: self.at,
            note: self.note.clone(),
            hash: self.hash.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SpooledReading {
    /// Its number in the spool: 1, 2, 3, ..., never reused, so
    /// `readings.gone` can say how far the spool is gone. 0 in spools
    /// written before numbers existed; they are numbered when opened.
    #[serde(default)]
    n: u64,
    /// The intake position of the batch it came with, when it came with
    /// one ([`Telemetry::insert_readings_at`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    intake_pos: Option<u64>,
    elder_id: String,
    device_id: String,
    seq: Option<u64>,
    ts_ms: EpochMs,
    stream: Stream,
    body: String,
    /// Server time it was spooled, for the spool's age.
    spooled_at: EpochMs,
}

impl SpooledReading {
    fn from(r: &StoredReading, n: u64, intake_pos: Option<u64>, now: EpochMs) -> SpooledReading {
        SpooledReading {
            n,
            intake_pos,
            elder_id: r.elder_id.clone(),
            device_id: r.reading.device_id.clone(),
            seq: r.reading.seq,
            ts_ms: r.reading.ts_ms,
            stream: r.reading.stream(),
            body: r.reading.body.to_json(),
            spooled_at: now,
        }
    }

    fn stored(&self) -> Option<StoredReading> {
        Some(StoredReading {
            elder_id: self.elder_id.clone(),
            reading: Reading {
                device_id: self.device_id.clone(),
                seq: self.seq,
                ts_ms: self.ts_ms,
                body: Body::from_json(self.stream, &self.body).ok()?,
            },
        })
    }
}

/// The alert events side, behind a std mutex: read by the event replay
/// calls, written by the events writer and the events drain.
struct Events {
    /// Seq and hash of the newest event, stored or spooled; meaningless
    /// while `head_known` is false (the database unreachable at start,
    /// and no head file).
    last_seq: u64,
    last_hash: String,
    head_known: bool,
    queue: VecDeque<SpooledEvent>,
}

/// The telemetry side, inside the readings writers' lock: only a readings
/// writer or the readings drain, holding that lock, touches it, so it is
/// written to disk without copying it out and without ever holding up an
/// alert event. What others read of it is mirrored in [`Gauges`].
struct Readings {
    queue: VecDeque<SpooledReading>,
    /// The number the next spooled reading gets.
    next_n: u64,
    /// Lines in `readings.jsonl`, those gone included until compaction.
    file_lines: usize,
}

/// What is read of the telemetry spool without its lock.
struct Gauges {
    readings: AtomicUsize,
    /// `spooled_at` of the oldest spooled reading; `i64::MAX` when none.
    oldest_reading: AtomicI64,
    dropped: AtomicU64,
    /// The newest intake position spooled (or found in the spool when
    /// opened).
    newest_pos: Mutex<Option<u64>>,
}

/// A [`Store`] that spools writes while the database is unreachable.
pub struct SpoolingStore {
    inner: Arc<dyn Store>,
    dir: PathBuf,
    max_readings: usize,
    events: Mutex<Events>,
    gauges: Gauges,
    /// Serialise the writers of each kind and the drain, so order is
    /// kept; two locks, so a telemetry batch never delays an alert.
    write_events: tokio::sync::Mutex<()>,
    write_readings: tokio::sync::Mutex<Readings>,
    /// The registry and desk copies for when the database is unreachable.
    local: LocalCopies,
    /// Spooled events the database stored with another seq or hash.
    seq_conflicts: AtomicU64,
}

/// Counts a read answered from a local copy because the database was
/// unreachable.
fn local_read(what: &'static str) {
    metrics::counter!("eldercare_store_local_reads_total", "what" => what).increment(1);
}

/// The database's answer; while the database is unreachable, the local
/// copy's when `local` has one (counted as a local read of `what`),
/// else the outage error. Every read that may fall back goes through
/// here, so the rule is written once.
fn or_local<T>(db: Result<T>, what: &'static str, local: impl FnOnce() -> Option<T>) -> Result<T> {
    match db {
        Err(e) if e.is_outage() => match local() {
            Some(found) => {
                local_read(what);
                Ok(found)
            }
            None => Err(e),
        },
        r => r,
    }
}

fn now_ms() -> EpochMs {
    chrono::Utc::now().timestamp_millis()
}

fn data_dir_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::DataDir {
        path: path.display().to_string(),
        source,
    }
}

/// Makes a file's creation, removal or renaming in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(data_dir_err(dir))
}

/// The lines of a spool file, and whether its end needs repair: a last
/// line without its newline, kept when it is whole and skipped when it
/// is not (a crash in the middle of an append), so the file must be
/// rewritten before anything is appended to it. A line that cannot be
/// read anywhere else is an error: that is damage, not a torn write.
fn read_lines<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<(VecDeque<T>, bool)> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((VecDeque::new(), false)),
        Err(e) => return Err(data_dir_err(path)(e)),
    };
    let (whole, tail) = match bytes.iter().rposition(|b| *b == b'\n') {
        Some(i) => bytes.split_at(i + 1),
        None => (&[][..], &bytes[..]),
    };
    let mut items = VecDeque::new();
    for (i, line) in whole.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let item = serde_json::from_slice(line).map_err(|e| {
            StoreError::Corrupt(format!("spool {}: line {}: {e}", path.display(), i + 1))
        })?;
        items.push_back(item);
    }
    if tail.iter().all(u8::is_ascii_whitespace) {
        return Ok((items, !tail.is_empty()));
    }
    match serde_json::from_slice(tail) {
        Ok(item) => items.push_back(item),
        Err(_) => {
            metrics::counter!("eldercare_spool_torn_lines_total").increment(1);
            warn!(
                file = %path.display(),
                bytes = tail.len(),
                "The spool's last line was half written (a crash while appending); skipping it."
            );
        }
    }
    Ok((items, true))
}

/// Where the first slice of `queue` ends: at most [`DRAIN_SLICE`]
/// readings, except that readings of one batch (the same intake position)
/// stay together, and readings with a position and without one are never
/// mixed.
fn slice_end(queue: &VecDeque<SpooledReading>) -> usize {
    let with_pos = queue.front().is_some_and(|r| r.intake_pos.is_some());
    let mut end = 0;
    while let Some(r) = queue.get(end) {
        if r.intake_pos.is_some() != with_pos {
            break;
        }
        if end >= DRAIN_SLICE && (!with_pos || r.intake_pos != queue[end - 1].intake_pos) {
            break;
        }
        end += 1;
    }
    end
}

impl SpoolingStore {
    /// Wraps `inner`, keeping the spool in `dir`; spooled writes left by an
    /// earlier run are loaded and written first.
    pub async fn open(
        inner: Arc<dyn Store>,
        dir: &Path,
        max_readings: usize,
    ) -> Result<Arc<SpoolingStore>> {
        std::fs::create_dir_all(dir).map_err(data_dir_err(dir))?;
        let max_readings = max_readings.max(1);
        let (events, events_torn) = read_lines::<SpooledEvent>(&dir.join(EVENTS_FILE))?;
        let (mut readings, readings_torn) = read_lines::<SpooledReading>(&dir.join(READINGS_FILE))?;
        let gone_path = dir.join(GONE_FILE);
        let mut gone: u64 = match std::fs::read_to_string(&gone_path) {
            Ok(t) => t
                .trim()
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("spool {}: {e}", gone_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(data_dir_err(&gone_path)(e)),
        };
        let mut rewrite_readings = readings_torn;
        if readings.iter().any(|r| r.n == 0) {
            // Written before readings were numbered: number them now.
            for (i, r) in readings.iter_mut().enumerate() {
                r.n = i as u64 + 1;
            }
            gone = 0;
            rewrite_readings = true;
        }
        let next_n = readings.back().map_or(0, |r| r.n).max(gone) + 1;
        let before = readings.len();
        readings.retain(|r| r.n > gone);
        let excess = readings.len().saturating_sub(max_readings);
        readings.drain(..excess);
        if excess > 0 {
            metrics::counter!("eldercare_spool_readings_dropped_total").increment(excess as u64);
        }
        rewrite_readings |= readings.len() != before;
        let head_file = read_head(dir);
        let head = match events.back() {
            Some(e) => Some(Head {
                seq: e.seq,
                hash: e.hash.clone(),
            }),
            None => match db_head(&*inner).await {
                Ok(h) => {
                    if let Some(f) = head_file.as_ref().filter(|f| f.seq > h.seq) {
                        error!(
                            database = h.seq,
                            local = f.seq,
                            "The database's alert event log ends before the chain head this server last wrote (restored from an older backup?); numbering on from the database's."
                        );
                    }
                    Some(h)
                }
                Err(e) if e.is_outage() => match &head_file {
                    Some(h) => {
                        warn!(
                            seq = h.seq,
                            "Database unreachable at start; alert events are numbered on from the chain head kept in the spool directory."
                        );
                        Some(h.clone())
                    }
                    None => {
                        error!(
                            error = %e,
                            "Database unreachable at start and no chain head kept: alert events cannot be numbered until it answers."
                        );
                        None
                    }
                },
                Err(e) => return Err(e),
            },
        };
        if !events.is_empty() || !readings.is_empty() {
            info!(
                events = events.len(),
                readings = readings.len(),
                "Spool from an earlier run found; writing it first."
            );
        }
        let newest_pos = readings.iter().filter_map(|r| r.intake_pos).max();
        let s = Arc::new(SpoolingStore {
            inner,
            dir: dir.to_path_buf(),
            max_readings,
            gauges: Gauges {
                readings: AtomicUsize::new(readings.len()),
                oldest_reading: AtomicI64::new(i64::MAX),
                dropped: AtomicU64::new(excess as u64),
                newest_pos: Mutex::new(newest_pos),
            },
            events: Mutex::new(Events {
                last_seq: head.as_ref().map_or(0, |h| h.seq),
                last_hash: head.as_ref().map(|h| h.hash.clone()).unwrap_or_default(),
                head_known: head.is_some(),
                queue: events,
            }),
            write_events: tokio::sync::Mutex::new(()),
            write_readings: tokio::sync::Mutex::new(Readings {
                file_lines: readings.len(),
                queue: readings,
                next_n,
            }),
            local: LocalCopies::open(dir),
            seq_conflicts: AtomicU64::new(0),
        });
        // The desk copy may be older than the spooled events (saved once
        // a second): they are the alerts' newest states.
        for e in &s.lock_events().queue {
            s.local.alert_changed(&e.alert);
        }
        if let Some(h) = head.filter(|h| head_file.as_ref() != Some(h)) {
            s.write_head(&h);
        }
        if events_torn {
            let ev = s.lock_events().queue.clone();
            s.rewrite(EVENTS_FILE, &ev)?;
        }
        {
            let mut r = s.write_readings.lock().await;
            if rewrite_readings || r.queue.is_empty() {
                s.compact(&mut r)?;
            }
            s.mirror(&r);
        }
        s.publish_metrics();
        Ok(s)
    }

    /// Writes the spool to the database every `every` until `stop`.
    pub fn start_drain(
        self: &Arc<Self>,
        every: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let s = self.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = t.tick() => {}
                }
                s.drain().await;
            }
        })
    }

    fn lock_events(&self) -> std::sync::MutexGuard<'_, Events> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Events and readings waiting in the spool.
    pub fn spooled(&self) -> (usize, usize) {
        (
            self.lock_events().queue.len(),
            self.gauges.readings.load(Ordering::SeqCst),
        )
    }

    /// Spooled alert events the database stored with another seq or hash
    /// than the spool gave them (see the module doc).
    pub fn seq_conflicts(&self) -> u64 {
        self.seq_conflicts.load(Ordering::SeqCst)
    }

    /// Rewrites `head.json`. A failure is logged, not returned: the
    /// event itself is kept; the file is then stale, which is detected
    /// (see the module doc).
    fn write_head(&self, h: &Head) {
        let written = serde_json::to_vec(h)
            .map_err(|e| StoreError::Corrupt(e.to_string()))
            .and_then(|b| crate::local::write_private(&self.dir, HEAD_FILE, &b));
        if let Err(e) = written {
            warn!(error = %e, seq = h.seq, "Could not write the chain head file.");
        }
    }

    /// Notes the newest event, in memory and in `head.json`.
    fn set_head(&self, seq: u64, hash: &str) {
        {
            let mut st = self.lock_events();
            st.last_seq = seq;
            st.last_hash = hash.to_string();
            st.head_known = true;
        }
        self.write_head(&Head {
            seq,
            hash: hash.to_string(),
        });
    }

    /// Learns the chain head from the database, when it was not known at
    /// start.
    async fn learn_head(&self) {
        if self.lock_events().head_known {
            return;
        }
        let _w = self.write_events.lock().await;
        if self.lock_events().head_known {
            return;
        }
        match db_head(&*self.inner).await {
            Ok(h) => {
                info!(seq = h.seq, "Alert chain head read from the database.");
                self.set_head(h.seq, &h.hash);
            }
            Err(e) => {
                debug!(error = %e, "Database still unreachable; the chain head is not known yet.")
            }
        }
    }

    /// Readings dropped because the spool was full.
    pub fn dropped(&self) -> u64 {
        self.gauges.dropped.load(Ordering::SeqCst)
    }

    /// Copies what others read of the telemetry spool out of its lock.
    fn mirror(&self, r: &Readings) {
        self.gauges.readings.store(r.queue.len(), Ordering::SeqCst);
        self.gauges.oldest_reading.store(
            r.queue.front().map_or(i64::MAX, |x| x.spooled_at),
            Ordering::SeqCst,
        );
    }

    fn publish_metrics(&self) {
        let (events, oldest_event) = {
            let ev = self.lock_events();
            (ev.queue.len(), ev.queue.front().map(|e| e.at))
        };
        metrics::gauge!("eldercare_spool_events").set(events as f64);
        metrics::gauge!("eldercare_spool_readings")
            .set(self.gauges.readings.load(Ordering::SeqCst) as f64);
        let oldest_reading = match self.gauges.oldest_reading.load(Ordering::SeqCst) {
            i64::MAX => None,
            t => Some(t),
        };
        let oldest = oldest_event.into_iter().chain(oldest_reading).min();
        metrics::gauge!("eldercare_spool_oldest_seconds").set(
            oldest
                .map(|t| (now_ms() - t).max(0) as f64 / 1000.0)
                .unwrap_or(0.0),
        );
    }

    /// Replaces a spool file with `items` (removes it when there are
    /// none), atomically: a new file, synced, renamed over the old one.
    fn rewrite<T: Serialize>(&self, name: &str, items: &VecDeque<T>) -> Result<()> {
        let path = self.dir.join(name);
        let err = data_dir_err(&path);
        if items.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err(e)),
                _ => sync_dir(&self.dir),
            };
        }
        let tmp = path.with_extension("tmp");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(&err)?);
        for i in items {
            serde_json::to_writer(&mut f, i).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            f.write_all(b"\n").map_err(&err)?;
        }
        let f = f.into_inner().map_err(|e| err(e.into_error()))?;
        f.sync_all().map_err(&err)?;
        std::fs::rename(&tmp, &path).map_err(&err)?;
        sync_dir(&self.dir)
    }

    /// Appends `items` to a spool file in one write and syncs it before
    /// returning: a spooled alert event is the only copy there is, and is
    /// acknowledged only once it is on disk (the directory is synced too
    /// when the write created the file).
    fn append<T: Serialize>(&self, name: &str, items: &[T]) -> Result<()> {
        let path = self.dir.join(name);
        let err = data_dir_err(&path);
        let mut buf = Vec::new();
        for i in items {
            serde_json::to_writer(&mut buf, i).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            buf.push(b'\n');
        }
        let created = !path.exists();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(&err)?;
        f.write_all(&buf).map_err(&err)?;
        f.sync_data().map_err(&err)?;
        if created {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Notes that every spooled reading up to number `n` is gone.
    fn write_gone(&self, n: u64) -> Result<()> {
        let path = self.dir.join(GONE_FILE);
        let err = data_dir_err(&path);
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(&err)?;
        writeln!(f, "{n}").map_err(&err)?;
        f.sync_all().map_err(&err)?;
        std::fs::rename(&tmp, &path).map_err(&err)?;
        sync_dir(&self.dir)
    }

    /// Rewrites the readings file with only what is still spooled (and
    /// removes it, and the gone mark, when nothing is).
    fn compact(&self, r: &mut Readings) -> Result<()> {
        self.rewrite(READINGS_FILE, &r.queue)?;
        r.file_lines = r.queue.len();
        if r.queue.is_empty() {
            // The numbers go on from `next_n` in this run, and from above
            // the gone mark in the next if the removal below is lost.
            match std::fs::remove_file(self.dir.join(GONE_FILE)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(data_dir_err(&self.dir.join(GONE_FILE))(e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Takes the first `count` readings out of the spool, on disk too.
    fn forget(&self, r: &mut Readings, count: usize) -> Result<()> {
        let count = count.min(r.queue.len());
        if count == 0 {
            return Ok(());
        }
        let last = r.queue[count - 1].n;
        r.queue.drain(..count);
        self.mirror(r);
        let gone_lines = r.file_lines - r.queue.len();
        if r.queue.is_empty() || gone_lines >= r.queue.len().max(DRAIN_SLICE) {
            // Rewriting costs the lines still spooled; doing it only once
            // at least as many are gone keeps a whole drain linear.
            self.compact(r)
        } else {
            self.write_gone(last)
        }
    }

    /// Writes what is spooled to the database, oldest first: alert
    /// events, then readings, stopping at an outage; then saves the local
    /// copies that changed since the last drain.
    pub async fn drain(&self) {
        self.learn_head().await;
        if self.drain_events().await {
            self.drain_readings().await;
        }
        self.publish_metrics();
        if let Err(e) = self.local.save(now_ms()).await {
            warn!(error = %e, "Could not save the local copies of the registry and open alerts.");
        }
    }

    /// Writes the spooled alert events, in order, under the events lock;
    /// takes no lock when there are none. `false` when the database is
    /// unreachable.
    async fn drain_events(&self) -> bool {
        if self.lock_events().queue.is_empty() {
            return true;
        }
        let _e = self.write_events.lock().await;
        loop {
            let next = self.lock_events().queue.front().cloned();
            let Some(ev) = next else { return true };
            match self
                .inner
                .append_alert_event(NewAlertEvent {
                    kind: ev.kind,
                    alert: ev.alert.clone(),
                    actor: ev.actor.clone(),
                    at: ev.at,
                    note: ev.note.clone(),
                    decision: None,
                })
                .await
            {
                Ok(saved) => {
                    if saved.seq != ev.seq || saved.hash != ev.hash {
                        self.seq_conflicts.fetch_add(1, Ordering::SeqCst);
                        metrics::counter!("eldercare_spool_seq_conflicts_total").increment(1);
                        error!(
                            spooled_seq = ev.seq,
                            stored_seq = saved.seq,
                            alert_id = %ev.alert.id,
                            "Seq conflict: a spooled alert event was stored with another seq or hash than the spool gave it and subscribers saw. The chain head the spool numbered from was stale; the database's chain is intact, read the event by its stored seq."
                        );
                    }
                    let rest = {
                        let mut st = self.lock_events();
                        st.queue.pop_front();
                        st.queue.clone()
                    };
                    if let Err(e) = self.rewrite(EVENTS_FILE, &rest) {
                        warn!(error = %e, "Could not shorten the event spool.");
                    }
                    if rest.is_empty() {
                        // The database's head from now on (the spool's
                        // own, unless there was a conflict).
                        self.set_head(saved.seq, &saved.hash);
                    }
                }
                Err(e) if e.is_outage() => {
                    debug!(error = %e, seq = ev.seq, "Database still unreachable; the spool waits.");
                    return false;
                }
                Err(e) => {
                    // Readings are another kind: their order does not
                    // depend on this event, so they still go.
                    error!(error = %e, seq = ev.seq, "A spooled alert event cannot be stored; it stays spooled.");
                    return true;
                }
            }
        }
    }

    /// Writes the spooled readings, a slice at a time, each slice under
    /// the readings lock taken anew, so writers of new readings (which
    /// queue behind the spool) get in between.
    async fn drain_readings(&self) {
        let mut first = true;
        loop {
            let mut r = self.write_readings.lock().await;
            if r.queue.is_empty() {
                return;
            }
            if std::mem::take(&mut first) && !self.skip_stored(&mut r).await {
                return;
            }
            let end = slice_end(&r.queue);
            if end == 0 {
                return;
            }
            let slice: Vec<StoredReading> = r
                .queue
                .iter()
                .take(end)
                .filter_map(SpooledReading::stored)
                .collect();
            if slice.len() < end {
                warn!(
                    unreadable = end - slice.len(),
                    "Spooled readings that cannot be read back are left out."
                );
            }
            let newest = r.queue.iter().take(end).filter_map(|x| x.intake_pos).max();
            let (done, refused, stop) = match newest {
                Some(pos) => match self.inner.insert_readings_at(&slice, pos).await {
                    Ok(refused) => (end, refused, None),
                    Err(e) => (0, Vec::new(), Some(e)),
                },
                None => {
                    let got = refusal::isolate(&*self.inner, &slice).await;
                    // Without unreadable lines, `got.done` counts spooled
                    // readings; with them, the slice is all or nothing.
                    let done = if got.error.is_none() {
                        end
                    } else if slice.len() == end {
                        got.done
                    } else {
                        0
                    };
                    (done, got.refused, got.error)
                }
            };
            self.keep_refused(&slice, &refused).await;
            if let Err(e) = self.forget(&mut r, done) {
                warn!(error = %e, "Could not note drained readings in the spool files.");
            }
            match stop {
                None => {}
                Some(e) if e.is_outage() => {
                    debug!(error = %e, "Database still unreachable; spooled readings wait.");
                    return;
                }
                Some(e) => {
                    error!(error = %e, "Spooled readings cannot be stored; they stay spooled.");
                    return;
                }
            }
        }
    }

    /// Leaves out the spooled readings the database already has: those
    /// up to the newest with a position at or before the one it recorded
    /// (their slice was committed, then the process stopped before the
    /// spool noted it). `false` when the database is unreachable.
    async fn skip_stored(&self, r: &mut Readings) -> bool {
        if r.queue.iter().all(|x| x.intake_pos.is_none()) {
            return true;
        }
        let stored = match self.inner.intake_position().await {
            Ok(Some(p)) => p,
            Ok(None) => return true,
            Err(e) => {
                debug!(error = %e, "Database still unreachable; spooled readings wait.");
                return false;
            }
        };
        let Some(last) = r
            .queue
            .iter()
            .rposition(|x| x.intake_pos.is_some_and(|p| p <= stored))
        else {
            return true;
        };
        info!(
            readings = last + 1,
            "Spooled readings already stored before a restart; skipping them."
        );
        if let Err(e) = self.forget(r, last + 1) {
            warn!(error = %e, "Could not note drained readings in the spool files.");
        }
        true
    }

    /// Keeps readings refused while draining as dead letters: nobody is
    /// waiting for them any more to do it.
    async fn keep_refused(&self, batch: &[StoredReading], refused: &[RefusedRow]) {
        let now = now_ms();
        for why in refused {
            let Some(reading) = batch.get(why.index) else {
                continue;
            };
            let letter: DeadLetter = refused_reading_letter(reading, why, now);
            if let Err(e) = self.inner.insert_dead_letter(&letter).await {
                warn!(error = %e, "Could not keep a refused reading as a dead letter.");
            }
        }
    }

    fn spool_event(&self, ev: NewAlertEvent) -> Result<AlertEvent> {
        let body =
            serde_json::to_string(&ev.alert).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let st = self.lock_events();
        if !st.head_known {
            return Err(StoreError::Unavailable(
                "the database is unreachable and the alert chain's head is not known",
            ));
        }
        let seq = st.last_seq + 1;
        let hash = event_hash(
            &st.last_hash,
            seq,
            ev.kind,
            &ev.alert.id,
            &ev.actor,
            ev.at,
            ev.note.as_deref(),
            &body,
        );
        let spooled = SpooledEvent {
            seq,
            kind: ev.kind,
            alert: ev.alert,
            actor: ev.actor,
            at: ev.at,
            note: ev.note,
            hash: hash.clone(),
        };
        drop(st);
        self.append(EVENTS_FILE, std::slice::from_ref(&spooled))?;
        let mut st = self.lock_events();
        st.last_seq = seq;
        st.last_hash = hash;
        st.queue.push_back(spooled.clone());
        drop(st);
        self.write_head(&Head {
            seq,
            hash: spooled.hash.clone(),
        });
        self.local.alert_changed(&spooled.alert);
        metrics::counter!("eldercare_spool_events_total").increment(1);
        self.publish_metrics();
        Ok(spooled.event())
    }

    /// Appends readings to the spool (on disk first), dropping the oldest
    /// beyond the bound.
    fn spool_readings(
        &self,
        r: &mut Readings,
        readings: &[StoredReading],
        intake_pos: Option<u64>,
    ) -> Result<()> {
        if readings.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let new: Vec<SpooledReading> = readings
            .iter()
            .enumerate()
            .map(|(i, x)| SpooledReading::from(x, r.next_n + i as u64, intake_pos, now))
            .collect();
        self.append(READINGS_FILE, &new)?;
        r.next_n += new.len() as u64;
        r.file_lines += new.len();
        r.queue.extend(new);
        if let Some(p) = intake_pos {
            let mut newest = self
                .gauges
                .newest_pos
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            *newest = (*newest).max(Some(p));
        }
        let excess = r.queue.len().saturating_sub(self.max_readings);
        if excess > 0 {
            // Full: the oldest routine telemetry goes first.
            self.gauges
                .dropped
                .fetch_add(excess as u64, Ordering::SeqCst);
            metrics::counter!("eldercare_spool_readings_dropped_total").increment(excess as u64);
            // The batch is spooled whatever happens here: if the files
            // cannot say the dropped readings are gone, they are dropped
            // again when the spool is next opened.
            if let Err(e) = self.forget(r, excess) {
                warn!(error = %e, "Could not note dropped readings in the spool files.");
            }
        }
        self.mirror(r);
        self.publish_metrics();
        Ok(())
    }

    /// Stores a batch written without a position: left out, when the
    /// database refuses some of its readings, are those alone (kept as
    /// dead letters, since this call cannot hand them back); spooled,
    /// when the database is unreachable, is what was not yet written.
    async fn insert_unpositioned(
        &self,
        r: &mut Readings,
        readings: &[StoredReading],
    ) -> Result<()> {
        match self.inner.insert_readings(readings).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_refusal() => {
                let got = refusal::isolate(&*self.inner, readings).await;
                self.keep_refused(readings, &got.refused).await;
                match got.error {
                    None => Ok(()),
                    Some(e) if e.is_outage() => {
                        warn!(error = %e, "Database unreachable; spooling telemetry.");
                        self.spool_readings(r, &readings[got.done..], None)
                    }
                    Some(e) => Err(e),
                }
            }
            Err(e) if e.is_outage() => {
                warn!(error = %e, "Database unreachable; spooling telemetry.");
                self.spool_readings(r, readings, None)
            }
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Registry for SpoolingStore {
    async fn upsert_elder(&self, elder: &Elder) -> Result<bool> {
        let new = self.inner.upsert_elder(elder).await?;
        self.local.elder_written(elder);
        Ok(new)
    }
    async fn upsert_device(&self, device: &Device) -> Result<bool> {
        let new = self.inner.upsert_device(device).await?;
        self.local.device_written(device, false);
        Ok(new)
    }
    /// The local copy's answer when it has the elder (kept up to date by
    /// the rule engine's registry refreshes and this process's writes),
    /// else the database's.
    async fn get_elder_recent(&self, elder_id: &str) -> Result<Option<Elder>> {
        match self.local.elder(elder_id) {
            Some(e) => Ok(Some(e)),
            None => self.get_elder(elder_id).await,
        }
    }
    /// The database's answer, or the local copy's while it is
    /// unreachable; an elder the copy lacks is still the outage error.
    async fn get_elder(&self, elder_id: &str) -> Result<Option<Elder>> {
        let db = self.inner.get_elder(elder_id).await;
        if let Ok(e) = &db {
            self.local.elder_read(elder_id, e.as_ref());
        }
        or_local(db, "elder", || self.local.elder(elder_id).map(Some))
    }
    /// The database's answer, or the local copy's while it is
    /// unreachable; a device the copy lacks is still the outage error.
    async fn get_device(&self, device_id: &str) -> Result<Option<Device>> {
        let db = self.inner.get_device(device_id).await;
        if let Ok(d) = &db {
            self.local.device_read(device_id, d.as_ref());
        }
        or_local(db, "device", || {
            let found = self.local.device(device_id)?;
            debug!(%device_id, "Database unreachable; device read from the local copy.");
            Some(Some(found))
        })
    }
    /// A full listing falls back to the local copy; a delta does not (see
    /// the module doc). After a full listing from the copy, the next delta
    /// is asked of the database as a full listing.
    async fn list_elders(&self, changed_since: Option<EpochMs>) -> Result<Vec<Elder>> {
        let widen = changed_since.is_some() && self.local.widen(Half::Elders);
        let ask = if widen { None } else { changed_since };
        let db = self.inner.list_elders(ask).await;
        if let Ok(list) = &db {
            self.local.elders_listed(ask.is_none(), list);
            self.local.set_widen(Half::Elders, false);
        }
        or_local(db, "elders", || {
            // A delta is never answered from the copy.
            let list = changed_since.is_none().then(|| self.local.elders())??;
            info!(
                elders = list.len(),
                "Database unreachable; elders listed from the local copy."
            );
            self.local.set_widen(Half::Elders, true);
            Some(list)
        })
    }
    async fn list_devices(&self, changed_since: Option<EpochMs>) -> Result<Vec<Device>> {
        let widen = changed_since.is_some() && self.local.widen(Half::Devices);
        let ask = if widen { None } else { changed_since };
        let db = self.inner.list_devices(ask).await;
        if let Ok(list) = &db {
            self.local.devices_listed(ask.is_none(), list);
            self.local.set_widen(Half::Devices, false);
        }
        or_local(db, "devices", || {
            // A delta is never answered from the copy.
            let list = changed_since.is_none().then(|| self.local.devices())??;
            info!(
                devices = list.len(),
                "Database unreachable; devices listed from the local copy."
            );
            self.local.set_widen(Half::Devices, true);
            Some(list)
        })
    }
    async fn insert_elder(&self, elder: &Elder) -> Result<bool> {
        let written = self.inner.insert_elder(elder).await?;
        if written {
            self.local.elder_written(elder);
        }
        Ok(written)
    }
    async fn update_elder(&self, elder: &Elder) -> Result<bool> {
        let written = self.inner.update_elder(elder).await?;
        if written {
            self.local.elder_written(elder);
        }
        Ok(written)
    }
    async fn delete_elder(&self, elder_id: &str) -> Result<ElderDeletion> {
        let done = self.inner.delete_elder(elder_id).await?;
        if done == ElderDeletion::Deleted {
            self.local.elder_read(elder_id, None);
        }
        Ok(done)
    }
    async fn query_elders(&self, query: &ElderQuery) -> Result<Vec<Elder>> {
        or_local(self.inner.query_elders(query).await, "elders", || {
            self.local.query_elders(query)
        })
    }
    async fn insert_device(&self, device: &Device) -> Result<DeviceWrite> {
        let done = self.inner.insert_device(device).await?;
        if done == DeviceWrite::Written {
            self.local.device_written(device, false);
        }
        Ok(done)
    }
    async fn update_device(&self, device: &Device) -> Result<DeviceWrite> {
        let done = self.inner.update_device(device).await?;
        if done == DeviceWrite::Written {
            self.local.device_written(device, true);
        }
        Ok(done)
    }
    async fn set_device_secret(&self, device_id: &str, salt: &str, hash: &str) -> Result<bool> {
        let done = self.inner.set_device_secret(device_id, salt, hash).await?;
        if done {
            self.local.device_secret(device_id, salt, hash);
        }
        Ok(done)
    }
    async fn delete_device(&self, device_id: &str) -> Result<bool> {
        let done = self.inner.delete_device(device_id).await?;
        if done {
            self.local.device_read(device_id, None);
        }
        Ok(done)
    }
    async fn query_devices(&self, query: &DeviceQuery) -> Result<Vec<Device>> {
        or_local(self.inner.query_devices(query).await, "devices", || {
            self.local.query_devices(query)
        })
    }
    // Providers, carers and plans are not in the local copy: during an
    // outage they fail like any other database read.
    async fn upsert_provider(&self, p: &Provider) -> Result<bool> {
        self.inner.upsert_provider(p).await
    }
    async fn delete_provider(&self, provider_id: &str) -> Result<bool> {
        self.inner.delete_provider(provider_id).await
    }
    async fn list_providers(&self) -> Result<Vec<Provider>> {
        self.inner.list_providers().await
    }
    async fn upsert_carer(&self, c: &Carer) -> Result<bool> {
        self.inner.upsert_carer(c).await
    }
    async fn delete_carer(&self, carer_id: &str) -> Result<bool> {
        self.inner.delete_carer(carer_id).await
    }
    async fn list_carers(&self) -> Result<Vec<Carer>> {
        self.inner.list_carers().await
    }
    async fn upsert_visit_plan(&self, p: &VisitPlan) -> Result<bool> {
        self.inner.upsert_visit_plan(p).await
    }
    async fn delete_visit_plan(&self, plan_id: &str) -> Result<bool> {
        self.inner.delete_visit_plan(plan_id).await
    }
    async fn list_visit_plans(&self) -> Result<Vec<VisitPlan>> {
        self.inner.list_visit_plans().await
    }
}

#[async_trait]
impl Telemetry for SpoolingStore {
    /// As the inner store's, except that a batch the database refuses
    /// some readings of is not lost: the others are stored and the
    /// refused kept as dead letters.
    async fn insert_readings(&self, readings: &[StoredReading]) -> Result<()> {
        let mut r = self.write_readings.lock().await;
        if r.queue.is_empty() {
            return self.insert_unpositioned(&mut r, readings).await;
        }
        self.spool_readings(&mut r, readings, None)
    }
    /// While the database is unreachable, or anything is spooled, the
    /// batch goes to the spool with its position: readings no backend
    /// stores are refused at once, the rest are checked when the spool
    /// is written, and those the database refuses then are kept as dead
    /// letters.
    async fn insert_readings_at(
        &self,
        readings: &[StoredReading],
        intake_pos: u64,
    ) -> Result<Vec<RefusedRow>> {
        if i64::try_from(intake_pos).is_err() {
            return Err(StoreError::OutOfRange(format!(
                "intake position {intake_pos} is beyond what the database holds"
            )));
        }
        let mut r = self.write_readings.lock().await;
        if r.queue.is_empty() {
            match self.inner.insert_readings_at(readings, intake_pos).await {
                Err(e) if e.is_outage() => {
                    warn!(error = %e, "Database unreachable; spooling telemetry.");
                }
                done => return done,
            }
        }
        let mut refused = Vec::new();
        let mut keep = Vec::with_capacity(readings.len());
        for (index, x) in readings.iter().enumerate() {
            match refusal::unstorable(x) {
                Some(reason) => refused.push(RefusedRow { index, reason }),
                None => keep.push(x.clone()),
            }
        }
        refusal::note_refused(&refused, readings.len());
        self.spool_readings(&mut r, &keep, Some(intake_pos))?;
        Ok(refused)
    }
    /// The newer of the position recorded in the database and the newest
    /// spooled; the spooled one alone while the database is unreachable.
    /// A cluster's partitions write to the database directly (their
    /// stream is their spool): forwarded, never spooled.
    async fn insert_readings_keyed(
        &self,
        readings: &[StoredReading],
        key: &str,
        intake_pos: u64,
    ) -> Result<Vec<RefusedRow>> {
        self.inner
            .insert_readings_keyed(readings, key, intake_pos)
            .await
    }

    async fn keyed_position(&self, key: &str) -> Result<Option<u64>> {
        self.inner.keyed_position(key).await
    }

    async fn intake_position(&self) -> Result<Option<u64>> {
        let spooled = *self
            .gauges
            .newest_pos
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match self.inner.intake_position().await {
            Ok(stored) => Ok(stored.max(spooled)),
            // Anything spooled came after what the database has.
            Err(e) if e.is_outage() && spooled.is_some() => Ok(spooled),
            Err(e) => Err(e),
        }
    }
    async fn query_readings(&self, query: &ReadingQuery) -> Result<Vec<ReadingRecord>> {
        self.inner.query_readings(query).await
    }
    async fn latest_readings(&self, elder_id: &str) -> Result<Vec<ReadingRecord>> {
        self.inner.latest_readings(elder_id).await
    }
    async fn vitals_hourly(
        &self,
        elder_id: &str,
        from: EpochMs,
        to: EpochMs,
    ) -> Result<Vec<VitalsHour>> {
        self.inner.vitals_hourly(elder_id, from, to).await
    }
}

#[async_trait]
impl AlertLog for SpoolingStore {
    async fn append_alert_event(&self, event: NewAlertEvent) -> Result<AlertEvent> {
        let _w = self.write_events.lock().await;
        if self.lock_events().queue.is_empty() {
            match self.inner.append_alert_event(event.clone()).await {
                Ok(saved) => {
                    self.set_head(saved.seq, &saved.hash);
                    self.local.alert_changed(&saved.alert);
                    return Ok(saved);
                }
                Err(e) if e.is_outage() => {
                    warn!(error = %e, "Database unreachable; spooling alert events (they are delivered meanwhile).");
                }
                Err(e) => return Err(e),
            }
        }
        self.spool_event(event)
    }
    async fn events_after(&self, after_seq: u64, limit: u32) -> Result<Vec<AlertEvent>> {
        let spooled: Vec<AlertEvent> = {
            let st = self.lock_events();
            // Nothing lies beyond the head: a subscriber that is up to
            // date is answered without the database.
            if st.head_known && after_seq >= st.last_seq {
                return Ok(Vec::new());
            }
            st.queue
                .iter()
                .filter(|e| e.seq > after_seq)
                .map(SpooledEvent::event)
                .collect()
        };
        let first_spooled = spooled.first().map(|e| e.seq);
        match first_spooled {
            // Everything asked for is in the spool.
            Some(first) if first == after_seq + 1 => {
                Ok(spooled.into_iter().take(limit as usize).collect())
            }
            _ => {
                let mut stored = self.inner.events_after(after_seq, limit).await?;
                let last = stored.last().map(|e| e.seq).unwrap_or(after_seq);
                let room = (limit as usize).saturating_sub(stored.len());
                stored.extend(spooled.into_iter().filter(|e| e.seq > last).take(room));
                Ok(stored)
            }
        }
    }
    async fn last_decision(&self) -> Result<u64> {
        // Spooled events carry no decision (a cluster's desk writes to
        // the database directly, the decision log being its spool).
        self.inner.last_decision().await
    }
    async fn last_seq(&self) -> Result<u64> {
        let st = self.lock_events();
        if st.head_known {
            Ok(st.last_seq)
        } else {
            Err(StoreError::Unavailable(
                "the database is unreachable and the alert chain's head is not known",
            ))
        }
    }
    async fn get_alert(&self, id: &str) -> Result<Option<Alert>> {
        // The newest state may still be in the spool.
        let spooled = self
            .lock_events()
            .queue
            .iter()
            .rev()
            .find(|e| e.alert.id == id)
            .map(|e| e.alert.clone());
        match spooled {
            Some(a) => Ok(Some(a)),
            None => or_local(self.inner.get_alert(id).await, "alert", || {
                self.local.alert(id).map(Some)
            }),
        }
    }
    async fn list_alerts(&self, query: &AlertQuery) -> Result<Vec<Alert>> {
        self.inner.list_alerts(query).await
    }
    /// The database's, with the newer states of spooled events applied;
    /// while it is unreachable, the local copy's (kept up to date from
    /// every event appended).
    async fn unresolved_alerts(&self) -> Result<Vec<Alert>> {
        let db = self.inner.unresolved_alerts().await.map(|stored| {
            let mut by_id: std::collections::BTreeMap<String, Alert> =
                stored.into_iter().map(|a| (a.id.clone(), a)).collect();
            for e in &self.lock_events().queue {
                if e.alert.state == eldercare_model::AlertState::Resolved {
                    by_id.remove(&e.alert.id);
                } else {
                    by_id.insert(e.alert.id.clone(), e.alert.clone());
                }
            }
            let list: Vec<Alert> = by_id.into_values().collect();
            self.local.alerts_listed(&list);
            list
        });
        or_local(db, "alerts", || {
            let list = self.local.unresolved()?;
            info!(
                alerts = list.len(),
                "Database unreachable; open alerts read from the local copy."
            );
            Some(list)
        })
    }
    async fn events_of_alert(&self, alert_id: &str) -> Result<Vec<AlertEvent>> {
        let mut stored = self.inner.events_of_alert(alert_id).await?;
        let last = stored.last().map(|e| e.seq).unwrap_or(0);
        stored.extend(
            self.lock_events()
                .queue
                .iter()
                .filter(|e| e.alert.id == alert_id && e.seq > last)
                .map(SpooledEvent::event),
        );
        Ok(stored)
    }
    async fn verify_chain(&self) -> Result<ChainReport> {
        self.inner.verify_chain().await
    }
    async fn insert_silence(&self, silence: &Silence) -> Result<()> {
        self.inner.insert_silence(silence).await?;
        self.local.silence_written(silence);
        Ok(())
    }
    /// While the database is unreachable, the silences active at a time
    /// come from the local copy; all of them (`None`) do not.
    async fn silences(&self, active_at: Option<EpochMs>) -> Result<Vec<Silence>> {
        let db = self.inner.silences(active_at).await;
        if let Ok(list) = &db {
            self.local.silences_listed(list, now_ms());
        }
        or_local(db, "silences", || {
            active_at.and_then(|t| self.local.silences_at(t))
        })
    }
}

#[async_trait]
impl DeadLetters for SpoolingStore {
    async fn insert_dead_letter(&self, dl: &DeadLetter) -> Result<()> {
        self.inner.insert_dead_letter(dl).await
    }
    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>> {
        self.inner.dead_letters(limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqliteStore;
    use eldercare_model::{AlertKind, AlertState, Motion, Severity, Status};
    use std::sync::atomic::AtomicBool;
    use tokio::sync::{Semaphore, mpsc};

    /// A store whose database can be "switched off", and whose readings
    /// writes can be made slow, held at a gate, or acknowledged wrongly.
    struct Flaky {
        inner: SqliteStore,
        down: AtomicBool,
        /// Readings writes commit, then answer as if the connection
        /// dropped (the commit's answer lost).
        ack_lost: AtomicBool,
        /// When set, each readings write reports its size here and waits
        /// for a permit of the semaphore.
        gate: Option<(Semaphore, mpsc::UnboundedSender<usize>)>,
        /// Each readings write takes this long.
        delay: Duration,
        /// Sizes of the readings writes that reached the database.
        batches: Mutex<Vec<usize>>,
    }

    impl Flaky {
        async fn new(dir: &Path) -> Flaky {
            Flaky {
                inner: SqliteStore::open(dir).await.unwrap(),
                down: AtomicBool::new(false),
                ack_lost: AtomicBool::new(false),
                gate: None,
                delay: Duration::ZERO,
                batches: Mutex::new(Vec::new()),
            }
        }

        fn check(&self) -> Result<()> {
            if self.down.load(Ordering::SeqCst) {
                Err(StoreError::Db(sqlx::Error::PoolTimedOut))
            } else {
                Ok(())
            }
        }

        async fn readings_write(&self, n: usize) -> Result<()> {
            self.check()?;
            self.batches.lock().unwrap().push(n);
            if let Some((permits, started)) = &self.gate {
                let _ = started.send(n);
                permits.acquire().await.unwrap().forget();
            }
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            Ok(())
        }

        fn answer<T>(&self, r: Result<T>) -> Result<T> {
            match r {
                Ok(_) if self.ack_lost.load(Ordering::SeqCst) => {
                    Err(StoreError::Db(sqlx::Error::PoolTimedOut))
                }
                r => r,
            }
        }
    }

    #[async_trait]
    impl Registry for Flaky {
        async fn upsert_elder(&self, elder: &Elder) -> Result<bool> {
            self.check()?;
            self.inner.upsert_elder(elder).await
        }
        async fn upsert_device(&self, device: &Device) -> Result<bool> {
            self.check()?;
            self.inner.upsert_device(device).await
        }
        async fn get_elder(&self, elder_id: &str) -> Result<Option<Elder>> {
            self.check()?;
            self.inner.get_elder(elder_id).await
        }
        async fn get_device(&self, device_id: &str) -> Result<Option<Device>> {
            self.check()?;
            self.inner.get_device(device_id).await
        }
        async fn list_elders(&self, changed_since: Option<EpochMs>) -> Result<Vec<Elder>> {
            self.check()?;
            self.inner.list_elders(changed_since).await
        }
        async fn list_devices(&self, changed_since: Option<EpochMs>) -> Result<Vec<Device>> {
            self.check()?;
            self.inner.list_devices(changed_since).await
        }
        async fn insert_elder(&self, elder: &Elder) -> Result<bool> {
            self.check()?;
            self.inner.insert_elder(elder).await
        }
        async fn update_elder(&self, elder: &Elder) -> Result<bool> {
            self.check()?;
            self.inner.update_elder(elder).await
        }
        async fn delete_elder(&self, elder_id: &str) -> Result<ElderDeletion> {
            self.check()?;
            self.inner.delete_elder(elder_id).await
        }
        async fn query_elders(&self, query: &ElderQuery) -> Result<Vec<Elder>> {
            self.check()?;
            self.inner.query_elders(query).await
        }
        async fn insert_device(&self, device: &Device) -> Result<DeviceWrite> {
            self.check()?;
            self.inner.insert_device(device).await
        }
        async fn update_device(&self, device: &Device) -> Result<DeviceWrite> {
            self.check()?;
            self.inner.update_device(device).await
        }
        async fn set_device_secret(&self, device_id: &str, salt: &str, hash: &str) -> Result<bool> {
            self.check()?;
            self.inner.set_device_secret(device_id, salt, hash).await
        }
        async fn delete_device(&self, device_id: &str) -> Result<bool> {
            self.check()?;
            self.inner.delete_device(device_id).await
        }
        async fn query_devices(&self, query: &DeviceQuery) -> Result<Vec<Device>> {
            self.check()?;
            self.inner.query_devices(query).await
        }
        async fn upsert_provider(&self, p: &Provider) -> Result<bool> {
            self.check()?;
            self.inner.upsert_provider(p).await
        }
        async fn delete_provider(&self, provider_id: &str) -> Result<bool> {
            self.check()?;
            self.inner.delete_provider(provider_id).await
        }
        async fn list_providers(&self) -> Result<Vec<Provider>> {
            self.check()?;
            self.inner.list_providers().await
        }
        async fn upsert_carer(&self, c: &Carer) -> Result<bool> {
            self.check()?;
            self.inner.upsert_carer(c).await
        }
        async fn delete_carer(&self, carer_id: &str) -> Result<bool> {
            self.check()?;
            self.inner.delete_carer(carer_id).await
        }
        async fn list_carers(&self) -> Result<Vec<Carer>> {
            self.check()?;
            self.inner.list_carers().await
        }
        async fn upsert_visit_plan(&self, p: &VisitPlan) -> Result<bool> {
            self.check()?;
            self.inner.upsert_visit_plan(p).await
        }
        async fn delete_visit_plan(&self, plan_id: &str) -> Result<bool> {
            self.check()?;
            self.inner.delete_visit_plan(plan_id).await
        }
        async fn list_visit_plans(&self) -> Result<Vec<VisitPlan>> {
            self.check()?;
            self.inner.list_visit_plans().await
        }
    }

    #[async_trait]
    impl Telemetry for Flaky {
        async fn insert_readings(&self, readings: &[StoredReading]) -> Result<()> {
            self.readings_write(readings.len()).await?;
            self.answer(self.inner.insert_readings(readings).await)
        }
        async fn insert_readings_at(
            &self,
            readings: &[StoredReading],
            intake_pos: u64,
        ) -> Result<Vec<RefusedRow>> {
            self.readings_write(readings.len()).await?;
            self.answer(self.inner.insert_readings_at(readings, intake_pos).await)
        }
        async fn intake_position(&self) -> Result<Option<u64>> {
            self.check()?;
            self.inner.intake_position().await
        }
        async fn insert_readings_keyed(
            &self,
            readings: &[StoredReading],
            key: &str,
            intake_pos: u64,
        ) -> Result<Vec<RefusedRow>> {
            self.check()?;
            self.inner
                .insert_readings_keyed(readings, key, intake_pos)
                .await
        }
        async fn keyed_position(&self, key: &str) -> Result<Option<u64>> {
            self.check()?;
            self.inner.keyed_position(key).await
        }
        async fn query_readings(&self, query: &ReadingQuery) -> Result<Vec<ReadingRecord>> {
            self.check()?;
            self.inner.query_readings(query).await
        }
        async fn latest_readings(&self, elder_id: &str) -> Result<Vec<ReadingRecord>> {
            self.check()?;
            self.inner.latest_readings(elder_id).await
        }
        async fn vitals_hourly(
            &self,
            elder_id: &str,
            from: EpochMs,
            to: EpochMs,
        ) -> Result<Vec<VitalsHour>> {
            self.check()?;
            self.inner.vitals_hourly(elder_id, from, to).await
        }
    }

    #[async_trait]
    impl AlertLog for Flaky {
        async fn append_alert_event(&self, event: NewAlertEvent) -> Result<AlertEvent> {
            self.check()?;
            self.inner.append_alert_event(event).await
        }
        async fn events_after(&self, after_seq: u64, limit: u32) -> Result<Vec<AlertEvent>> {
            self.check()?;
            self.inner.events_after(after_seq, limit).await
        }
        async fn last_seq(&self) -> Result<u64> {
            self.check()?;
            self.inner.last_seq().await
        }
        async fn last_decision(&self) -> Result<u64> {
            self.check()?;
            self.inner.last_decision().await
        }
        async fn get_alert(&self, id: &str) -> Result<Option<Alert>> {
            self.check()?;
            self.inner.get_alert(id).await
        }
        async fn list_alerts(&self, query: &AlertQuery) -> Result<Vec<Alert>> {
            self.check()?;
            self.inner.list_alerts(query).await
        }
        async fn unresolved_alerts(&self) -> Result<Vec<Alert>> {
            self.check()?;
            self.inner.unresolved_alerts().await
        }
        async fn events_of_alert(&self, alert_id: &str) -> Result<Vec<AlertEvent>> {
            self.check()?;
            self.inner.events_of_alert(alert_id).await
        }
        async fn verify_chain(&self) -> Result<ChainReport> {
            self.check()?;
            self.inner.verify_chain().await
        }
        async fn insert_silence(&self, silence: &Silence) -> Result<()> {
            self.check()?;
            self.inner.insert_silence(silence).await
        }
        async fn silences(&self, active_at: Option<EpochMs>) -> Result<Vec<Silence>> {
            self.check()?;
            self.inner.silences(active_at).await
        }
    }

    #[async_trait]
    impl DeadLetters for Flaky {
        async fn insert_dead_letter(&self, dl: &DeadLetter) -> Result<()> {
            self.check()?;
            self.inner.insert_dead_letter(dl).await
        }
        async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>> {
            self.check()?;
            self.inner.dead_letters(limit).await
        }
    }

    fn alert(id: &str, state: AlertState) -> Alert {
        Alert {
            id: id.into(),
            elder_id: "E1".into(),
            device_id: "btn-1".into(),
            kind: AlertKind::Sos,
            severity: Severity::Critical,
            state,
            raised_at: 1,
            detected_at: 1,
            updated_at: 1,
            summary: "SOS".into(),
            summary_zh: String::new(),
            subject: None,
            window: None,
            score: None,
            factors: Vec::new(),
            readings: Vec::new(),
            occurrences: 1,
            outcome: None,
            district: None,
            community: None,
            muted: false,
            silence_id: None,
            escalations: 0,
            responder: None,
            acknowledged_at: None,
            dispatched_at: None,
            resolved_at: None,
            late_ms: None,
            recorded: false,
            visit: None,
            route: None,
        }
    }

    fn event(id: &str, at: EpochMs) -> NewAlertEvent {
        NewAlertEvent {
            kind: AlertEventKind::Raised,
            alert: alert(id, AlertState::Open),
            actor: String::new(),
            at,
            note: None,
            decision: None,
        }
    }

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
    async fn an_outage_spools_in_order_keeps_seq_and_chain_and_loses_no_alert() {
        let dir = tempfile::tempdir().unwrap();
        let flaky = Arc::new(Flaky::new(dir.path()).await);
        let spool = SpoolingStore::open(flaky.clone(), &dir.path().join("spool"), 5)
            .await
            .unwrap();
        assert_eq!(
            spool.append_alert_event(event("a1", 1)).await.unwrap().seq,
            1
        );
        spool.insert_readings(&[reading(1)]).await.unwrap();

        // The database goes away: writes still succeed, in order.
        flaky.down.store(true, Ordering::SeqCst);
        let e2 = spool.append_alert_event(event("a2", 2)).await.unwrap();
        let e3 = spool.append_alert_event(event("a3", 3)).await.unwrap();
        assert_eq!((e2.seq, e3.seq), (2, 3));
        for i in 2..10 {
            spool.insert_readings(&[reading(i)]).await.unwrap();
        }
        assert_eq!(spool.spooled(), (2, 5), "telemetry bounded at 5");
        assert_eq!(spool.dropped(), 3, "the oldest readings went first");
        // Subscribers can still replay what they missed.
        let replay = spool.events_after(1, 10).await.unwrap();
        assert_eq!(replay.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
        spool.drain().await;
        assert_eq!(spool.spooled(), (2, 5), "nothing written while down");

        // A restart while down: the spool is on disk.
        drop(spool);
        let spool = SpoolingStore::open(flaky.clone(), &dir.path().join("spool"), 5)
            .await
            .unwrap();
        assert_eq!(spool.spooled(), (2, 5));
        assert_eq!(spool.last_seq().await.unwrap(), 3);

        // Back: the spool goes in first, then new writes; seq gap-free and
        // the chain intact.
        flaky.down.store(false, Ordering::SeqCst);
        spool.drain().await;
        assert_eq!(spool.spooled(), (0, 0));
        assert_eq!(
            spool.append_alert_event(event("a4", 4)).await.unwrap().seq,
            4
        );
        let stored = flaky.inner.events_after(0, 10).await.unwrap();
        assert_eq!(
            stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(stored[1].hash, e2.hash, "the spool computed the same chain");
        let chain = flaky.inner.verify_chain().await.unwrap();
        assert_eq!((chain.checked, chain.first_break), (4, None));
        let readings = flaky
            .inner
            .query_readings(&ReadingQuery {
                subject: crate::ReadingSubject::Device("btn-1".into()),
                from: None,
                to: None,
                streams: Vec::new(),
                newest_first: false,
                after: None,
                limit: 100,
            })
            .await
            .unwrap();
        assert_eq!(readings.len(), 6, "1 before, the newest 5 of the outage");
    }

    fn motion(device: &str, i: u64, room: &str) -> StoredReading {
        StoredReading {
            elder_id: "E1".into(),
            reading: Reading {
                device_id: device.into(),
                seq: Some(i),
                // One ts for all: stored order is then arrival order.
                ts_ms: 1_000,
                body: Body::Motion(Motion {
                    room: room.into(),
                    motion: true,
                }),
            },
        }
    }

    fn batch(device: &str, seqs: std::ops::Range<u64>) -> Vec<StoredReading> {
        seqs.map(|i| motion(device, i, "hall")).collect()
    }

    /// The seqs of a device's stored readings, in stored order.
    async fn stored_seqs(store: &dyn Store, device: &str) -> Vec<u64> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .query_readings(&ReadingQuery {
                    subject: crate::ReadingSubject::Device(device.into()),
                    from: None,
                    to: None,
                    streams: Vec::new(),
                    newest_first: false,
                    after,
                    limit: 5000,
                })
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            after = Some((last.ts_ms, last.id));
            out.extend(page.iter().filter_map(|r| r.seq));
        }
        out
    }

    /// Makes the SQLite database itself refuse every reading of
    /// `refuse-me`, with a trigger, as a constraint would.
    async fn refuse_in_database(dir: &Path) {
        let raw =
            sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.join("eldercare.db").display()))
                .await
                .unwrap();
        sqlx::query(
            "CREATE TRIGGER refuse_me BEFORE INSERT ON readings
             WHEN NEW.device_id = 'refuse-me'
             BEGIN SELECT RAISE(ABORT, 'refused for the test'); END",
        )
        .execute(&raw)
        .await
        .unwrap();
        raw.close().await;
    }

    #[tokio::test]
    async fn a_refused_reading_is_left_out_the_rest_stored_and_nothing_spooled() {
        let dir = tempfile::tempdir().unwrap();
        let flaky = Arc::new(Flaky::new(dir.path()).await);
        refuse_in_database(dir.path()).await;
        let spool = SpoolingStore::open(flaky.clone(), &dir.path().join("spool"), 100)
            .await
            .unwrap();

        // A NUL in text, which no backend stores: refused before the
        // database is asked.
        let mut b = batch("pir-1", 1..4);
        b[1] = motion("pir-1", 2, "bed\0room");
        let refused = spool.insert_readings_at(&b, 7).await.unwrap();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].index, 1);
        assert!(
            refused[0].reason.contains("`room`"),
            "{}",
            refused[0].reason
        );
        assert_eq!(stored_seqs(&*spool, "pir-1").await, vec![1, 3]);
        assert_eq!(spool.intake_position().await.unwrap(), Some(7));

        // The database itself refuses one (SQLite: a trigger's ABORT).
        let mut b = batch("pir-1", 4..7);
        b.insert(1, motion("refuse-me", 50, "hall"));
        let refused = spool.insert_readings_at(&b, 8).await.unwrap();
        assert_eq!(refused.iter().map(|r| r.index).collect::<Vec<_>>(), vec![1]);
        assert!(
            refused[0].reason.contains("refused by the database (1811"),
            "{}",
            refused[0].reason
        );
        assert_eq!(stored_seqs(&*spool, "pir-1").await, vec![1, 3, 4, 5, 6]);
        assert_eq!(spool.intake_position().await.unwrap(), Some(8));
        assert_eq!(spool.spooled(), (0, 0), "a refusal is not an outage");

        // Without a position the batch is not lost either: the refused
        // reading becomes a dead letter, the others are stored.
        let mut b = batch("pir-1", 7..10);
        b.push(motion("refuse-me", 51, "hall"));
        spool.insert_readings(&b).await.unwrap();
        assert_eq!(
            stored_seqs(&*spool, "pir-1").await,
            vec![1, 3, 4, 5, 6, 7, 8, 9]
        );
        assert_eq!(spool.spooled(), (0, 0));
        let letters = spool.dead_letters(10).await.unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].reason, crate::STORE_REFUSED);
        assert_eq!(letters[0].topic, "eldercare/v1/refuse-me/motion");
        let payload: serde_json::Value = serde_json::from_slice(&letters[0].payload).unwrap();
        assert_eq!(payload["seq"], 51);
        assert_eq!(payload["room"], "hall");

        // Nothing is retried: a drain writes nothing more.
        let writes = flaky.batches.lock().unwrap().len();
        spool.drain().await;
        assert_eq!(flaky.batches.lock().unwrap().len(), writes);
        assert_eq!(
            stored_seqs(&flaky.inner, "refuse-me").await,
            Vec::<u64>::new()
        );
    }

    #[tokio::test]
    async fn readings_refused_while_draining_become_dead_letters_and_the_spool_empties() {
        let dir = tempfile::tempdir().unwrap();
        let flaky = Arc::new(Flaky::new(dir.path()).await);
        refuse_in_database(dir.path()).await;
        let spool = SpoolingStore::open(flaky.clone(), &dir.path().join("spool"), 100)
            .await
            .unwrap();
        flaky.down.store(true, Ordering::SeqCst);
        let mut b = batch("pir-1", 1..4);
        b.insert(2, motion("refuse-me", 90, "hall"));
        assert_eq!(spool.insert_readings_at(&b, 10).await.unwrap(), Vec::new());
        // A NUL is refused at once, even while spooling.
        let refused = spool
            .insert_readings_at(&[motion("pir-1", 4, "hall"), motion("pir-1", 5, "\0")], 11)
            .await
            .unwrap();
        assert_eq!(refused.iter().map(|r| r.index).collect::<Vec<_>>(), vec![1]);
        assert_eq!(spool.spooled(), (0, 5));
        assert_eq!(
            spool.intake_position().await.unwrap(),
            Some(11),
            "the spool's, while down"
        );
        spool.drain().await;
        assert_eq!(spool.spooled(), (0, 5));

        flaky.down.store(false, Ordering::SeqCst);
        spool.drain().await;
        assert_eq!(
            spool.spooled(),
            (0, 0),
            "the refused reading is not kept for retry"
        );
        assert_eq!(stored_seqs(&*spool, "pir-1").await, vec![1, 2, 3, 4]);
        assert_eq!(flaky.inner.intake_position().await.unwrap(), Some(11));
        let letters = spool.dead_letters(10).await.unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].sender.as_deref(), Some("refuse-me"));
        assert!(letters[0].detail.contains("1811"), "{}", letters[0].detail);
        // Written once: one slice (both batches), then nothing to retry.
        let writes = flaky.batches.lock().unwrap().clone();
        assert_eq!(writes, vec![5]);
        spool.drain().await;
        assert_eq!(*flaky.batches.lock().unwrap(), writes);
        assert!(!dir.path().join("spool").join(READINGS_FILE).exists());
    }

    #[tokio::test]
    async fn a_batch_stored_but_not_acknowledged_is_not_stored_twice() {
        let dir = tempfile::tempdir().unwrap();
        let flaky = Arc::new(Flaky::new(dir.path()).await);
        let spool = SpoolingStore::open(flaky.clone(), &dir.path().join("spool"), 100)
            .await
            .unwrap();
        spool
            .insert_readings_at(&batch("pir-1", 1..3), 2)
            .await
            .unwrap();
        // The database commits the next batch and its position, but the
        // answer is lost: to the spool it is an outage, so it spools it.
        flaky.ack_lost.store(true, Ordering::SeqCst);
        spool
            .insert_readings_at(&batch("pir-1", 3..5), 4)
            .await
            .unwrap();
        flaky.ack_lost.store(false, Ordering::SeqCst);
        assert_eq!(spool.spooled(), (0, 2));
        spool
            .insert_readings_at(&batch("pir-1", 5..7), 6)
            .await
            .unwrap();
        assert_eq!(spool.spooled(), (0, 4), "queued behind the spool");

        // A restart, then the drain: the database has position 4, so the
        // batch it covers is skipped and only the next one is written.
        drop(spool);
        let spool = SpoolingStore::open(flaky.clone(), &dir.path().join("spool"), 100)
            .await
            .unwrap();
        assert_eq!(spool.intake_position().await.unwrap(), Some(6));
        spool.drain().await;
        assert_eq!(spool.spooled(), (0, 0));
        assert_eq!(stored_seqs(&*spool, "pir-1").await, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(flaky.inner.intake_position().await.unwrap(), Some(6));
        // Positions only grow.
        spool
            .insert_readings_at(&batch("pir-1", 7..8), 3)
            .await
            .unwrap();
        assert_eq!(spool.intake_position().await.unwrap(), Some(6));
        assert_eq!(flaky.inner.intake_position().await.unwrap(), Some(6));
    }

    #[tokio::test]
    async fn a_torn_last_line_is_skipped_and_a_damaged_middle_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let flaky = Arc::new(Flaky::new(dir.path()).await);
        let spool_dir = dir.path().join("spool");
        let spool = SpoolingStore::open(flaky.clone(), &spool_dir, 100)
            .await
            .unwrap();
        flaky.down.store(true, Ordering::SeqCst);
        spool.append_alert_event(event("a1", 1)).await.unwrap();
        spool.append_alert_event(event("a2", 2)).await.unwrap();
        spool
            .insert_readings_at(&batch("pir-1", 1..4), 3)
            .await
            .unwrap();
        drop(spool);

        // A crash in the middle of the next appends.
        let torn = |name: &str, text: &str| {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(spool_dir.join(name))
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        torn(EVENTS_FILE, r#"{"seq":3,"kind":"rai"#);
        torn(READINGS_FILE, r#"{"n":4,"elder_id":"E1","dev"#);
        let spool = SpoolingStore::open(flaky.clone(), &spool_dir, 100)
            .await
            .unwrap();
        assert_eq!(spool.spooled(), (2, 3), "the torn lines alone are gone");
        assert_eq!(spool.last_seq().await.unwrap(), 2);
        // The files were repaired: what is appended now reads back.
        assert_eq!(
            spool.append_alert_event(event("a3", 3)).await.unwrap().seq,
            3
        );
        spool
            .insert_readings_at(&batch("pir-1", 4..5), 4)
            .await
            .unwrap();
        drop(spool);
        let spool = SpoolingStore::open(flaky.clone(), &spool_dir, 100)
            .await
            .unwrap();
        assert_eq!(spool.spooled(), (3, 4));
        flaky.down.store(false, Ordering::SeqCst);
        spool.drain().await;
        assert_eq!(spool.spooled(), (0, 0));
        assert_eq!(stored_seqs(&*spool, "pir-1").await, vec![1, 2, 3, 4]);
        assert_eq!(flaky.inner.last_seq().await.unwrap(), 3);
        drop(spool);

        // Damage before the last line is not a torn write: refused.
        let spool = SpoolingStore::open(flaky.clone(), &spool_dir, 100)
            .await
            .unwrap();
        flaky.down.store(true, Ordering::SeqCst);
        spool.append_alert_event(event("a4", 4)).await.unwrap();
        drop(spool);
        let path = spool_dir.join(EVENTS_FILE);
        let good = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{{\"seq\":4,\"ki\n{good}")).unwrap();
        let err = SpoolingStore::open(flaky.clone(), &spool_dir, 100)
            .await
            .err()
            .expect("a damaged spool is an error");
        assert!(
            matches!(err, StoreError::Corrupt(ref m) if m.contains("line 1")),
            "{err}"
        );
    }

    /// Spools `batches` batches of 1,000 readings of `pir-1` (seq 1..),
    /// with intake positions 1, 2, ..., while the database is down.
    async fn spool_during_outage(spool: &SpoolingStore, flaky: &Flaky, batches: u64) {
        flaky.down.store(true, Ordering::SeqCst);
        for b in 0..batches {
            let readings = batch("pir-1", b * 1000 + 1..(b + 1) * 1000 + 1);
            spool.insert_readings_at(&readings, b + 1).await.unwrap();
        }
        flaky.down.store(false, Ordering::SeqCst);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_new_alert_event_does_not_wait_for_the_readings_drain() {
        let dir = tempfile::tempdir().unwrap();
        let (started_tx, mut started) = mpsc::unbounded_channel();
        let mut flaky = Flaky::new(dir.path()).await;
        flaky.gate = Some((Semaphore::new(0), started_tx));
        let flaky = Arc::new(flaky);
        let spool = SpoolingStore::open(flaky.clone(), &dir.path().join("spool"), 100_000)
            .await
            .unwrap();
        spool_during_outage(&spool, &flaky, 30).await;
        assert_eq!(spool.spooled(), (0, 30_000));
        flaky.batches.lock().unwrap().clear();

        let drain = tokio::spawn({
            let spool = spool.clone();
            async move { spool.drain().await }
        });
        // The drain is inside its first slice, holding the readings lock.
        assert_eq!(started.recv().await, Some(DRAIN_SLICE));

        // An alert event goes straight to the database meanwhile. (The
        // timeout only turns a hang into a failure.)
        let saved = tokio::time::timeout(
            Duration::from_secs(10),
            spool.append_alert_event(event("a1", 1)),
        )
        .await
        .expect("the event waited for the readings drain")
        .unwrap();
        assert_eq!(saved.seq, 1);
        assert_eq!(flaky.inner.last_seq().await.unwrap(), 1);
        assert!(!drain.is_finished());
        assert_eq!(spool.spooled(), (0, 30_000));

        // New readings queue behind the spool (order per kind): the
        // writer waits while the drain holds its slice. (Showing that it
        // does not finish takes a while of not finishing.)
        let mut late = tokio::spawn({
            let spool = spool.clone();
            async move {
                spool
                    .insert_readings_at(&batch("pir-1", 30_001..30_002), 31)
                    .await
            }
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut late)
                .await
                .is_err(),
            "a new reading overtook the spool"
        );
        flaky.gate.as_ref().unwrap().0.add_permits(100);
        drain.await.unwrap();
        assert_eq!(late.await.unwrap().unwrap(), Vec::new());

        assert_eq!(spool.spooled(), (0, 0));
        let seqs = stored_seqs(&*spool, "pir-1").await;
        assert_eq!(
            seqs,
            (1..=30_001).collect::<Vec<_>>(),
            "once each, in order"
        );
        assert_eq!(
            *flaky.batches.lock().unwrap(),
            vec![DRAIN_SLICE, DRAIN_SLICE, DRAIN_SLICE, 1],
            "slices of 10 batches each, then the late batch"
        );
        assert_eq!(flaky.inner.intake_position().await.unwrap(), Some(31));
    }

    /// How long a new alert event takes while a slow database (100 ms a
    /// readings slice) drains 30,000 spooled readings, against how long
    /// the drain takes. Before the drain went slice by slice, the event
    /// waited for the whole drain.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn measured_an_alert_event_during_a_slow_drain() {
        let dir = tempfile::tempdir().unwrap();
        let (started_tx, mut started) = mpsc::unbounded_channel();
        let mut flaky = Flaky::new(dir.path()).await;
        flaky.delay = Duration::from_millis(100);
        flaky.gate = Some((Semaphore::new(Semaphore::MAX_PERMITS), started_tx));
        let flaky = Arc::new(flaky);
        let spool = SpoolingStore::open(flaky.clone(), &dir.path().join("spool"), 100_000)
            .await
            .unwrap();
        spool_during_outage(&spool, &flaky, 30).await;

        let t0 = std::time::Instant::now();
        let drain = tokio::spawn({
            let spool = spool.clone();
            async move {
                spool.drain().await;
                t0.elapsed()
            }
        });
        started.recv().await.unwrap();
        let t1 = std::time::Instant::now();
        spool.append_alert_event(event("a1", 1)).await.unwrap();
        let event_took = t1.elapsed();
        let drain_took = drain.await.unwrap();
        eprintln!("alert event appended in {event_took:?} during a drain of {drain_took:?}");
        assert_eq!(spool.spooled(), (0, 0));
        assert!(
            drain_took >= Duration::from_millis(500),
            "5 slices of 100 ms"
        );
        assert!(
            event_took * 3 < drain_took,
            "the event took {event_took:?} of a {drain_took:?} drain"
        );
    }

    fn acted(id: &str, state: AlertState, kind: AlertEventKind, at: EpochMs) -> NewAlertEvent {
        NewAlertEvent {
            kind,
            alert: alert(id, state),
            actor: "op-1".into(),
            at,
            note: None,
            decision: None,
        }
    }

    fn elder(id: &str, community: &str) -> Elder {
        Elder {
            elder_id: id.into(),
            name: format!("Name of {id}"),
            community: Some(community.into()),
            timezone: "Asia/Shanghai".into(),
            night_start: "22:00".into(),
            night_end: "06:00".into(),
            ..Default::default()
        }
    }

    fn device(id: &str, elder_id: &str) -> Device {
        Device {
            device_id: id.into(),
            kind: eldercare_model::DeviceKind::SosButton,
            elder_id: elder_id.into(),
            room: Some("hall".into()),
            heartbeat_s: 60,
            secret_salt: format!("salt-{id}"),
            secret_hash: format!("hash-{id}"),
        }
    }

    fn ids(devices: &[Device]) -> Vec<&str> {
        devices.iter().map(|d| d.device_id.as_str()).collect()
    }

    #[tokio::test]
    async fn with_the_database_down_at_start_the_head_file_numbers_and_chains_on() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let flaky = Arc::new(Flaky::new(dir.path()).await);
        let spool = SpoolingStore::open(flaky.clone(), &spool_dir, 100)
            .await
            .unwrap();
        spool.append_alert_event(event("a1", 1)).await.unwrap();
        let e2 = spool.append_alert_event(event("a2", 2)).await.unwrap();
        drop(spool);

        // Down before the start: nothing spooled, the database silent.
        flaky.down.store(true, Ordering::SeqCst);
        let spool = SpoolingStore::open(flaky.clone(), &spool_dir, 100)
            .await
            .unwrap();
        assert_eq!(spool.last_seq().await.unwrap(), 2, "from head.json");
        // A subscriber at the head is answered without the database.
        assert!(spool.events_after(2, 10).await.unwrap().is_empty());
        let e3 = spool.append_alert_event(event("a3", 3)).await.unwrap();
        assert_eq!(e3.seq, 3);
        let body = serde_json::to_string(&e3.alert).unwrap();
        assert_eq!(
            e3.hash,
            event_hash(&e2.hash, 3, e3.kind, "a3", "", 3, None, &body),
            "chained to the stored head"
        );
        assert_eq!(spool.spooled().0, 1);

        flaky.down.store(false, Ordering::SeqCst);
        spool.drain().await;
        assert_eq!(spool.spooled().0, 0);
        assert_eq!(spool.seq_conflicts(), 0);
        let chain = flaky.inner.verify_chain().await.unwrap();
        assert_eq!((chain.checked, chain.first_break), (3, None));
        assert_eq!(
            flaky.inner.events_after(2, 1).await.unwrap()[0].hash,
            e3.hash
        );
    }

    #[tokio::test]
    async fn without_head_file_or_database_events_wait_for_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let flaky = Arc::new(Flaky::new(dir.path()).await);
        // Events stored before the head file existed.
        flaky
            .inner
            .append_alert_event(event("a1", 1))
            .await
            .unwrap();
        flaky.down.store(true, Ordering::SeqCst);
        let spool = SpoolingStore::open(flaky.clone(), &spool_dir, 100)
            .await
            .unwrap();
        assert!(spool.last_seq().await.unwrap_err().is_outage());
        let err = spool.append_alert_event(event("a2", 2)).await.unwrap_err();
        assert!(err.is_outage(), "{err}");
        assert_eq!(spool.spooled().0, 0, "nothing numbered blind");

        flaky.down.store(false, Ordering::SeqCst);
        spool.drain().await;
        assert_eq!(
            spool.last_seq().await.unwrap(),
            1,
            "learnt from the database"
        );
        flaky.down.store(true, Ordering::SeqCst);
        assert_eq!(
            spool.append_alert_event(event("a2", 2)).await.unwrap().seq,
            2
        );
        flaky.down.store(false, Ordering::SeqCst);
        spool.drain().await;
        assert_eq!(flaky.inner.verify_chain().await.unwrap().first_break, None);
        assert_eq!(flaky.inner.last_seq().await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_stale_head_file_is_reported_as_a_seq_conflict_and_the_stored_chain_stays_intact() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let flaky = Arc::new(Flaky::new(dir.path()).await);
        let spool = SpoolingStore::open(flaky.clone(), &spool_dir, 100)
            .await
            .unwrap();
        spool.append_alert_event(event("a1", 1)).await.unwrap();
        let after_one = std::fs::read(spool_dir.join(HEAD_FILE)).unwrap();
        spool.append_alert_event(event("a2", 2)).await.unwrap();
        drop(spool);
        // A power loss after the database committed a2 but before the
        // head file said so.
        std::fs::write(spool_dir.join(HEAD_FILE), after_one).unwrap();

        flaky.down.store(true, Ordering::SeqCst);
        let spool = SpoolingStore::open(flaky.clone(), &spool_dir, 100)
            .await
            .unwrap();
        let given = spool.append_alert_event(event("a3", 3)).await.unwrap();
        assert_eq!(given.seq, 2, "numbered from the stale head");

        flaky.down.store(false, Ordering::SeqCst);
        spool.drain().await;
        assert_eq!(spool.seq_conflicts(), 1, "detected, not silent");
        let stored = flaky.inner.events_after(0, 10).await.unwrap();
        assert_eq!(
            stored
                .iter()
                .map(|e| (e.seq, e.alert.id.as_str()))
                .collect::<Vec<_>>(),
            vec![(1, "a1"), (2, "a2"), (3, "a3")],
            "the database numbered it on from its own head"
        );
        assert_eq!(flaky.inner.verify_chain().await.unwrap().first_break, None);
        // The head is the database's again: the next event follows it.
        assert_eq!(spool.last_seq().await.unwrap(), 3);
        assert_eq!(
            spool.append_alert_event(event("a4", 4)).await.unwrap().seq,
            4
        );
        let head: Head =
            serde_json::from_slice(&std::fs::read(spool_dir.join(HEAD_FILE)).unwrap()).unwrap();
        assert_eq!(head.seq, 4);
    }

    #[tokio::test]
    async fn the_registry_copy_answers_while_the_database_is_down() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let flaky = Arc::new(Flaky::new(dir.path()).await);
        let spool = SpoolingStore::open(flaky.clone(), &spool_dir, 100)
            .await
            .unwrap();
        for (e, c) in [("E1", "C1"), ("E2", "C2")] {
            flaky.inner.upsert_elder(&elder(e, c)).await.unwrap();
        }
        flaky
            .inner
            .upsert_device(&device("d1", "E1"))
            .await
            .unwrap();
        flaky
            .inner
            .upsert_device(&device("d2", "E2"))
            .await
            .unwrap();
        // d1's and d2's stamps are at most this.
        let written = now_ms();
        // The rule engine's start: everything.
        assert_eq!(spool.list_elders(None).await.unwrap().len(), 2);
        assert_eq!(ids(&spool.list_devices(None).await.unwrap()), ["d1", "d2"]);
        // Then its refreshes: what changed since after those writes. The
        // clock is let past them first, so d3's stamp is later whatever
        // the machine's load.
        while now_ms() <= written {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let t = written + 1;
        flaky
            .inner
            .upsert_device(&device("d3", "E1"))
            .await
            .unwrap();
        assert_eq!(ids(&spool.list_devices(Some(t)).await.unwrap()), ["d3"]);
        // A device deleted through this store, another re-keyed.
        assert!(spool.delete_device("d2").await.unwrap());
        assert!(
            spool
                .set_device_secret("d1", "salt-2", "hash-2")
                .await
                .unwrap()
        );
        // A device read alone, written by someone else meanwhile.
        flaky
            .inner
            .upsert_device(&device("d4", "E2"))
            .await
            .unwrap();
        assert!(spool.get_device("d4").await.unwrap().is_some());
        spool.drain().await;
        let file = spool_dir.join(crate::local::REGISTRY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "secret hashes and personal data");
        }
        drop(spool);

        flaky.down.store(true, Ordering::SeqCst);
        let spool = SpoolingStore::open(flaky.clone(), &spool_dir, 100)
            .await
            .unwrap();
        let d1 = spool.get_device("d1").await.unwrap().unwrap();
        assert_eq!(
            (
                d1.elder_id.as_str(),
                d1.secret_salt.as_str(),
                d1.secret_hash.as_str()
            ),
            ("E1", "salt-2", "hash-2")
        );
        assert_eq!(d1.room.as_deref(), Some("hall"));
        assert_eq!(
            spool.get_device("d4").await.unwrap().unwrap().elder_id,
            "E2"
        );
        // Not in the copy: unknown here is not "no such device".
        for gone in ["d2", "ghost"] {
            let err = spool.get_device(gone).await.unwrap_err();
            assert!(err.is_outage(), "{gone}: {err}");
        }
        assert_eq!(
            ids(&spool.list_devices(None).await.unwrap()),
            ["d1", "d3", "d4"]
        );
        let err = spool.list_devices(Some(t)).await.unwrap_err();
        assert!(err.is_outage(), "a delta is not answered from the copy");
        let page = spool
            .query_devices(&DeviceQuery {
                elder_id: Some("E1".into()),
                after: Some("d1".into()),
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(ids(&page), ["d3"]);
        let e1 = spool.get_elder("E1").await.unwrap().unwrap();
        assert_eq!(e1, elder("E1", "C1"));
        let c2 = spool
            .query_elders(&ElderQuery {
                community: Some("C2".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(c2.len(), 1);
        assert_eq!(c2[0].elder_id, "E2");
        assert_eq!(spool.list_elders(None).await.unwrap().len(), 2);

        // Back: the first delta is asked as a full listing (the copy
        // answered the last full one), later ones as deltas again.
        flaky.down.store(false, Ordering::SeqCst);
        let now = now_ms();
        assert_eq!(
            ids(&spool.list_devices(Some(now)).await.unwrap()),
            ["d1", "d3", "d4"]
        );
        assert!(spool.list_devices(Some(now)).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn open_alerts_and_silences_come_from_the_copy_and_the_spool_while_down() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let flaky = Arc::new(Flaky::new(dir.path()).await);
        let spool = SpoolingStore::open(flaky.clone(), &spool_dir, 100)
            .await
            .unwrap();
        spool.append_alert_event(event("a1", 1)).await.unwrap();
        spool.append_alert_event(event("a2", 2)).await.unwrap();
        spool
            .append_alert_event(acted(
                "a2",
                AlertState::Resolved,
                AlertEventKind::Resolved,
                3,
            ))
            .await
            .unwrap();
        let now = now_ms();
        let silence = |id: &str, until: EpochMs| Silence {
            id: id.into(),
            kind: AlertKind::Inactivity,
            elder_id: Some("E1".into()),
            device_id: None,
            reason: "visiting family".into(),
            created_by: "op-1".into(),
            created_at: now - 1000,
            until,
            ended_at: None,
        };
        spool
            .insert_silence(&silence("s1", now + 3_600_000))
            .await
            .unwrap();
        spool.insert_silence(&silence("s0", now - 1)).await.unwrap();
        spool.drain().await;
        // The database goes; an acknowledgement and a new alert are
        // spooled, and the process stops before the copy is saved again.
        flaky.down.store(true, Ordering::SeqCst);
        spool
            .append_alert_event(acted(
                "a1",
                AlertState::Acknowledged,
                AlertEventKind::Acknowledged,
                4,
            ))
            .await
            .unwrap();
        spool.append_alert_event(event("a3", 5)).await.unwrap();
        drop(spool);

        let spool = SpoolingStore::open(flaky.clone(), &spool_dir, 100)
            .await
            .unwrap();
        let mut open: Vec<(String, AlertState)> = spool
            .unresolved_alerts()
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.id, a.state))
            .collect();
        open.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            open,
            vec![
                ("a1".to_string(), AlertState::Acknowledged),
                ("a3".to_string(), AlertState::Open)
            ]
        );
        let active = spool.silences(Some(now)).await.unwrap();
        assert_eq!(
            active.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["s1"]
        );
        assert!(spool.silences(None).await.unwrap_err().is_outage());
        assert_eq!(
            spool.get_alert("a1").await.unwrap().unwrap().state,
            AlertState::Acknowledged
        );

        // Back: the database's view, with what is still spooled on top.
        flaky.down.store(false, Ordering::SeqCst);
        assert_eq!(spool.unresolved_alerts().await.unwrap().len(), 2);
        spool.drain().await;
        let stored = flaky.inner.unresolved_alerts().await.unwrap();
        assert_eq!(stored.len(), 2);
    }
}
