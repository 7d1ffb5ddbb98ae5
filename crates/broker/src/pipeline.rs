//! The ingest pipeline: each durable record of the intake log, in log
//! order, is decoded, validated, de-duplicated, attributed to its elder,
//! judged by the rule engine (triggers go to the alert desk) and queued
//! for storage.
//!
//! After a restart it first replays the log from where the last run's
//! effects end, so each message takes effect exactly once:
//!
//! - the rule engine resumes from its checkpoint (state as of position
//!   `E`) and judges the messages after `E` again, at the time each was
//!   received, ticking its timers as it goes;
//! - their decisions reach the alert desk only past the desk's applied
//!   mark `A` (the desk recognises a repeat of the message at `A` by its
//!   evidence);
//! - their readings are stored only past `R`, the position stored with
//!   the newest batch of readings.
use crate::checkpoint::{self, AppliedMark, Checkpoint};
use crate::decider::Decider;
use crate::dedup::{Dedup, fingerprint};
use crate::refusals::Refusals;
use eldercare_intake::{EpochMs, Journal, Lane, Record};
use eldercare_model::RegistryChange;
use eldercare_protocol::{Refusal, decode};
use eldercare_rules::{Decision, DeviceProfile, ElderProfile, Engine, PlanProfile, Rules};
use eldercare_store::{Store, StoredReading};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use tracing::{error, info, warn};

/// How often the rule engine's timers run, in engine time: a timer alert
/// (offline, out of bed, inactivity) is raised at most this long after it
/// is due. A replay ticks at the same pace over the records' times.
pub const TICK_MS: i64 = 100;
/// Messages held for a retry at most.
const HELD_MAX: usize = 10_000;

fn now_ms() -> EpochMs {
    chrono::Utc::now().timestamp_millis()
}

/// Where the effects of the last run end (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct Resume {
    /// Messages up to here are in the engine's checkpoint.
    pub engine: u64,
    /// Decisions of messages before here are with the alert desk.
    pub applied: u64,
    /// Readings of messages up to here are stored.
    pub stored: u64,
}

/// Which elders a pipeline judges: on a cluster member, those of the
/// partition it owns; on a single node, all.
pub type Owns = Arc<dyn Fn(&str) -> bool + Send + Sync>;

pub struct Pipeline {
    pub store: Arc<dyn Store>,
    pub desk: Arc<dyn Decider>,
    /// Only these elders (and their devices) are loaded into the engine.
    owns: Option<Owns>,
    /// The engine's clock is the log's alone: timers run at the times of
    /// the records (ticks among them), never at wall time, so a replay by
    /// another cluster member decides exactly as the first run did.
    log_clock: bool,
    pub refusals: Refusals,
    /// Judges readings; also the device -> elder map of the registry.
    pub engine: Engine,
    decisions: Vec<Decision>,
    /// When the engine last loaded the registry.
    refreshed_at: Option<EpochMs>,
    /// Messages of devices new to the engine whose registry lookup failed.
    held: VecDeque<Record>,
    /// No registry lookups before this (engine clock), after a failure.
    registry_down_until: EpochMs,
    dedup: Dedup,
    /// Batches telemetry to storage on its own task.
    pub writer: crate::TelemetryWriter,
    /// The newest record handled, and when it was received.
    pos: u64,
    received_at: EpochMs,
    /// Engine time of the last timer tick.
    ticked_at: EpochMs,
    resume: Resume,
    /// Where checkpoints are written.
    dir: PathBuf,
    /// A checkpoint being written, off this task.
    saving: Option<tokio::task::JoinHandle<Option<u64>>>,
}

impl Pipeline {
    pub fn new(
        store: Arc<dyn Store>,
        desk: Arc<dyn Decider>,
        refusals: Refusals,
        rules: Rules,
        writer: crate::TelemetryWriter,
        dir: PathBuf,
    ) -> Pipeline {
        Pipeline {
            store,
            desk,
            owns: None,
            log_clock: false,
            refusals,
            engine: Engine::new(rules),
            decisions: Vec::new(),
            refreshed_at: None,
            held: VecDeque::new(),
            registry_down_until: 0,
            dedup: Dedup::default(),
            writer,
            pos: 0,
            received_at: 0,
            ticked_at: 0,
            resume: Resume::default(),
            dir,
            saving: None,
        }
    }

    /// Loads the registry, the engine's checkpoint and the open alerts,
    /// then replays what the log has past the last run's effects. Returns
    /// the number of records replayed.
    pub async fn recover<J: Journal + Sync>(
        &mut self,
        journal: &J,
        applied: u64,
    ) -> std::io::Result<u64> {
        self.refresh_registry().await;
        let cp = checkpoint::load(&self.dir);
        let mut resume = Resume {
            engine: 0,
            applied,
            stored: 0,
        };
        if let Some(cp) = &cp {
            // At the checkpoint's own time: the gap to now is declared
            // once the replay has shown how much of it the log covers.
            let r = self.engine.restore(&cp.engine, cp.engine.taken_at());
            info!(
                position = cp.pos,
                elders = r.elders,
                devices = r.devices,
                unknown_elders = r.unknown_elders,
                unknown_devices = r.unknown_devices,
                "Rule engine state restored from its checkpoint."
            );
            resume.engine = cp.pos;
            self.pos = cp.pos;
            self.received_at = cp.received_at;
            self.ticked_at = cp.engine.taken_at();
        }
        resume.stored = match self.store.intake_position().await {
            Ok(p) => p.unwrap_or(0),
            Err(e) => {
                // Unknown: store again rather than lose (a reading may
                // then be stored twice).
                warn!(error = %e, "Cannot read the stored intake position; readings are replayed from the checkpoint.");
                resume.engine
            }
        };
        // Conditions of open alerts are not raised again and still clear
        // themselves.
        match self.store.unresolved_alerts().await {
            Ok(open) => {
                let now = self.engine_now();
                for a in open {
                    self.engine
                        .restore_open(a.kind, &a.elder_id, a.subject.as_deref(), now);
                }
            }
            Err(e) => warn!(error = %e, "Could not read open alerts for the rule engine."),
        }
        self.resume = resume;
        let from = resume.engine.min(resume.stored) + 1;
        let mut replayed = 0u64;
        for rec in journal.replay(from)? {
            let rec = rec?;
            self.handle(rec).await;
            replayed += 1;
        }
        let now = now_ms();
        if self.received_at > 0 {
            let blind = self.engine.resume_after_gap(self.received_at, now);
            info!(
                replayed,
                from,
                upto = self.pos,
                blind_ms = blind,
                "Intake log replayed; the time the server was down is not counted as silence."
            );
        }
        metrics::counter!("eldercare_intake_replayed_total").increment(replayed);
        info!(
            elders = self.engine.elders(),
            devices = self.engine.devices(),
            "Rule engine watching the registry."
        );
        Ok(replayed)
    }

    /// Engine time: the newest of what the engine has been told and the
    /// record being handled.
    fn engine_now(&self) -> EpochMs {
        self.received_at.max(self.ticked_at)
    }

    /// One durable record: the timers due before it, then the record.
    pub async fn handle(&mut self, rec: Record) {
        let replaying = rec.pos <= self.resume.engine.max(self.resume.stored);
        if (replaying || self.log_clock) && rec.received_at >= self.ticked_at + TICK_MS {
            // Timers fire during a replay as they did live.
            self.tick_at(rec.received_at, Some(rec.pos)).await;
        }
        let (pos, received_at) = (rec.pos, rec.received_at);
        if !replaying && Lane::of_topic(&rec.topic) == Lane::Urgent {
            // An SOS or fall: how long from entering the log (its fsync
            // and the telemetry queued ahead of it) to being judged.
            metrics::histogram!("eldercare_event_pipeline_seconds")
                .record((now_ms() - received_at).max(0) as f64 / 1000.0);
        }
        self.message(rec).await;
        self.pos = self.pos.max(pos);
        self.received_at = self.received_at.max(received_at);
    }

    async fn message(&mut self, rec: Record) {
        let Record {
            pos,
            received_at: now,
            ref topic,
            ref payload,
            ..
        } = rec;
        if topic.ends_with("/cmd") {
            return;
        }
        let in_engine = pos <= self.resume.engine;
        let stored = pos <= self.resume.stored;
        if in_engine && stored {
            return;
        }
        if let Some(check) = crate::api_visits::decode(topic, payload) {
            if !in_engine {
                self.api_visit(check, pos, now).await;
            }
            return;
        }
        let reading = match decode(topic, payload, None, now) {
            Ok(r) => r,
            Err(why) => {
                if !stored {
                    let sender = eldercare_protocol::topic_device_id(topic);
                    self.refusals.refuse(topic, sender, &why, payload);
                }
                return;
            }
        };
        let elder_id = match self.engine.elder_of(&reading.device_id) {
            Some(e) => e.to_string(),
            None => match self.lookup_device(&reading.device_id, now).await {
                Ok(Some(d)) => {
                    // New since the last registry refresh.
                    if let Ok(Some(e)) = self.store.get_elder(&d.elder_id).await {
                        self.engine.upsert_elder(&ElderProfile::from_elder(&e), now);
                    }
                    self.engine.upsert_device(&DeviceProfile::from(&d), now);
                    d.elder_id
                }
                Ok(None) => {
                    if !stored {
                        let why = Refusal::UnknownDevice(reading.device_id.clone());
                        self.refusals.refuse(topic, None, &why, payload);
                    }
                    return;
                }
                Err(e) => {
                    // The database is away and this device is new to the
                    // engine: hold the message and try again on the next
                    // ticks rather than lose it (it may be an SOS).
                    if self.held.len() < HELD_MAX {
                        warn!(error = %e, device_id = %reading.device_id, "Registry lookup failed; message held for a retry.");
                        self.held.push_back(rec);
                        metrics::gauge!("eldercare_ingest_held").set(self.held.len() as f64);
                    } else {
                        error!(error = %e, "Registry lookup failed and the retry queue is full; message dropped.");
                        metrics::counter!("eldercare_ingest_lost_total").increment(1);
                    }
                    return;
                }
            },
        };
        let stream = reading.stream();
        let fp = fingerprint(stream.as_str(), reading.seq, reading.ts_ms, payload);
        if self.dedup.is_repeat(&reading.device_id, fp) {
            metrics::counter!("eldercare_ingest_duplicates_total").increment(1);
            return;
        }
        if !in_engine {
            metrics::counter!("eldercare_ingest_accepted_total", "stream" => stream.as_str())
                .increment(1);
            if matches!(&reading.body, eldercare_model::Body::Event(e)
                if e.kind == eldercare_model::EventType::Visit)
            {
                metrics::counter!("eldercare_visit_checks_total", "via" => "device").increment(1);
            }
            let mut decisions = std::mem::take(&mut self.decisions);
            self.engine.on_reading_into(&reading, now, &mut decisions);
            self.decide(&mut decisions, Some(pos)).await;
            self.decisions = decisions;
        }
        if !stored {
            self.writer
                .push(StoredReading { elder_id, reading }, pos)
                .await;
        }
    }

    /// A carer's check-in from the API (validated there): judged like a
    /// tag read at the home.
    async fn api_visit(
        &mut self,
        check: Result<(String, crate::api_visits::ApiCheck), String>,
        pos: u64,
        now: EpochMs,
    ) {
        let (elder, c) = match check {
            Ok(x) => x,
            Err(e) => {
                error!(error = %e, "An API check-in in the intake log does not decode; skipped.");
                return;
            }
        };
        if !self.owned(&elder) {
            return;
        }
        metrics::counter!("eldercare_visit_checks_total", "via" => "api").increment(1);
        let mut decisions = std::mem::take(&mut self.decisions);
        self.engine
            .on_visit_into(&elder, &c.carer, c.action, c.ts, "api", now, &mut decisions);
        self.decide(&mut decisions, Some(pos)).await;
        self.decisions = decisions;
    }

    /// Hands decisions to the desk, unless a replay finds them applied
    /// before the restart. `pos`: the message they came from (for a
    /// tick, the record the replay is at).
    async fn decide(&self, decisions: &mut Vec<Decision>, pos: Option<u64>) {
        let applied_before = pos.is_some_and(|p| p < self.resume.applied);
        for d in decisions.drain(..) {
            if applied_before {
                metrics::counter!("eldercare_intake_replay_decisions_skipped_total").increment(1);
                continue;
            }
            let what = match &d {
                Decision::Raise(_) => "raise",
                Decision::Update(_) => "update",
                Decision::Resolve(_) => "resolve",
            };
            metrics::counter!("eldercare_rule_decisions_total",
                "kind" => d.kind().as_str(), "decision" => what)
            .increment(1);
            if self.desk.decide(d, pos).await.is_err() {
                error!("Rule decision not taken (desk closed, or the partition lost).");
            }
        }
    }

    /// The registry entry of a device the engine does not know yet. While
    /// the database is failing, lookups are not retried for a few seconds,
    /// so a flood of unknown devices cannot stall the pipeline (their
    /// messages are held instead).
    async fn lookup_device(
        &mut self,
        device_id: &str,
        now: EpochMs,
    ) -> Result<Option<eldercare_model::Device>, String> {
        if now < self.registry_down_until {
            return Err("the registry was unreachable moments ago".into());
        }
        // Not cut short with a timeout: dropping a pool acquire midway can
        // leave the pool stuck; the store's own acquire timeout bounds it.
        let r = self
            .store
            .get_device(device_id)
            .await
            .map_err(|e| e.to_string());
        if r.is_err() {
            self.registry_down_until = now + 5_000;
        }
        r
    }

    /// The live tick: held messages retried, timers run at wall time.
    pub async fn tick(&mut self) {
        // Messages held while the registry could not be read: once each,
        // when it may be back.
        let held: Vec<Record> = if now_ms() >= self.registry_down_until {
            self.held.drain(..).collect()
        } else {
            Vec::new()
        };
        for h in held {
            Box::pin(self.message(h)).await;
        }
        metrics::gauge!("eldercare_ingest_held").set(self.held.len() as f64);
        self.tick_at(now_ms(), None).await;
    }

    async fn tick_at(&mut self, now: EpochMs, replay_pos: Option<u64>) {
        self.ticked_at = self.ticked_at.max(now);
        let mut decisions = std::mem::take(&mut self.decisions);
        let started = std::time::Instant::now();
        self.engine.tick_into(now, &mut decisions);
        metrics::histogram!("eldercare_rule_tick_seconds").record(started.elapsed().as_secs_f64());
        // A timer decision during a replay counts as the record's: skipped
        // before the applied mark, handed over after it (and then told
        // from a repeat by its evidence).
        self.decide(&mut decisions, replay_pos).await;
        self.decisions = decisions;
    }

    /// The newest position whose message is fully in the engine: a held
    /// message is not, yet.
    fn engine_position(&self) -> u64 {
        match self.held.front() {
            Some(h) => h.pos.saturating_sub(1).min(self.pos),
            None => self.pos,
        }
    }

    /// Starts writing a checkpoint of the engine, unless one is still
    /// being written. Returns the position everything before which is
    /// both in a durable checkpoint and stored, once the previous save
    /// finished: what the intake log may release.
    pub async fn checkpoint(&mut self) -> Option<u64> {
        if self.saving.as_ref().is_some_and(|h| !h.is_finished()) {
            return None;
        }
        let done = match self.saving.take() {
            Some(h) => h.await.ok().flatten(),
            None => None,
        };
        let cp = Checkpoint {
            pos: self.engine_position(),
            received_at: self.received_at,
            engine: self.engine.snapshot(),
        };
        let stored = self.writer.stored_position().max(self.resume.stored);
        let release = cp.pos.min(stored);
        match serde_json::to_vec(&cp) {
            Ok(bytes) => {
                let dir = self.dir.clone();
                let desk = self.desk.clone();
                self.saving = Some(tokio::spawn(async move {
                    // The checkpoint covers the decisions of every message
                    // up to its position: they must be kept before it is.
                    if desk.sync().await.is_err() {
                        return None;
                    }
                    let started = std::time::Instant::now();
                    let saved = tokio::task::spawn_blocking(move || {
                        checkpoint::save(&dir, &bytes).map(|()| bytes.len())
                    })
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                    match saved {
                        Ok(len) => {
                            metrics::histogram!("eldercare_engine_checkpoint_seconds")
                                .record(started.elapsed().as_secs_f64());
                            metrics::gauge!("eldercare_engine_checkpoint_bytes").set(len as f64);
                            Some(release)
                        }
                        Err(e) => {
                            error!(error = %e, "Could not write the rule engine checkpoint.");
                            None
                        }
                    }
                }));
            }
            Err(e) => error!(error = %e, "Could not encode the rule engine checkpoint."),
        }
        done
    }

    /// Writes a last checkpoint and waits for it (a clean stop); returns
    /// its position once it is on disk.
    pub async fn final_checkpoint(&mut self) -> Option<u64> {
        if let Some(h) = self.saving.take() {
            let _ = h.await;
        }
        let pos = self.engine_position();
        self.checkpoint().await;
        match self.saving.take() {
            Some(h) => h.await.ok().flatten().map(|_| pos),
            None => None,
        }
    }

    /// Loads the registry into the engine: the whole of it the first
    /// time, then what changed since the last refresh (new entries added,
    /// changed ones updated with their state kept). Deleting from the
    /// registry is for the registry API, which tells the engine itself.
    pub async fn refresh_registry(&mut self) {
        let started = now_ms();
        // Overlap the windows: an import commits rows stamped a moment
        // before it finishes.
        let since = self.refreshed_at.map(|t| t - 60_000);
        let (elders, devices) = match (
            self.store.list_elders(since).await,
            self.store.list_devices(since).await,
        ) {
            (Ok(e), Ok(d)) => (e, d),
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "Could not refresh the registry for the rule engine.");
                return;
            }
        };
        let owns = self.owns.clone();
        let owned = |id: &str| owns.as_ref().is_none_or(|o| o(id));
        for e in elders.iter().filter(|e| owned(&e.elder_id)) {
            self.engine
                .upsert_elder(&ElderProfile::from_elder(e), started);
        }
        for d in devices.iter().filter(|d| owned(&d.elder_id)) {
            self.engine.upsert_device(&DeviceProfile::from(d), started);
        }
        self.refresh_visits(started).await;
        self.refreshed_at = Some(started);
        metrics::gauge!("eldercare_rule_engine_elders").set(self.engine.elders() as f64);
        metrics::gauge!("eldercare_rule_engine_devices").set(self.engine.devices() as f64);
    }

    /// Carers and visit plans, whole (there are few): the engine keeps
    /// what it judged of a plan it knew.
    async fn refresh_visits(&mut self, now: EpochMs) {
        let (carers, plans) = match (
            self.store.list_carers().await,
            self.store.list_visit_plans().await,
        ) {
            (Ok(c), Ok(p)) => (c, p),
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "Could not read carers and visit plans for the rule engine.");
                return;
            }
        };
        self.engine.set_carers(
            carers
                .iter()
                .map(|c| (c.carer_id.as_str(), c.provider_id.as_str())),
        );
        let mut by_elder: std::collections::HashMap<String, Vec<PlanProfile>> =
            std::collections::HashMap::new();
        for p in plans.iter().filter(|p| self.owned(&p.elder_id)) {
            if let Some(pp) = PlanProfile::from_plan(p) {
                by_elder.entry(p.elder_id.clone()).or_default().push(pp);
            }
        }
        self.engine.replace_visit_plans(by_elder, now);
    }

    /// Applies one change from the registry API: reads what the store now
    /// holds, so changes applied out of order still end in the right state.
    pub async fn registry_change(&mut self, change: RegistryChange) {
        let now = now_ms();
        match change {
            RegistryChange::Elder(id) => match self.store.get_elder(&id).await {
                Ok(Some(e)) if self.owned(&e.elder_id) => {
                    self.engine.upsert_elder(&ElderProfile::from_elder(&e), now)
                }
                Ok(_) => self.engine.remove_elder(&id),
                Err(e) => warn!(error = %e, elder_id = %id, "Could not read a changed elder."),
            },
            RegistryChange::Device(id) => match self.store.get_device(&id).await {
                Ok(Some(d)) if self.owned(&d.elder_id) => {
                    self.engine.upsert_device(&DeviceProfile::from(&d), now)
                }
                Ok(_) => {
                    self.engine.remove_device(&id);
                    self.dedup.forget(&id);
                }
                Err(e) => warn!(error = %e, device_id = %id, "Could not read a changed device."),
            },
            RegistryChange::Many => self.refresh_registry().await,
            RegistryChange::Visits => self.refresh_visits(now).await,
        }
        metrics::gauge!("eldercare_rule_engine_elders").set(self.engine.elders() as f64);
        metrics::gauge!("eldercare_rule_engine_devices").set(self.engine.devices() as f64);
    }
}

/// A cluster member's pipeline for one partition: see [`Pipeline::new`];
/// the engine watches only the elders `owns` accepts, and its clock is
/// the log's (records and the log's ticks).
impl Pipeline {
    pub fn for_partition(mut self, owns: Owns) -> Pipeline {
        self.owns = Some(owns);
        self.log_clock = true;
        self
    }

    fn owned(&self, elder_id: &str) -> bool {
        self.owns.as_ref().is_none_or(|o| o(elder_id))
    }

    /// The newest record taken (0: none).
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The engine's time: the newest record or tick it was told of.
    pub fn clock(&self) -> EpochMs {
        self.engine_now()
    }

    /// A tick from the log, at log position `pos` and log time `at`:
    /// messages held while the registry could not be read are tried
    /// again, then the timers due by `at` run.
    pub async fn tick_record(&mut self, pos: u64, at: EpochMs) {
        if at >= self.registry_down_until {
            let held: Vec<Record> = self.held.drain(..).collect();
            for h in held {
                Box::pin(self.message(h)).await;
            }
            metrics::gauge!("eldercare_ingest_held").set(self.held.len() as f64);
        }
        if at >= self.ticked_at + TICK_MS {
            self.tick_at(at, Some(pos)).await;
        }
        self.pos = self.pos.max(pos);
        self.received_at = self.received_at.max(at);
    }

    /// The engine's state as of [`Pipeline::engine_position`], for a
    /// snapshot kept elsewhere than the data directory; with the position
    /// up to which readings are stored.
    pub fn snapshot(&self) -> (Checkpoint, u64) {
        let cp = Checkpoint {
            pos: self.engine_position(),
            received_at: self.received_at,
            engine: self.engine.snapshot(),
        };
        let stored = self.writer.stored_position().max(self.resume.stored);
        (cp, stored)
    }

    /// Starts from a snapshot (or from nothing): the registry of the
    /// owned elders, the engine's state, and the alerts still open (their
    /// conditions are not raised again). The records after the snapshot
    /// are then handed to [`Pipeline::handle`] in log order; readings at
    /// or before the snapshot's stored position, or `stored`, are not
    /// stored again.
    pub async fn resume_from(&mut self, snapshot: Option<(Checkpoint, u64)>, stored: u64) {
        self.refresh_registry().await;
        let mut resume = Resume {
            stored,
            ..Resume::default()
        };
        if let Some((cp, snap_stored)) = snapshot {
            self.engine.restore(&cp.engine, cp.engine.taken_at());
            resume.engine = cp.pos;
            resume.stored = resume.stored.max(snap_stored);
            self.pos = cp.pos;
            self.received_at = cp.received_at;
            self.ticked_at = cp.engine.taken_at();
        }
        match self.store.unresolved_alerts().await {
            Ok(open) => {
                let now = self.engine_now();
                let owns = self.owns.clone();
                let owned = |id: &str| owns.as_ref().is_none_or(|o| o(id));
                for a in open.into_iter().filter(|a| owned(&a.elder_id)) {
                    self.engine
                        .restore_open(a.kind, &a.elder_id, a.subject.as_deref(), now);
                }
            }
            Err(e) => warn!(error = %e, "Could not read open alerts for the rule engine."),
        }
        self.resume = resume;
    }

    /// After a time when nobody judged this partition (the whole cluster
    /// was down), the silence from `from` to `now` is not evidence.
    pub fn blind(&mut self, from: EpochMs, now: EpochMs) -> i64 {
        self.engine.resume_after_gap(from, now)
    }

    /// Writes what is queued for storage and waits for it.
    pub fn writer_stored(&self) -> u64 {
        self.writer.stored_position()
    }
}

/// Opens the applied mark in `dir`, and the callback the alert desk
/// reports applied positions through.
pub fn applied_mark(dir: &std::path::Path) -> std::io::Result<(eldercare_alerts::Applied, u64)> {
    let (mark, pos) = AppliedMark::open(dir)?;
    let mark = Arc::new(mark);
    Ok((Arc::new(move |p| mark.record(p)), pos))
}
