//! `eldercare cluster status`: who owns what, and how fresh the
//! snapshots are, read from the cluster itself.
use crate::partition::{DESK_LEASE, INTAKE_STREAM, LEASES, PARTITIONS, SNAPSHOTS, lease_key};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct PartitionStatus {
    pub partition: u16,
    pub owner: Option<String>,
    pub lease_revision: Option<u64>,
    pub expires_in_ms: Option<i64>,
    pub snapshot_seq: Option<u64>,
    pub snapshot_age_ms: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct DeskStatus {
    pub owner: Option<String>,
    pub expires_in_ms: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct IntakeStatus {
    pub messages: u64,
    pub last_seq: u64,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub partitions: Vec<PartitionStatus>,
    pub desk: DeskStatus,
    pub intake: IntakeStatus,
}

pub async fn read(js: &async_nats::jetstream::Context) -> Result<Status, async_nats::Error> {
    use tokio::io::AsyncReadExt;
    let now = chrono::Utc::now().timestamp_millis();
    let kv = js.get_key_value(LEASES).await?;
    let leases = crate::lease::Leases {
        kv,
        member: String::new(),
        ttl_ms: 0,
    };
    let snapshots = js.get_object_store(SNAPSHOTS).await?;
    let mut partitions = Vec::new();
    for p in 0..PARTITIONS {
        let held = leases
            .read(&lease_key(p))
            .await?
            .filter(|(l, _)| !l.free_at(now));
        let (mut snapshot_seq, mut snapshot_age_ms) = (None, None);
        if let Ok(info) = snapshots.info(format!("p{p}")).await {
            snapshot_age_ms = info.modified.map(|m| now - m.timestamp_millis());
            // Bounded: a snapshot rewritten while it is read can leave the
            // read waiting for chunks that are gone.
            let read = async {
                let mut obj = snapshots.get(format!("p{p}")).await.ok()?;
                let mut bytes = Vec::new();
                obj.read_to_end(&mut bytes).await.ok()?;
                serde_json::from_slice::<crate::owner::Snapshot>(&bytes).ok()
            };
            if let Ok(Some(s)) = tokio::time::timeout(std::time::Duration::from_secs(2), read).await
            {
                snapshot_seq = Some(s.checkpoint.pos);
            }
        }
        partitions.push(PartitionStatus {
            partition: p,
            owner: held.as_ref().map(|(l, _)| l.owner.clone()),
            lease_revision: held.as_ref().map(|(_, r)| *r),
            expires_in_ms: held.as_ref().map(|(l, _)| l.until_ms - now),
            snapshot_seq,
            snapshot_age_ms,
        });
    }
    let desk = leases
        .read(DESK_LEASE)
        .await?
        .filter(|(l, _)| !l.free_at(now));
    let mut stream = js.get_stream(INTAKE_STREAM).await?;
    let info = stream.info().await?;
    Ok(Status {
        partitions,
        desk: DeskStatus {
            owner: desk.as_ref().map(|(l, _)| l.owner.clone()),
            expires_in_ms: desk.as_ref().map(|(l, _)| l.until_ms - now),
        },
        intake: IntakeStatus {
            messages: info.state.messages,
            last_seq: info.state.last_sequence,
        },
    })
}

/// The human table.
pub fn render(s: &Status) -> String {
    let mut out = String::from("partition  owner        lease_ms  snapshot_seq  snapshot_age_ms\n");
    let opt = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
    for p in &s.partitions {
        out.push_str(&format!(
            "{:<10} {:<12} {:<9} {:<13} {}\n",
            p.partition,
            p.owner.as_deref().unwrap_or("(none)"),
            opt(p.expires_in_ms),
            p.snapshot_seq.map_or("-".to_string(), |v| v.to_string()),
            opt(p.snapshot_age_ms),
        ));
    }
    out.push_str(&format!(
        "desk: {} (lease {} ms)\nintake: {} messages, last seq {}\n",
        s.desk.owner.as_deref().unwrap_or("(none)"),
        opt(s.desk.expires_in_ms),
        s.intake.messages,
        s.intake.last_seq
    ));
    out
}
