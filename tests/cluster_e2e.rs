//! The cluster mode end to end: three `eldercare serve` members sharing
//! one PostgreSQL database and a real three-server NATS JetStream cluster
//! (Debian's `nats-server`, tests/support/nats.rs), each member with its
//! own data directory. Devices publish over MQTT to any member; alerts are
//! watched over gRPC on any member. Members are lost the hard way:
//! `kill -9`, or SIGSTOP past their lease.
//!
//! What must survive, and is checked (each test says which part):
//! - an out-of-bed episode and a held high pulse under way when the owner
//!   of the elder's partition dies are raised by the new owner, on time
//!   (no later than due + lease + a small margin), each exactly once;
//! - a member stopped past its lease loses its partition when it wakes,
//!   and nothing is raised twice meanwhile;
//! - losing one NATS server loses no device message and no SOS;
//! - losing the active alert desk moves it, and numbering goes on with the
//!   next `seq`, no gap, no duplicate;
//! - devices of a dead member reconnect to another, and are heard;
//! - a carer's check-in and check-out sent by the provider's system to
//!   members that do not judge the elder reach the member that does, and
//!   make one visit;
//! - in every test: `seq` gap-free from 1 and the hash chain intact
//!   (`eldercare audit verify`).
//!
//! `a_nats_cluster_keeps_a_replicated_stream_with_one_server_killed`
//! checks the NATS harness alone, with the async-nats client.
//!
//! One cluster at a time: three NATS servers and three members already
//! fill a 2-core machine, and the tests measure failover times.
#[path = "support/nats.rs"]
mod nats;
#[path = "../crates/store/tests/support/pg.rs"]
mod pg;
mod support;

use eldercare_proto::v1 as pb;
use rumqttc::Packet;
use sqlx::Connection;
use std::collections::HashMap;
use std::time::Duration;
use support::*;

/// `cluster_lease_ms` of every member: a partition or the desk is taken
/// over about this long after its holder is lost.
const LEASE_MS: i64 = 2_000;
/// What a takeover may add beyond the lease: noticing the expiry,
/// loading the partition's snapshot and replaying its intake.
const MARGIN_MS: i64 = 3_000;
/// The partitions of the cluster (fixed).
const PARTITIONS: usize = 16;
const MEMBERS: usize = 3;
/// Only turns a cluster that never settles into a failure.
const SETTLE_DEADLINE: Duration = Duration::from_secs(90);

static CLUSTERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// FNV-1a, 32 bits, over the UTF-8 bytes of `id`: the cluster's hash of
/// an elder id.
fn fnv1a32(id: &str) -> u32 {
    id.bytes().fold(2_166_136_261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    })
}

/// The partition of an elder.
fn partition(elder_id: &str) -> usize {
    (fnv1a32(elder_id) % PARTITIONS as u32) as usize
}

/// An elder id on partition `p`.
fn elder_on(p: usize) -> String {
    (0..)
        .map(|k| format!("E{p:02}-{k}"))
        .find(|id| partition(id) == p)
        .expect("some id hashes to every partition")
}

/// Device ids of the elder on partition `p` (secret `s-<id>`).
fn bed(p: usize) -> String {
    format!("bed-{p}")
}
fn band(p: usize) -> String {
    format!("band-{p}")
}
fn btn(p: usize) -> String {
    format!("btn-{p}")
}

fn topic(device: &str, stream: &str) -> String {
    format!("eldercare/v1/{device}/{stream}")
}

fn ms(t: &eldercare_proto::wkt::Timestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

/// One elder per partition, each with a sleep sensor, a band and a
/// button. Night now, in UTC (an hour ago to two hours ahead), for the
/// out-of-bed rule. A day's heartbeat: no offline alert may join the
/// events a test counts.
fn registry(elders: &[String]) -> (String, String) {
    let hm = |t: chrono::DateTime<chrono::Utc>| t.format("%H:%M").to_string();
    let now = chrono::Utc::now();
    let (night_start, night_end) = (
        hm(now - chrono::Duration::hours(1)),
        hm(now + chrono::Duration::hours(2)),
    );
    let mut e = String::from("elder_id,name,district,community,timezone,night_start,night_end\n");
    let mut d = String::from("device_id,kind,elder_id,room,secret,heartbeat_s\n");
    for (p, id) in elders.iter().enumerate() {
        e += &format!("{id},Test {p},D1,C1,UTC,{night_start},{night_end}\n");
        for (dev, kind) in [
            (bed(p), "sleep_sensor"),
            (band(p), "vital_band"),
            (btn(p), "sos_button"),
        ] {
            d += &format!("{dev},{kind},{id},,s-{dev},86400\n");
        }
    }
    (e, d)
}

/// The cluster as `eldercare cluster status --json` reports it.
#[derive(Debug, Clone, PartialEq)]
struct Status {
    /// Owner per partition (`None`: none).
    owners: Vec<Option<String>>,
    desk: Option<String>,
}

impl Status {
    fn parse(v: &serde_json::Value) -> Result<Status, String> {
        let parts = v["partitions"]
            .as_array()
            .ok_or_else(|| format!("no `partitions` array: {v}"))?;
        let mut owners = vec![None; PARTITIONS];
        for p in parts {
            let i = p["partition"]
                .as_u64()
                .ok_or_else(|| format!("a partition without its number: {p}"))?
                as usize;
            if i >= PARTITIONS {
                return Err(format!("partition {i} of {PARTITIONS}: {v}"));
            }
            owners[i] = p["owner"].as_str().map(String::from);
        }
        if parts.len() != PARTITIONS {
            return Err(format!("{} partitions, not {PARTITIONS}: {v}", parts.len()));
        }
        Ok(Status {
            owners,
            desk: v["desk"]["owner"].as_str().map(String::from),
        })
    }

    fn owner(&self, p: usize) -> &str {
        self.owners[p].as_deref().expect("an owned partition")
    }

    fn desk(&self) -> &str {
        self.desk.as_deref().expect("an active desk")
    }

    /// A partition owned by a member that is not the desk, when there is
    /// one: losing that member then moves partitions only.
    fn partition_apart_from_desk(&self) -> usize {
        (0..PARTITIONS)
            .find(|&p| self.owners[p] != self.desk)
            .unwrap_or(0)
    }
}

struct Member {
    id: String,
    server: Server,
    alive: bool,
    /// Its stdout lines after the ready line, as read so far.
    log: Vec<String>,
}

impl Member {
    fn drain(&mut self) {
        while let Ok(l) = self.server.lines.try_recv() {
            self.log.push(l);
        }
    }

    fn pid(&self) -> String {
        self.server.child.id().to_string()
    }
}

/// Three members, three NATS servers, one PostgreSQL database. Fields drop
/// in order: the members before the NATS servers and the database.
struct Cluster {
    members: Vec<Member>,
    nats: nats::NatsCluster,
    db: pg::TestDb,
    _one_at_a_time: tokio::sync::MutexGuard<'static, ()>,
}

impl Cluster {
    /// Starts it all, with `rules` as every member's rules.toml (none when
    /// empty), and waits until the cluster has settled.
    async fn start(rules: &str) -> (Cluster, Status) {
        Cluster::start_with(rules, &[]).await
    }

    /// As [`Cluster::start`], with more registry files (name, contents)
    /// imported after the elders and devices.
    async fn start_with(rules: &str, more: &[(&str, &str)]) -> (Cluster, Status) {
        let guard = CLUSTERS.lock().await;
        let nats = tokio::task::spawn_blocking(nats::NatsCluster::start)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}"));
        let db = pg::fresh_db().await;
        let elders: Vec<String> = (0..PARTITIONS).map(elder_on).collect();
        let (e, d) = registry(&elders);
        // The registry goes to the shared database once.
        let import = tempfile::tempdir().unwrap();
        import_csv(import.path(), &["--database-url", &db.url], &e, &d);
        import_files(import.path(), &["--database-url", &db.url], more);
        let dirs: Vec<tempfile::TempDir> =
            (0..MEMBERS).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut tokens = Server::issue_tokens(dirs[0].path());
        tokens.insert("provider", add_token(dirs[0].path(), "PR1", "provider"));
        for (i, dir) in dirs.iter().enumerate() {
            if i > 0 {
                std::fs::copy(
                    dirs[0].path().join("tokens.toml"),
                    dir.path().join("tokens.toml"),
                )
                .unwrap();
            }
            // Escalation reminders out of the way: each test counts the
            // events it expects.
            std::fs::write(
                dir.path().join("config.toml"),
                format!(
                    "database_url = \"{}\"\nnats = \"{}\"\nmember_id = \"m{}\"\n\
                     cluster_lease_ms = {LEASE_MS}\n\n\
                     [escalation]\ncritical_s = 3600\nhigh_s = 3600\nmedium_s = 3600\n",
                    db.url,
                    nats.urls(),
                    i + 1
                ),
            )
            .unwrap();
            if !rules.is_empty() {
                std::fs::write(dir.path().join("rules.toml"), rules).unwrap();
            }
        }
        let mut members = Vec::new();
        for (i, dir) in dirs.into_iter().enumerate() {
            let tokens = tokens.clone();
            let spawn = tokio::task::spawn_blocking(move || Server::spawn(dir, tokens));
            let server = tokio::time::timeout(DEADLINE * 2, spawn)
                .await
                .unwrap_or_else(|_| panic!("member m{} printed no ready line", i + 1))
                .unwrap();
            members.push(Member {
                id: format!("m{}", i + 1),
                server,
                alive: true,
                log: Vec::new(),
            });
        }
        let mut c = Cluster {
            members,
            nats,
            db,
            _one_at_a_time: guard,
        };
        let st = c.settle().await;
        (c, st)
    }

    /// `eldercare cluster status --json`.
    async fn status(&self) -> Result<Status, String> {
        let out = tokio::process::Command::new(BIN)
            .args(["cluster", "status", "--nats", &self.nats.urls(), "--json"])
            .output()
            .await
            .unwrap();
        if !out.status.success() {
            return Err(format!(
                "cluster status: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(text.trim())
            .map_err(|e| format!("cluster status --json: {e}: {text}"))?;
        Status::parse(&v)
    }

    /// Waits until every partition and the desk have a live owner and
    /// none has changed hands for two leases (members join one after
    /// another; partitions may move as they do).
    async fn settle(&mut self) -> Status {
        let t = tokio::time::Instant::now();
        let mut stable: Option<(Status, tokio::time::Instant)> = None;
        let mut last = String::new();
        loop {
            let live: Vec<&str> = self.alive().map(|i| self.members[i].id.as_str()).collect();
            match self.status().await {
                Ok(st)
                    if st
                        .owners
                        .iter()
                        .all(|o| o.as_deref().is_some_and(|o| live.contains(&o)))
                        && st.desk.as_deref().is_some_and(|d| live.contains(&d)) =>
                {
                    match &stable {
                        Some((s, since)) if *s == st => {
                            if since.elapsed() >= Duration::from_millis(2 * LEASE_MS as u64) {
                                return st;
                            }
                        }
                        _ => stable = Some((st, tokio::time::Instant::now())),
                    }
                }
                Ok(st) => {
                    last = format!("{st:?}");
                    stable = None;
                }
                Err(e) => {
                    last = e;
                    stable = None;
                }
            }
            if t.elapsed() > SETTLE_DEADLINE {
                self.drain();
                panic!(
                    "the cluster did not settle within {SETTLE_DEADLINE:?} (every partition \
                     and the desk owned by a live member, unchanged for two leases): {last}\n\
                     member lines: {:#?}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn alive(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len()).filter(|&i| self.members[i].alive)
    }

    fn index(&self, id: &str) -> usize {
        self.members
            .iter()
            .position(|m| m.id == id)
            .unwrap_or_else(|| panic!("no member {id}"))
    }

    fn server(&self, i: usize) -> &Server {
        assert!(self.members[i].alive, "{} is dead", self.members[i].id);
        &self.members[i].server
    }

    /// The first live member not in `not`.
    fn other_than(&self, not: &[usize]) -> usize {
        self.alive()
            .find(|i| !not.contains(i))
            .expect("a member left")
    }

    fn drain(&mut self) {
        for m in &mut self.members {
            m.drain();
        }
    }

    fn logs(&self) -> HashMap<&str, &[String]> {
        self.members
            .iter()
            .map(|m| (m.id.as_str(), m.log.as_slice()))
            .collect()
    }

    /// Where each member's lines stand now: lines after it are new.
    fn mark(&mut self) -> Vec<usize> {
        self.drain();
        self.members.iter().map(|m| m.log.len()).collect()
    }

    /// Waits for a line, after `mark`, of a member for which `ok(member
    /// id, line)` holds; returns that member and the line.
    async fn await_line(
        &mut self,
        mark: &[usize],
        what: &str,
        ok: impl Fn(&str, &str) -> bool,
    ) -> (usize, String) {
        let t = tokio::time::Instant::now();
        loop {
            self.drain();
            for (i, m) in self.members.iter().enumerate() {
                if let Some(l) = m.log[mark[i]..].iter().find(|l| ok(&m.id, l)) {
                    return (i, l.clone());
                }
            }
            if t.elapsed() > DEADLINE {
                panic!(
                    "no line {what} within {DEADLINE:?}; member lines: {:#?}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The member that last said it is the active desk (and has not said
    /// it no longer is).
    fn desk_from_lines(&mut self) -> usize {
        self.drain();
        let desks: Vec<usize> = self
            .alive()
            .filter(|&i| {
                let m = &self.members[i];
                let active = format!("cluster: {} is the active desk", m.id);
                let gone = format!("cluster: {} is no longer the desk", m.id);
                m.log.iter().rev().find(|l| **l == active || **l == gone) == Some(&active)
            })
            .collect();
        assert_eq!(
            desks.len(),
            1,
            "one member says it is the active desk: {:#?}",
            self.logs()
        );
        desks[0]
    }

    /// `kill -9` member `i` (its own PID), its exit reaped; returns when.
    fn kill9(&mut self, i: usize) -> i64 {
        let m = &mut self.members[i];
        m.server.child.kill().unwrap();
        m.server.child.wait().unwrap();
        m.alive = false;
        now_ms()
    }

    /// `kill -STOP` or `kill -CONT` to member `i` (its own PID).
    fn signal(&self, i: usize, sig: &str) {
        let pid = self.members[i].pid();
        let st = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .unwrap();
        assert!(st.success(), "kill -{sig} {pid}: {st}");
    }

    /// `eldercare audit verify` on the shared database; its report.
    async fn audit(&self) -> String {
        let out = tokio::process::Command::new(BIN)
            .args(["audit", "verify", "--database-url", &self.db.url])
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "audit verify: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// Every alert of `elder`, listed over gRPC by member `i`.
    async fn alerts_of(&self, i: usize, elder: &str) -> Vec<pb::Alert> {
        self.server(i)
            .grpc()
            .await
            .list_alerts(pb::ListAlertsRequest {
                elder_id: elder.to_string(),
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .alerts
    }

    /// A member's metric.
    fn metric(&self, i: usize, name: &str) -> f64 {
        self.server(i).metric(name, "")
    }
}

/// The next alert event, `what` naming it in the failure.
async fn next_event(sub: &mut tonic::Streaming<pb::AlertEvent>, what: &str) -> pb::AlertEvent {
    tokio::time::timeout(DEADLINE, sub.message())
        .await
        .unwrap_or_else(|_| panic!("no alert event within {DEADLINE:?}: {what}"))
        .unwrap_or_else(|e| panic!("the alert stream failed ({e}) awaiting {what}"))
        .unwrap_or_else(|| panic!("the alert stream ended awaiting {what}"))
}

/// An SOS from `device` at `ts`.
async fn sos_at(d: &Device, device: &str, ts: i64) {
    publish(
        d,
        &topic(device, "event"),
        format!(r#"{{"ts": {ts}, "type": "sos"}}"#),
    )
    .await;
}

/// Waits for `n` PUBACKs on the device's connection.
async fn await_pubacks(d: &mut Device, n: usize) {
    let mut got = 0;
    while got < n {
        match tokio::time::timeout(DEADLINE, d.events.recv()).await {
            Ok(Some(Packet::PubAck(_))) => got += 1,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the connection ended after {got} of {n} PUBACKs"),
            Err(_) => panic!("{got} of {n} PUBACKs within {DEADLINE:?}"),
        }
    }
}

/// The NATS server leading stream `name`, as JetStream reports it.
async fn stream_leader(nats: &nats::NatsCluster, name: &str) -> usize {
    let urls = nats.urls();
    let client = async_nats::connect(urls.split(',').collect::<Vec<_>>())
        .await
        .unwrap();
    let mut stream = async_nats::jetstream::new(client)
        .get_stream(name)
        .await
        .unwrap_or_else(|e| panic!("stream {name}: {e}"));
    let info = stream.info().await.unwrap();
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .unwrap_or_else(|| panic!("stream {name} has no leader: {info:?}"));
    nats.index(&leader)
        .unwrap_or_else(|| panic!("stream {name} led by {leader}, not one of ours"))
}

async fn pg_count(url: &str, sql: String) -> i64 {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut c)
        .await
        .unwrap();
    let _ = c.close().await;
    n
}

#[test]
fn the_partition_hash_is_fnv_1a_32() {
    // The published test vectors of FNV-1a, 32 bits.
    assert_eq!(fnv1a32(""), 0x811c_9dc5);
    assert_eq!(fnv1a32("a"), 0xe40c_292c);
    assert_eq!(fnv1a32("foobar"), 0xbf9c_f968);
    for p in 0..PARTITIONS {
        assert_eq!(partition(&elder_on(p)), p);
    }
}

/// The harness alone: an R3 stream on the three servers keeps taking
/// messages when the server leading it is killed with SIGKILL, keeps what
/// it had, and takes the server back when it restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_cluster_keeps_a_replicated_stream_with_one_server_killed() {
    use async_nats::jetstream;
    let _one = CLUSTERS.lock().await;
    let mut nats = tokio::task::spawn_blocking(nats::NatsCluster::start)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let urls = nats.urls();
    let client = async_nats::connect(urls.split(',').collect::<Vec<_>>())
        .await
        .unwrap();
    let js = jetstream::new(client);
    let mut stream = js
        .create_stream(jetstream::stream::Config {
            name: "HARNESS".into(),
            subjects: vec!["harness.>".into()],
            num_replicas: 3,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap();
    let first = js
        .publish("harness.before", "before".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(first.sequence, 1);
    let info = stream.info().await.unwrap().clone();
    let cluster = info.cluster.expect("a clustered stream");
    assert_eq!(cluster.replicas.len(), 2, "three copies: {cluster:?}");
    let leader_name = cluster.leader.expect("a stream leader");
    let leader = nats.index(&leader_name).expect("the leader is one of ours");

    nats.kill9(leader);

    // The survivors elect a new stream leader (and the client may have
    // been on the killed server): publish until acknowledged, the same
    // message id each time, so a try that was stored is not stored twice.
    let t = tokio::time::Instant::now();
    let mut tries = 0;
    let ack = loop {
        tries += 1;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", "after-1");
        let res = match js
            .publish_with_headers("harness.after", headers, "after".into())
            .await
        {
            Ok(fut) => fut.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match res {
            Ok(ack) => {
                eprintln!(
                    "acknowledged {} ms after {leader_name} was killed, try {tries}",
                    t.elapsed().as_millis()
                );
                break ack;
            }
            Err(e) if t.elapsed() < DEADLINE => {
                if tries == 1 {
                    eprintln!("with {leader_name} killed: {e}; trying again");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no ack within {DEADLINE:?} with {leader_name} killed: {e}"),
        }
    };
    assert_eq!(ack.stream, "HARNESS");
    assert_eq!(ack.sequence, 2, "stored once, after the first: {ack:?}");
    let info = stream.info().await.unwrap().clone();
    assert_eq!(info.state.messages, 2);
    let new_leader = info.cluster.and_then(|c| c.leader);
    assert!(
        new_leader.as_deref().is_some_and(|l| l != leader_name),
        "a new leader: {new_leader:?}"
    );
    let before = stream.get_raw_message(1).await.unwrap();
    assert_eq!(before.payload.as_ref(), b"before", "kept through the kill");
    let after = stream.get_raw_message(2).await.unwrap();
    assert_eq!(after.payload.as_ref(), b"after");

    // Back on its ports and store, it catches up with the stream.
    let _nats = tokio::task::spawn_blocking(move || {
        nats.restart(leader).unwrap_or_else(|e| panic!("{e}"));
        nats
    })
    .await
    .unwrap();
    // Until then, a request may also time out (the client may be on the
    // server still recovering): asked again, bounded.
    let t = tokio::time::Instant::now();
    loop {
        let cluster = match stream.info().await {
            Ok(info) => info.cluster.clone().unwrap_or_default(),
            Err(e) => {
                assert!(
                    t.elapsed() < DEADLINE,
                    "no stream info after {leader_name} restarted: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peers: Vec<&str> = cluster
            .leader
            .iter()
            .map(String::as_str)
            .chain(
                cluster
                    .replicas
                    .iter()
                    .filter(|r| r.current && !r.offline)
                    .map(|r| r.name.as_str()),
            )
            .collect();
        if peers.len() == 3 && peers.contains(&leader_name.as_str()) {
            break;
        }
        assert!(
            t.elapsed() < DEADLINE,
            "{leader_name} not current again after its restart: {cluster:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What must survive `kill -9` of the member that owns an elder's
/// partition, 4 s into an out-of-bed episode (due at 6 s) and a held high
/// pulse (a reading each second, 6 s hold): both alerts are raised by the
/// new owner (after the kill), not early, and no later than due + lease +
/// margin; the pulse alert on the very reading that completed the hold;
/// each exactly once (the alert list of a surviving member), `seq`
/// gap-free from 1, the audit chain intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_partition_owner_mid_episode_raises_its_alerts_on_time_and_once() {
    const AFTER_S: i64 = 6;
    const HOLD_S: i64 = 6;
    const KILL_AFTER: Duration = Duration::from_secs(4);
    let rules = format!(
        "[out_of_bed]\nafter_s = {AFTER_S}\nmoving_window_s = 3\n\n[vitals]\nhold_s = {HOLD_S}\n"
    );
    let (mut c, st) = Cluster::start(&rules).await;
    let p = st.partition_apart_from_desk();
    let elder = elder_on(p);
    let owner = c.index(st.owner(p));
    let s = c.other_than(&[owner]);
    let mut sub = c.server(s).subscribe(0).await;
    let bed_dev = device(c.server(s), &bed(p)).await;
    let band_dev = device(c.server(s), &band(p)).await;

    let t0 = now_ms();
    for (ts, in_bed) in [(t0 - 600_000, true), (t0, false)] {
        publish(
            &bed_dev,
            &topic(&bed(p), "sleep"),
            format!(r#"{{"ts": {ts}, "in_bed": {in_bed}}}"#),
        )
        .await;
    }
    // The band reads a pulse of 150 each second, on the wall clock, from
    // the moment the elder left bed.
    let band_id = band(p);
    let readings = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        for i in 0..=HOLD_S + 2 {
            tokio::time::sleep_until(start + Duration::from_secs(i as u64)).await;
            publish(
                &band_dev,
                &topic(&band_id, "vitals"),
                format!(
                    r#"{{"ts": {}, "seq": {}, "hr": 150}}"#,
                    t0 + i * 1000,
                    i + 1
                ),
            )
            .await;
        }
        band_dev
    });
    // The episodes run on the wall clock: part of them passes before the
    // crash (this is the scenario, not a wait for an event).
    tokio::time::sleep(KILL_AFTER).await;
    let killed_at = c.kill9(owner);
    let oob_due = t0 + AFTER_S * 1000;
    let pulse_due = t0 + HOLD_S * 1000;
    assert!(
        killed_at < oob_due.min(pulse_due) - 500,
        "the owner was killed only {} ms before the alerts were due: too late to test a takeover",
        oob_due.min(pulse_due) - killed_at
    );

    let mut events = Vec::new();
    let mut raised: HashMap<String, pb::Alert> = HashMap::new();
    while raised.len() < 2 {
        let ev = next_event(&mut sub, "the out-of-bed and the pulse alerts").await;
        let a = ev.alert.clone().unwrap();
        events.push((ev.seq, ev.kind, a.kind.clone()));
        assert_eq!(a.elder_id, elder, "only this elder raises anything");
        raised.entry(a.kind.clone()).or_insert(a);
    }
    let _band = readings.await.unwrap();
    for (kind, due) in [
        ("out_of_bed_too_long", oob_due),
        ("vital_out_of_range", pulse_due),
    ] {
        let a = raised
            .get(kind)
            .unwrap_or_else(|| panic!("{kind} raised: {events:?}"));
        let detected = ms(a.detected_at.as_ref().unwrap());
        eprintln!(
            "{kind}: due {} ms after the kill, raised {} ms after it was due",
            due - killed_at,
            detected - due
        );
        assert!(
            detected >= killed_at,
            "{kind} detected {} ms before the owner was killed, not by the new owner",
            killed_at - detected
        );
        assert!(
            detected >= due - 100,
            "{kind} not before it is due: {} ms early",
            due - detected
        );
        assert!(
            detected <= due + LEASE_MS + MARGIN_MS,
            "{kind} raised {} ms after it was due (lease {LEASE_MS} ms + margin {MARGIN_MS} ms)",
            detected - due
        );
    }
    let pulse = &raised["vital_out_of_range"];
    assert_eq!(
        ms(pulse.raised_at.as_ref().unwrap()),
        pulse_due,
        "raised on the reading that completed the hold"
    );

    // A marker through the same partition: once its SOS is out, whatever
    // the takeover would have doubled is out too.
    let btn_dev = device(c.server(s), &btn(p)).await;
    sos_at(&btn_dev, &btn(p), now_ms()).await;
    loop {
        let ev = next_event(&mut sub, "the marker SOS").await;
        let a = ev.alert.unwrap();
        events.push((ev.seq, ev.kind, a.kind.clone()));
        if a.kind == "sos" {
            break;
        }
    }
    assert_eq!(
        events.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "three events, seq gap-free from 1, nothing doubled: {events:?}"
    );
    assert!(
        events
            .iter()
            .all(|e| e.1 == pb::AlertEventKind::Raised as i32),
        "{events:?}"
    );
    let listed = c.alerts_of(c.other_than(&[owner, s]), &elder).await;
    let mut kinds: Vec<(&str, u32)> = listed
        .iter()
        .map(|a| (a.kind.as_str(), a.occurrences))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            ("out_of_bed_too_long", 1),
            ("sos", 1),
            ("vital_out_of_range", 1)
        ],
        "each alert exactly once"
    );
    let report = c.audit().await;
    assert!(report.contains("OK, 3 events"), "{report}");
    let after = c.status().await.unwrap();
    assert_ne!(after.owner(p), c.members[owner].id, "{after:?}");
    let owned: f64 = c
        .alive()
        .map(|i| c.metric(i, "eldercare_cluster_partitions_owned"))
        .sum();
    assert_eq!(
        owned, PARTITIONS as f64,
        "the survivors own every partition"
    );
}

/// What must survive a member frozen (SIGSTOP) for three leases: another
/// member takes its partition (its `owns partition` line) and raises an
/// SOS sent meanwhile; on SIGCONT the frozen member says it lost the
/// partition and raises nothing of its own: a second press afterwards
/// folds into the one alert as its second occurrence, both presses on it
/// once, `seq` 1 and 2, the audit chain intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_stopped_past_its_lease_loses_its_partition_and_doubles_nothing() {
    let (mut c, st) = Cluster::start("").await;
    let p = st.partition_apart_from_desk();
    let frozen = c.index(st.owner(p));
    let frozen_id = c.members[frozen].id.clone();
    let s = c.other_than(&[frozen]);
    let mut sub = c.server(s).subscribe(0).await;
    let button = device(c.server(s), &btn(p)).await;

    let mark = c.mark();
    c.signal(frozen, "STOP");
    // Its lease runs out while it cannot renew it: a wait on the clock
    // is the scenario itself.
    tokio::time::sleep(Duration::from_millis(3 * LEASE_MS as u64)).await;
    let want_owns = move |id: &str, l: &str| l == format!("cluster: {id} owns partition {p}");
    let (taker, _) = c
        .await_line(&mark, &format!("`owns partition {p}`"), |id, l| {
            id != frozen_id && want_owns(id, l)
        })
        .await;

    let first = now_ms();
    sos_at(&button, &btn(p), first).await;
    let ev = next_event(&mut sub, "the SOS sent while the owner was frozen").await;
    assert_eq!(ev.seq, 1);
    assert_eq!(ev.kind, pb::AlertEventKind::Raised as i32);
    assert_eq!(ev.alert.as_ref().unwrap().kind, "sos");

    let mark = c.mark();
    c.signal(frozen, "CONT");
    let frozen_id = c.members[frozen].id.clone();
    c.await_line(
        &mark,
        &format!("`{frozen_id} lost partition {p}`"),
        |id, l| id == frozen_id && l == format!("cluster: {id} lost partition {p}"),
    )
    .await;

    // A second press, after the woken member knows: it must be the
    // alert's second occurrence, not its third.
    let second = now_ms().max(first + 1);
    sos_at(&button, &btn(p), second).await;
    let ev = next_event(&mut sub, "the second press").await;
    assert_eq!(ev.seq, 2, "nothing doubled in between");
    assert_eq!(ev.kind, pb::AlertEventKind::Updated as i32);
    let a = ev.alert.unwrap();
    assert_eq!(a.occurrences, 2);
    let mut presses: Vec<i64> = a
        .readings
        .iter()
        .map(|r| ms(r.ts.as_ref().unwrap()))
        .collect();
    presses.sort();
    assert_eq!(presses, vec![first, second], "each press on it once");
    // Not asserted: eldercare_cluster_fenced_total. The woken member may
    // learn from its lease renewal before any decision of its is refused
    // (docs/cluster.md, Fencing), and then nothing was fenced.
    let after = c.status().await.unwrap();
    assert_eq!(after.owner(p), c.members[taker].id, "{after:?}");
    let report = c.audit().await;
    assert!(report.contains("OK, 2 events"), "{report}");
}

/// What must survive `kill -9` of one NATS server, the one that leads
/// the intake stream (`ELDERCARE_IN`, docs/cluster.md: the loss that
/// devices feel most): a device keeps publishing on its connection, each
/// reading is acknowledged (late during the stream's election, docs say,
/// not refused) and stored exactly once, and an SOS sent after the kill
/// is raised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_nats_server_loses_no_reading_and_no_sos() {
    const BEFORE: i64 = 5;
    const AFTER: i64 = 20;
    let (mut c, _) = Cluster::start("").await;
    let (pa, pb_) = (1, 2);
    let mut band_dev = device(c.server(0), &band(pa)).await;
    let button = device(c.server(1), &btn(pb_)).await;
    let mut sub = c.server(2).subscribe(0).await;
    let t0 = now_ms() - 60_000;
    let reading = |i: i64| format!(r#"{{"ts": {}, "seq": {i}, "hr": 70}}"#, t0 + i * 100);
    for i in 1..=BEFORE {
        publish(&band_dev, &topic(&band(pa), "vitals"), reading(i)).await;
    }
    await_pubacks(&mut band_dev, BEFORE as usize).await;

    let leader = stream_leader(&c.nats, "ELDERCARE_IN").await;
    c.nats.kill9(leader);

    for i in BEFORE + 1..=BEFORE + AFTER {
        publish(&band_dev, &topic(&band(pa), "vitals"), reading(i)).await;
    }
    await_pubacks(&mut band_dev, AFTER as usize).await;
    let pressed = now_ms();
    sos_at(&button, &btn(pb_), pressed).await;
    let ev = next_event(&mut sub, "the SOS sent after a NATS server was killed").await;
    assert_eq!(ev.seq, 1);
    let a = ev.alert.unwrap();
    assert_eq!(
        (a.kind.as_str(), a.elder_id.as_str()),
        ("sos", elder_on(pb_).as_str())
    );

    // The readings are written in batches, apart from the alerts: poll
    // the database, bounded.
    let want = BEFORE + AFTER;
    let rows = format!(
        "SELECT count(*) FROM readings WHERE device_id = '{}'",
        band(pa)
    );
    let t = tokio::time::Instant::now();
    let mut n = 0;
    while t.elapsed() < DEADLINE {
        n = pg_count(&c.db.url, rows.clone()).await;
        if n >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(n, want, "every acknowledged reading stored");
    let distinct = pg_count(
        &c.db.url,
        format!(
            "SELECT count(*) FROM (SELECT DISTINCT seq FROM readings WHERE device_id = '{}') d",
            band(pa)
        ),
    )
    .await;
    assert_eq!(distinct, want, "none stored twice");
    let report = c.audit().await;
    assert!(report.contains("OK, 1 events"), "{report}");
}

/// What must survive `kill -9` of the member that is the active alert
/// desk (found by its `is the active desk` line): another member says it
/// is the active desk, and an SOS pressed right after the kill is raised
/// with `seq` 2 after the SOS of before (no gap, no duplicate), within
/// lease + margin of the press; each alert once, the audit chain intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_active_desk_moves_it_and_numbering_goes_on() {
    let (mut c, st) = Cluster::start("").await;
    let desk = c.desk_from_lines();
    assert_eq!(
        c.members[desk].id,
        st.desk(),
        "the line and the status agree"
    );
    let desk_id = c.members[desk].id.clone();
    let s = c.other_than(&[desk]);
    // Elders on partitions the desk does not own, when there are such:
    // only the desk moves.
    let mut apart = (0..PARTITIONS).filter(|&p| st.owner(p) != desk_id);
    let pa = apart.next().unwrap_or(0);
    let pb_ = apart.next().unwrap_or(1);
    let mut sub = c.server(s).subscribe(0).await;
    let btn_a = device(c.server(s), &btn(pa)).await;
    let btn_b = device(c.server(s), &btn(pb_)).await;
    sos_at(&btn_a, &btn(pa), now_ms()).await;
    let ev = next_event(&mut sub, "the SOS before the kill").await;
    assert_eq!(ev.seq, 1);

    let mark = c.mark();
    c.kill9(desk);
    let pressed = now_ms();
    sos_at(&btn_b, &btn(pb_), pressed).await;
    let (new_desk, _) = c
        .await_line(&mark, "`is the active desk` of another member", |id, l| {
            id != desk_id && l == format!("cluster: {id} is the active desk")
        })
        .await;
    let ev = next_event(&mut sub, "the SOS pressed after the desk was killed").await;
    assert_eq!(ev.seq, 2, "the next seq");
    assert_eq!(ev.kind, pb::AlertEventKind::Raised as i32);
    let a = ev.alert.unwrap();
    assert_eq!(a.elder_id, elder_on(pb_));
    let detected = ms(a.detected_at.as_ref().unwrap());
    eprintln!("SOS raised {} ms after the press", detected - pressed);
    assert!(
        detected <= pressed + LEASE_MS + MARGIN_MS,
        "raised {} ms after the press (lease {LEASE_MS} ms + margin {MARGIN_MS} ms)",
        detected - pressed
    );
    for p in [pa, pb_] {
        let listed = c.alerts_of(new_desk, &elder_on(p)).await;
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].occurrences, 1, "{listed:?}");
    }
    assert_eq!(c.metric(new_desk, "eldercare_cluster_desk_active"), 1.0);
    let after = c.status().await.unwrap();
    assert_eq!(after.desk(), c.members[new_desk].id, "{after:?}");
    let report = c.audit().await;
    assert!(report.contains("OK, 2 events"), "{report}");
}

/// What must survive `kill -9` of the member a device is connected to
/// (neither the desk nor the owner of the device's partition, when the
/// cluster allows): the device sees its connection end, connects to
/// another member with the same credentials, and its SOS is raised once,
/// `seq` 1, the audit chain intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_of_a_killed_member_reconnect_to_another_and_are_heard() {
    let (mut c, st) = Cluster::start("").await;
    let desk = c.index(st.desk());
    let m = c.other_than(&[desk]);
    let m_id = c.members[m].id.clone();
    let p = (0..PARTITIONS).find(|&p| st.owner(p) != m_id).unwrap_or(0);
    let s = c.other_than(&[m]);
    let mut sub = c.server(s).subscribe(0).await;
    let mut button = device(c.server(m), &btn(p)).await;

    c.kill9(m);
    closed(&mut button).await;
    // As a device with a list of addresses does: the next one.
    let button = device(c.server(s), &btn(p)).await;
    sos_at(&button, &btn(p), now_ms()).await;
    let ev = next_event(&mut sub, "the SOS of the reconnected device").await;
    assert_eq!(ev.seq, 1);
    let a = ev.alert.unwrap();
    assert_eq!(
        (a.kind.as_str(), a.device_id.as_str()),
        ("sos", btn(p).as_str())
    );
    let listed = c.alerts_of(s, &elder_on(p)).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let report = c.audit().await;
    assert!(report.contains("OK, 1 events"), "{report}");
}

/// A provider's system may send a check-in to any member: it is kept in
/// the intake stream under the elder's partition, and the partition's
/// owner judges it. The check-in goes to one member that does not own the
/// partition, the check-out to another; one `visit` is raised, with both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_ins_sent_to_any_member_make_one_visit_at_the_owner() {
    let elder = elder_on(3);
    let plan = format!(
        "plan_id,elder_id,provider_id,days,window_start,window_end,length_min,service\n\
         bath-3,{elder},PR1,daily,00:00,23:59,1,bathing\n"
    );
    // A visit is judged `margin_s` after its check-out (signs of the
    // carer leaving): 10 s here rather than 5 min.
    let (c, st) = Cluster::start_with(
        "[visits]\nmargin_s = 10\n",
        &[
            (
                "providers.csv",
                "provider_id,name,phone\nPR1,Provider One,\n",
            ),
            (
                "carers.csv",
                "carer_id,provider_id,name\nC1,PR1,Carer One\n",
            ),
            ("visit_plans.csv", &plan),
        ],
    )
    .await;
    let owner = c.index(st.owner(3));
    let a = c.other_than(&[owner]);
    let b = c.other_than(&[owner, a]);
    let mut sub = c.server(owner).subscribe(0).await;
    let t = now_ms();
    for (member, action, at) in [(a, "in", t - 60_000), (b, "out", t)] {
        let r = pb::visit_service_client::VisitServiceClient::with_interceptor(
            c.server(member).channel().await,
            c.server(member).bearer("provider"),
        )
        .check_in(pb::CheckInRequest {
            elder_id: elder.clone(),
            carer_id: "C1".into(),
            action: action.into(),
            at: Some(eldercare_proto::wkt::Timestamp {
                seconds: at / 1000,
                nanos: 0,
            }),
        })
        .await
        .unwrap_or_else(|e| panic!("{action} through {}: {e:?}", c.members[member].id));
        assert_eq!(r.into_inner().action, action);
    }
    let visit = loop {
        let ev = next_event(&mut sub, "the visit").await;
        let a = ev.alert.unwrap();
        if a.kind == "visit" {
            break a;
        }
    };
    assert_eq!(visit.elder_id, elder);
    let v = visit.visit.as_ref().expect("the visit's details");
    assert_eq!(
        (v.carer_id.as_str(), v.via.as_str(), v.provider_id.as_str()),
        ("C1", "api", "PR1"),
        "{v:?}"
    );
    assert_eq!(
        v.check_in.as_ref().map(|t| t.seconds),
        Some((t - 60_000) / 1000)
    );
    assert_eq!(v.check_out.as_ref().map(|t| t.seconds), Some(t / 1000));
    let visits: Vec<_> = c
        .alerts_of(a, &elder)
        .await
        .into_iter()
        .filter(|x| x.kind == "visit")
        .collect();
    assert_eq!(visits.len(), 1, "{visits:?}");
    let report = c.audit().await;
    assert!(report.contains("OK, "), "{report}");
}
