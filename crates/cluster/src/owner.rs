//! Owning one partition: the rule engine of its elders, fed from the
//! intake stream in order, clocked by the stream, its decisions published
//! to the decision stream, its state snapshotted to the object store.
use crate::Shared;
use crate::decisions::DecisionLog;
use crate::journal::TOPIC_HEADER;
use crate::partition::{self, INTAKE_STREAM, Kind};
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use eldercare_broker::checkpoint::Checkpoint;
use eldercare_broker::pipeline::Pipeline;
use eldercare_intake::Record;
use eldercare_model::RegistryChange;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How often the owner ticks its partition: a timer alert is raised at
/// most this long after it is due.
pub const TICK: Duration = Duration::from_millis(500);
/// How often the engine's state is snapshotted: a new owner replays
/// about this much of the partition.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(5);
/// Longer than this without a record (no owner ticked: the whole cluster
/// was down), the silence is not evidence.
const BLIND_AFTER_MS: i64 = 30_000;
/// How often the owner has its engine's copy of the registry refreshed
/// (devices imported with `eldercare import` are watched before they
/// first speak): a `many` change through its own partition, so a replay
/// refreshes at the same place in the log.
const REGISTRY_REFRESH: Duration = Duration::from_secs(30);
/// Header of a registry change: `elder:<id>`, `device:<id>` or `many`.
pub const CHANGE_HEADER: &str = "Ec-Change";

#[derive(Serialize, Deserialize)]
pub struct Snapshot {
    pub checkpoint: Checkpoint,
    /// Readings of records up to here are stored.
    pub stored: u64,
}

fn object(p: u16) -> String {
    format!("p{p}")
}

async fn load_snapshot(shared: &Shared, p: u16) -> Option<Snapshot> {
    use tokio::io::AsyncReadExt;
    // Bounded: a snapshot being rewritten meanwhile can leave a read
    // waiting for chunks that are gone; the whole stream is replayed then.
    let read = async {
        let mut obj = shared.snapshots.get(object(p)).await.ok()?;
        let mut bytes = Vec::new();
        obj.read_to_end(&mut bytes).await.ok()?;
        Some(bytes)
    };
    let Ok(Some(bytes)) = tokio::time::timeout(Duration::from_secs(10), read).await else {
        warn!(
            partition = p,
            "Partition snapshot not read within 10 s; replaying the whole stream."
        );
        return None;
    };
    match serde_json::from_slice(&bytes) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, partition = p, "Partition snapshot unreadable; replaying the whole stream.");
            None
        }
    }
}

async fn save_snapshot(shared: &Shared, p: u16, pipeline: &Pipeline) -> bool {
    let (checkpoint, stored) = pipeline.snapshot();
    let pos = checkpoint.pos;
    let Ok(bytes) = serde_json::to_vec(&Snapshot { checkpoint, stored }) else {
        return false;
    };
    let len = bytes.len();
    let mut reader = std::io::Cursor::new(bytes);
    match shared.snapshots.put(object(p).as_str(), &mut reader).await {
        Ok(_) => {
            let label = p.to_string();
            metrics::gauge!("eldercare_cluster_snapshot_seq", "partition" => label.clone())
                .set(pos as f64);
            metrics::gauge!("eldercare_cluster_snapshot_bytes", "partition" => label)
                .set(len as f64);
            true
        }
        Err(e) => {
            warn!(error = %e, partition = p, "Could not save the partition snapshot.");
            false
        }
    }
}

fn millis(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_millis()
}

/// Runs partition `p` until `stop` is cancelled (lease lost or handed
/// back) or another member fences it. Returns whether it was fenced.
/// Ticks and snapshots are written only while `held` is valid, and a
/// last snapshot only when the partition is handed back: an owner whose
/// lease ran out must not overwrite the next owner's.
pub async fn run(
    shared: Arc<Shared>,
    p: u16,
    stop: CancellationToken,
    held: Arc<crate::lease::Held>,
) -> bool {
    let log = match DecisionLog::fence(shared.js.clone(), p, &shared.member).await {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, partition = p, "Could not fence the partition's decisions.");
            return false;
        }
    };
    let fenced = log.fenced.clone();
    let mut snapshot = load_snapshot(&shared, p).await;
    // How far the previous owner stored readings, recorded with them: a
    // reading it stored after its last snapshot is not stored again.
    let key = format!("partition-{p}");
    let stored = match shared.store.keyed_position(&key).await {
        Ok(s) => s.unwrap_or(0),
        Err(e) => {
            warn!(error = %e, partition = p, "Cannot read how far readings are stored; the snapshot's figure is used.");
            0
        }
    };
    if let Some(s) = &mut snapshot {
        s.stored = s.stored.max(stored);
    }
    let (writer, writer_task) =
        eldercare_broker::TelemetryWriter::start_keyed(shared.store.clone(), key);
    let rules = shared.rules.borrow().clone();
    let mut pipeline = Pipeline::new(
        shared.store.clone(),
        Arc::new(log),
        shared.refusals.clone(),
        rules,
        writer,
        std::env::temp_dir(),
    )
    .for_partition(Arc::new(move |elder: &str| {
        partition::partition_of(elder) == p
    }));
    let from = snapshot
        .as_ref()
        .map_or(0, |s| s.checkpoint.pos.min(s.stored))
        + 1;
    pipeline
        .resume_from(snapshot.map(|s| (s.checkpoint, s.stored)), stored)
        .await;
    // Where the partition's records end as this owner starts: past it,
    // the replay is done and this owner's own ticks begin.
    let stream = match shared.js.get_stream(INTAKE_STREAM).await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, partition = p, "Intake stream unavailable.");
            return false;
        }
    };
    let tick_subject = partition::intake_subject(p, Kind::Tick);
    let last_tick = stream
        .get_last_raw_message_by_subject(&tick_subject)
        .await
        .ok()
        .map(|m| (m.sequence, millis(m.time)));
    let consumer = match stream
        .create_consumer(OrderedConfig {
            filter_subject: partition::intake_filter(p),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await
    {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, partition = p, "Could not read the partition.");
            return false;
        }
    };
    let mut records = match consumer.messages().await {
        Ok(m) => m,
        Err(e) => {
            warn!(error = %e, partition = p, "Could not read the partition.");
            return false;
        }
    };
    info!(
        partition = p,
        from, "Partition taken; replaying from its snapshot."
    );
    // Registered once: the lag is set for every record.
    let label = p.to_string();
    let lag_gauge =
        metrics::gauge!("eldercare_cluster_partition_lag", "partition" => label.clone());
    let age_gauge = metrics::gauge!("eldercare_cluster_snapshot_age_seconds", "partition" => label);
    let mut caught_up = last_tick.is_none_or(|(seq, _)| seq < from);
    if caught_up {
        blind_check(&mut pipeline, last_tick.map(|(_, t)| t));
    }
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut save = tokio::time::interval(SNAPSHOT_EVERY);
    save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    save.tick().await;
    let mut saved_at = std::time::Instant::now();
    let mut refresh = tokio::time::interval(REGISTRY_REFRESH);
    refresh.tick().await;
    let mut rules = shared.rules.clone();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick(), if caught_up && held.valid() => {
                let js = shared.js.clone();
                let subject = tick_subject.clone();
                // Not awaited here: a slow acknowledgement must not hold
                // the engine; the tick takes effect when read back.
                tokio::spawn(async move { publish_record(&js, subject, None).await });
                age_gauge.set(saved_at.elapsed().as_secs_f64());
            }
            _ = refresh.tick(), if caught_up && held.valid() => {
                let js = shared.js.clone();
                let subject = partition::intake_subject(p, Kind::Registry);
                tokio::spawn(async move { publish_record(&js, subject, Some("many")).await });
            }
            _ = save.tick(), if held.valid() => {
                if save_snapshot(&shared, p, &pipeline).await {
                    saved_at = std::time::Instant::now();
                }
            }
            r = rules.changed() => if r.is_ok() {
                let new = rules.borrow_and_update().clone();
                pipeline.engine.set_rules(new);
            },
            m = records.next() => {
                let Some(m) = m else { break };
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(error = %e, partition = p, "Reading the partition failed; the consumer resumes.");
                        continue;
                    }
                };
                let Ok(info) = m.info() else { continue };
                let (seq, at, pending) = (info.stream_sequence, millis(info.published), info.pending);
                lag_gauge.set(pending as f64);
                match Kind::of_subject(&m.subject) {
                    Some(Kind::Message) => {
                        let topic = m
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(TOPIC_HEADER))
                            .map(|v| v.as_str().to_string())
                            .unwrap_or_default();
                        pipeline
                            .handle(Record { pos: seq, received_at: at, topic, payload: m.payload.clone(), key: None })
                            .await;
                    }
                    Some(Kind::Tick) => pipeline.tick_record(seq, at).await,
                    Some(Kind::Registry) => {
                        let change = m
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(CHANGE_HEADER))
                            .and_then(|v| parse_change(v.as_str()));
                        if let Some(c) = change {
                            pipeline.registry_change(c).await;
                        }
                    }
                    None => debug!(subject = %m.subject, "Unknown record in the intake stream."),
                }
                if !caught_up && last_tick.is_some_and(|(s, _)| seq >= s) {
                    caught_up = true;
                    blind_check(&mut pipeline, last_tick.map(|(_, t)| t));
                    info!(partition = p, position = seq, "Partition replayed; judging live.");
                }
                if fenced.load(Ordering::Acquire) {
                    break;
                }
            }
        }
    }
    let was_fenced = fenced.load(Ordering::Acquire);
    if !was_fenced && held.handed_back() {
        // Handed back or stopping: the next owner starts from here.
        save_snapshot(&shared, p, &pipeline).await;
    }
    drop(pipeline);
    let _ = writer_task.await;
    was_fenced
}

/// When the partition's last tick is long past (no member was judging
/// it), the time since is not counted as silence.
fn blind_check(pipeline: &mut Pipeline, last_tick_at: Option<i64>) {
    let now = chrono::Utc::now().timestamp_millis();
    if let Some(t) = last_tick_at
        && now - t > BLIND_AFTER_MS
    {
        let blind = pipeline.blind(pipeline.clock().max(t), now);
        info!(
            blind_ms = blind,
            "Nobody judged this partition for a while; that time is not counted as silence."
        );
    }
}

/// Hands each registry change from this member's API to every partition,
/// through the intake stream, in order with the devices' messages.
pub async fn forward_changes(
    js: async_nats::jetstream::Context,
    mut changes: tokio::sync::mpsc::Receiver<RegistryChange>,
) {
    while let Some(c) = changes.recv().await {
        let header = change_header(&c);
        for p in 0..partition::PARTITIONS {
            let subject = partition::intake_subject(p, Kind::Registry);
            if let Err(e) = publish_record(&js, subject, Some(&header)).await {
                warn!(error = %e, partition = p, "Registry change not delivered to a partition; its periodic refresh will see it.");
            }
        }
    }
}

/// An empty record of the owner's or the API's (a tick; with `change`, a
/// registry change), published and acknowledged.
async fn publish_record(
    js: &async_nats::jetstream::Context,
    subject: String,
    change: Option<&str>,
) -> Result<(), async_nats::Error> {
    let mut h = async_nats::HeaderMap::new();
    if let Some(c) = change {
        h.insert(CHANGE_HEADER, c);
    }
    js.publish_with_headers(subject, h, bytes::Bytes::new())
        .await?
        .await?;
    Ok(())
}

pub fn change_header(c: &RegistryChange) -> String {
    match c {
        RegistryChange::Elder(id) => format!("elder:{id}"),
        RegistryChange::Device(id) => format!("device:{id}"),
        RegistryChange::Many => "many".into(),
        RegistryChange::Visits => "visits".into(),
    }
}

fn parse_change(s: &str) -> Option<RegistryChange> {
    match s {
        "many" => return Some(RegistryChange::Many),
        "visits" => return Some(RegistryChange::Visits),
        _ => {}
    }
    let (k, id) = s.split_once(':')?;
    match k {
        "elder" => Some(RegistryChange::Elder(id.to_string())),
        "device" => Some(RegistryChange::Device(id.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_changes_cross_the_stream_as_headers() {
        for c in [
            RegistryChange::Elder("E1".into()),
            RegistryChange::Device("d:1".into()),
            RegistryChange::Many,
        ] {
            assert_eq!(parse_change(&change_header(&c)), Some(c));
        }
        assert_eq!(parse_change("thing:1"), None);
    }
}
