//! Wiring a cluster member (docs/cluster.md): the MQTT front end on the
//! replicated intake log, this member's share of partitions and maybe
//! the desk (crates/cluster), and an alert desk handle for the API that
//! forwards to whichever member is the active desk. And `eldercare
//! cluster status`.
use anyhow::Context;
use eldercare_alerts::AlertDesk;
use eldercare_broker::{Ingest, IngestConfig, Refusals};
use eldercare_cluster::{ClusterConfig, Shared, desk, journal, manager, owner};
use eldercare_model::RegistryChange;
use eldercare_store::Store;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub struct MemberParts {
    /// The database itself: the desk and the partitions write there and
    /// nowhere else (the streams are their spool).
    pub direct: Arc<dyn Store>,
    /// The store the front end and the API read.
    pub store: Arc<dyn Store>,
    pub refusals: Refusals,
    pub rules: tokio::sync::watch::Receiver<eldercare_rules::Rules>,
    pub escalation: eldercare_alerts::Escalation,
    pub ingest: IngestConfig,
}

pub struct Member {
    pub desk: AlertDesk,
    pub task: tokio::task::JoinHandle<()>,
    pub ingest: Ingest,
    /// Closes a device's sessions on every member.
    pub closer: eldercare_cluster::sessions::Closer,
    /// Sent once the server is ready (its ready line printed): only then
    /// does the member take partitions and the desk.
    pub begin: tokio::sync::oneshot::Sender<()>,
}

pub async fn start_member(
    cc: &ClusterConfig,
    parts: MemberParts,
    shutdown: CancellationToken,
) -> anyhow::Result<Member> {
    let client = eldercare_cluster::connect(&cc.urls, &cc.member)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to NATS at {}: {e}", cc.urls))?;
    let js = eldercare_cluster::jetstream(client.clone());
    let (leases, snapshots) = eldercare_cluster::setup(&js, cc.replicas)
        .await
        .map_err(|e| anyhow::anyhow!("preparing the cluster's streams: {e}"))?;
    info!(member = %cc.member, replicas = cc.replicas, lease_ms = cc.lease.as_millis() as u64, "Joined the cluster.");
    let shared = Arc::new(Shared {
        client: client.clone(),
        js: js.clone(),
        member: cc.member.clone(),
        leases: eldercare_cluster::lease::Leases {
            kv: leases,
            member: cc.member.clone(),
            ttl_ms: cc.lease.as_millis() as i64,
        },
        snapshots,
        store: parts.direct,
        refusals: parts.refusals.clone(),
        rules: parts.rules,
        escalation: parts.escalation,
    });
    // The API's desk: actions to the active desk, its events back.
    let (desk, events) = AlertDesk::forwarding(
        parts.store.clone(),
        Arc::new(desk::ToActiveDesk {
            client: client.clone(),
        }),
    );
    let follow = tokio::spawn(desk::follow_events(
        client.clone(),
        events,
        shutdown.clone(),
    ));
    // Registry changes from the API reach every partition through the
    // intake stream, in order with the devices' messages.
    let (changes, changes_rx) = tokio::sync::mpsc::channel::<RegistryChange>(1024);
    let forward_changes = tokio::spawn(owner::forward_changes(js.clone(), changes_rx));
    let ingest = Ingest::start_member(
        parts.ingest,
        Box::new(journal::StreamJournal::new(
            js.clone(),
            tokio::runtime::Handle::current(),
        )),
        parts.store,
        desk.live(),
        parts.refusals,
        changes,
        shutdown.clone(),
    )
    .await
    .context("starting the MQTT front end")?;
    let (begin, begun) = tokio::sync::oneshot::channel::<()>();
    let sd = shutdown.clone();
    let follow_closes = tokio::spawn(eldercare_cluster::sessions::follow(
        client.clone(),
        ingest.sessions(),
        shutdown.clone(),
    ));
    let closer = eldercare_cluster::sessions::Closer {
        client: client.clone(),
    };
    let manage = tokio::spawn(async move {
        if begun.await.is_ok() {
            manager::run(shared, sd).await;
        }
    });
    let task = tokio::spawn(async move {
        let _ = manage.await;
        let _ = follow.await;
        let _ = follow_closes.await;
        forward_changes.abort();
        let _ = client.flush().await;
    });
    Ok(Member {
        desk,
        task,
        ingest,
        closer,
        begin,
    })
}

/// `eldercare cluster status`.
pub async fn status(urls: &str, json: bool) -> anyhow::Result<()> {
    let client = eldercare_cluster::connect(urls, "eldercare-status")
        .await
        .map_err(|e| anyhow::anyhow!("connecting to NATS at {urls}: {e}"))?;
    let js = eldercare_cluster::jetstream(client);
    let s = eldercare_cluster::status::read(&js)
        .await
        .map_err(|e| anyhow::anyhow!("reading the cluster's state: {e}"))?;
    if json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        print!("{}", eldercare_cluster::status::render(&s));
    }
    Ok(())
}
