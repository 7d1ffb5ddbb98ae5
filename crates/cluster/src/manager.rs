//! This member's share: which partitions it runs, and whether it is the
//! desk. Every lease/3 it renews what it holds, counts the live members
//! (heartbeats in the lease bucket), hands back what is over its fair
//! share and takes free partitions up to it.
use crate::Shared;
use crate::lease::{Held, wall_ms};
use crate::partition::{DESK_LEASE, PARTITIONS, lease_key};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

struct Running {
    revision: u64,
    stop: CancellationToken,
    held: Arc<Held>,
    task: JoinHandle<bool>,
}

struct Desk {
    revision: u64,
    held: Arc<Held>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

fn say(line: String) {
    // Lines operators (and tests) follow on standard output.
    println!("{line}");
}

fn member_key(m: &str) -> String {
    format!("member.{m}")
}

/// Runs until `shutdown`; then hands everything back.
pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let every = Duration::from_millis((shared.leases.ttl_ms / 3).max(50) as u64);
    let mut owned: BTreeMap<u16, Running> = BTreeMap::new();
    let mut desk: Option<Desk> = None;
    let member = shared.member.clone();
    metrics::gauge!("eldercare_cluster_partitions_owned").set(0.0);
    metrics::gauge!("eldercare_cluster_desk_active").set(0.0);
    metrics::counter!("eldercare_cluster_fenced_total").absolute(0);
    let mut heartbeat: Option<u64> = None;
    loop {
        // Heartbeat: this member is alive for one more lease.
        let key = member_key(&member);
        heartbeat = match heartbeat {
            Some(rev) => shared.leases.renew(&key, rev).await.ok().flatten(),
            None => None,
        };
        if heartbeat.is_none() {
            heartbeat = shared.leases.try_take(&key).await.ok().flatten();
        }
        // Renew what is held; a lease lost, or a partition fenced, ends.
        let mut lost = Vec::new();
        for (p, r) in owned.iter_mut() {
            if r.task.is_finished() {
                lost.push(*p);
                continue;
            }
            let sent = wall_ms();
            match shared.leases.renew(&lease_key(*p), r.revision).await {
                Ok(Some(rev)) => {
                    r.revision = rev;
                    r.held.renewed(sent, shared.leases.ttl_ms);
                }
                Ok(None) => lost.push(*p),
                Err(e) => warn!(error = %e, partition = p, "Lease renewal failed; trying again."),
            }
        }
        for p in lost {
            if let Some(r) = owned.remove(&p) {
                r.stop.cancel();
                let _ = r.task.await;
                say(format!("cluster: {member} lost partition {p}"));
            }
        }
        // The fair share: partitions over the live members.
        let live = live_members(&shared).await.max(1);
        let share = usize::from(PARTITIONS).div_ceil(live);
        while owned.len() > share {
            let Some((&p, _)) = owned.iter().next_back() else {
                break;
            };
            if let Some(r) = owned.remove(&p) {
                r.held.hand_back();
                r.stop.cancel();
                let _ = r.task.await;
                shared.leases.release(&lease_key(p), r.revision).await;
                say(format!("cluster: {member} lost partition {p}"));
                info!(
                    partition = p,
                    "Partition handed back to a member with fewer."
                );
            }
        }
        if owned.len() < share {
            for p in 0..PARTITIONS {
                if owned.len() >= share || shutdown.is_cancelled() {
                    break;
                }
                if owned.contains_key(&p) {
                    continue;
                }
                let sent = wall_ms();
                if let Ok(Some(rev)) = shared.leases.try_take(&lease_key(p)).await {
                    let stop = CancellationToken::new();
                    let held = Arc::new(Held::default());
                    held.renewed(sent, shared.leases.ttl_ms);
                    let task = tokio::spawn(crate::owner::run(
                        shared.clone(),
                        p,
                        stop.clone(),
                        held.clone(),
                    ));
                    owned.insert(
                        p,
                        Running {
                            revision: rev,
                            stop,
                            held,
                            task,
                        },
                    );
                    metrics::counter!("eldercare_cluster_partitions_taken_total").increment(1);
                    say(format!("cluster: {member} owns partition {p}"));
                }
            }
        }
        metrics::gauge!("eldercare_cluster_partitions_owned").set(owned.len() as f64);
        // The desk.
        let sent_desk = wall_ms();
        desk = match desk.take() {
            Some(d) if d.task.is_finished() => {
                say(format!("cluster: {member} is no longer the desk"));
                None
            }
            Some(d) => match shared.leases.renew(DESK_LEASE, d.revision).await {
                Ok(Some(rev)) => {
                    d.held.renewed(sent_desk, shared.leases.ttl_ms);
                    Some(Desk { revision: rev, ..d })
                }
                Ok(None) => {
                    d.stop.cancel();
                    let _ = d.task.await;
                    say(format!("cluster: {member} is no longer the desk"));
                    None
                }
                Err(e) => {
                    warn!(error = %e, "Desk lease renewal failed; trying again.");
                    Some(d)
                }
            },
            None => match shared.leases.try_take(DESK_LEASE).await {
                Ok(Some(rev)) if !shutdown.is_cancelled() => {
                    let stop = CancellationToken::new();
                    let held = Arc::new(Held::default());
                    held.renewed(sent_desk, shared.leases.ttl_ms);
                    let task =
                        tokio::spawn(crate::desk::run(shared.clone(), stop.clone(), held.clone()));
                    say(format!("cluster: {member} is the active desk"));
                    Some(Desk {
                        revision: rev,
                        held,
                        stop,
                        task,
                    })
                }
                _ => None,
            },
        };
        metrics::gauge!("eldercare_cluster_desk_active").set(if desk.is_some() {
            1.0
        } else {
            0.0
        });
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
    // A clean stop: final snapshots, leases handed back at once.
    for (p, r) in std::mem::take(&mut owned) {
        r.held.hand_back();
        r.stop.cancel();
        let _ = r.task.await;
        shared.leases.release(&lease_key(p), r.revision).await;
        say(format!("cluster: {member} lost partition {p}"));
    }
    if let Some(d) = desk {
        d.stop.cancel();
        let _ = d.task.await;
        shared.leases.release(DESK_LEASE, d.revision).await;
    }
    if let Some(rev) = heartbeat {
        shared.leases.release(&member_key(&member), rev).await;
    }
}

/// Members whose heartbeat runs.
async fn live_members(shared: &Shared) -> usize {
    use futures::StreamExt;
    let now = chrono::Utc::now().timestamp_millis();
    let Ok(keys) = shared.leases.kv.keys().await else {
        return 1;
    };
    let keys: Vec<String> = keys
        .filter_map(|k| async move { k.ok() })
        .filter(|k| futures::future::ready(k.starts_with("member.")))
        .collect()
        .await;
    let mut n = 0;
    for k in keys {
        if let Ok(Some((l, _))) = shared.leases.read(&k).await
            && !l.free_at(now)
        {
            n += 1;
        }
    }
    n
}
