//! eldercare as several alike members on a NATS JetStream cluster, so
//! that any one machine may stop and no alarm is lost (docs/cluster.md).
//!
//! ```text
//! devices --MQTT--> any member's guard --publish, PUBACK on JetStream ack-->
//!   ELDERCARE_IN  eldercare.in.<partition>.{m,t,r}   (R3, by elder)
//!     --> the partition's owner (lease): rule engine, clocked by the stream
//!         --> ELDERCARE_DECISIONS eldercare.decisions.<p> (fenced, de-duplicated)
//!             --> the active desk (lease): PostgreSQL, one gap-free seq
//!                 --> eldercare.events --> every member's subscribers
//! ```
//!
//! - [`partition`]: the elder -> partition hash and the subjects (pure).
//! - [`journal`]: the intake log a member's MQTT front end appends to.
//! - [`lease`]: leases in a KV bucket, taken and renewed by revision.
//! - [`owner`]: running one partition: replay from its snapshot, judge,
//!   tick, snapshot.
//! - [`decisions`]: the owner's decisions, fenced and de-duplicated.
//! - [`desk`]: the active desk, and the forwarding of operators' actions.
//! - [`manager`]: this member's share of partitions, and the desk.
//! - [`sessions`]: closing a device's sessions on every member.
//! - [`status`]: what `eldercare cluster status` shows.
#![forbid(unsafe_code)]

pub mod decisions;
pub mod desk;
pub mod journal;
pub mod lease;
pub mod manager;
pub mod owner;
pub mod partition;
pub mod sessions;
pub mod status;

use async_nats::jetstream::{self, Context, kv, object_store, stream};
use eldercare_alerts::Escalation;
use eldercare_broker::Refusals;
use eldercare_rules::Rules;
use eldercare_store::Store;
use partition::{DECISION_STREAM, INTAKE_STREAM, LEASES, SNAPSHOTS};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How a member joins the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS servers, comma-separated (`nats://a:4222,nats://b:4222`).
    pub urls: String,
    /// This member's name, unique in the cluster.
    pub member: String,
    /// How long a lease runs unless renewed: about the failover time.
    pub lease: Duration,
    /// Replicas of the streams and buckets (3 in production: one server
    /// may be lost).
    pub replicas: usize,
}

/// What a member's parts share.
pub struct Shared {
    pub client: async_nats::Client,
    pub js: Context,
    pub member: String,
    pub leases: lease::Leases,
    pub snapshots: object_store::ObjectStore,
    pub store: Arc<dyn Store>,
    pub refusals: Refusals,
    pub rules: watch::Receiver<Rules>,
    pub escalation: Escalation,
}

/// Connects to the NATS servers (any one reachable will do; the client
/// moves to another when one is lost).
pub async fn connect(urls: &str, name: &str) -> Result<async_nats::Client, async_nats::Error> {
    let addrs: Vec<async_nats::ServerAddr> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    Ok(async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connect(addrs)
        .await?)
}

/// Creates the streams and buckets when they are missing (any member
/// may be first); returns the lease bucket and the snapshot store.
pub async fn setup(
    js: &Context,
    replicas: usize,
) -> Result<(kv::Store, object_store::ObjectStore), async_nats::Error> {
    js.get_or_create_stream(stream::Config {
        name: INTAKE_STREAM.into(),
        subjects: vec!["eldercare.in.>".into()],
        num_replicas: replicas,
        storage: stream::StorageType::File,
        // A new owner replays from its snapshot (seconds old); a day
        // leaves room for a cluster down for hours.
        max_age: Duration::from_secs(24 * 3600),
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await?;
    js.get_or_create_stream(stream::Config {
        name: DECISION_STREAM.into(),
        subjects: vec!["eldercare.decisions.>".into()],
        num_replicas: replicas,
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(7 * 24 * 3600),
        // Longer than a failover's replay, so a replayed decision is
        // always recognised.
        duplicate_window: Duration::from_secs(600),
        ..Default::default()
    })
    .await?;
    // The bucket's stream made here, as the client would: its own
    // creation asks the account's limits first, in an answer older
    // servers (2.9) shape differently.
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{LEASES}"),
        subjects: vec![format!("$KV.{LEASES}.>")],
        max_messages_per_subject: 1,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: replicas,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await?;
    let leases = js.get_key_value(LEASES).await?;
    let snapshots = match js.get_object_store(SNAPSHOTS).await {
        Ok(s) => s,
        Err(_) => {
            js.create_object_store(object_store::Config {
                bucket: SNAPSHOTS.into(),
                num_replicas: replicas,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await?
        }
    };
    Ok((leases, snapshots))
}

/// A JetStream context for this client.
pub fn jetstream(client: async_nats::Client) -> Context {
    jetstream::new(client)
}
