//! The telemetry batch writer end to end into PostgreSQL, against the
//! practical ceiling: `psql \copy` of the same rows into the same table.
//!
//!     cargo bench -p eldercare-benches --bench pg_writer
//!
//! Starts its own throwaway PostgreSQL (the store tests' harness), makes
//! N mixed readings of a city of elders (`lib.rs` `round()`, plus a few
//! SOS/fall events), and per repetition, each on a fresh database with the
//! migrations applied and the day's partition created:
//!
//! - writer: every reading pushed into `TelemetryWriter` (the real one:
//!   bounded queue, batches of 1000 or every 100 ms, `Store::insert_readings`
//!   on its own task), timed from the first push until the writer has
//!   written everything, then the rows counted;
//! - `\copy`: the same readings, exported once as CSV beforehand, loaded
//!   with `psql -c "\copy readings(...) FROM 'file' CSV"`, timed around
//!   the psql process, then the rows counted.
//!
//! Reports the median of the repetitions for both, and their ratio.
//!
//! Knobs (environment): PG_WRITER_READINGS (default 1,000,000),
//! PG_WRITER_REPS (3), PG_WRITER_BATCH (the writer's batch, default
//! its `BATCH`), PG_WRITER_SOCKET=1 (the writer over the Unix socket
//! instead of TCP; `\copy` always goes over TCP, like the writer's default),
//! PG_WRITER_NEW_DEVICES=1 (leave `reading_streams` empty, so the writer
//! also records every device's streams as new; by default they are
//! recorded before the timed run, as in a city that has been running:
//! `\copy` never writes them).
#![forbid(unsafe_code)]

// The store tests' throwaway-server harness, shared as is.
#[path = "../crates/store/tests/support/pg.rs"]
mod pg;

use chrono::{DateTime, Utc};
use eldercare_benches::{START_MS, rng, round};
use eldercare_broker::TelemetryWriter;
use eldercare_broker::writer::{BATCH, FLUSH_EVERY};
use eldercare_model::{Body, DeviceEvent, EventType, Stream};
use eldercare_store::{PgOptions, PgStore, Store, StoredReading};
use std::fmt::Write as _;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

/// Elders in the city; one reading each per round.
const ELDERS: usize = 100_000;
/// Event time covered by one round.
const ROUND_MS: i64 = 4_000;
/// The table's columns, in the order of the CSV.
const COLUMNS: &str = "ts, seq, lat, lon, temp_c, movement, accuracy_m, confidence, rssi, \
    stream, hr, spo2, rr, sys, dia, event_type, battery_pct, in_bed, motion, online, \
    device_id, elder_id, room, fw";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// N readings: whole rounds of the city, each reading numbered per device
/// (`seq`), one in a thousand turned into an SOS or fall event from the
/// elder's button, which `round()` never makes.
fn workload(n: usize) -> Vec<StoredReading> {
    let mut rng = rng();
    let mut out = Vec::with_capacity(n);
    let mut r = 0;
    while out.len() < n {
        let from = START_MS + r as i64 * ROUND_MS;
        for (i, mut reading) in round(ELDERS, from, ROUND_MS, &mut rng)
            .into_iter()
            .enumerate()
        {
            if out.len() == n {
                break;
            }
            if out.len() % 1000 == 999 {
                reading.device_id = format!("btn-{i:06}");
                reading.body = Body::Event(DeviceEvent {
                    kind: if i % 2 == 0 {
                        EventType::Sos
                    } else {
                        EventType::Fall
                    },
                    confidence: Some(0.93),
                    carer: None,
                    action: None,
                });
            }
            reading.seq = Some(r as u64);
            out.push(StoredReading {
                elder_id: format!("E{i:06}"),
                reading,
            });
        }
        r += 1;
    }
    out
}

/// One reading as a CSV line, the columns of [`COLUMNS`]: an empty
/// unquoted field is NULL; text is always quoted, so an empty string
/// would stay one.
fn csv_line(out: &mut String, r: &StoredReading) {
    #[derive(Default)]
    struct Row<'a> {
        lat: Option<f64>,
        lon: Option<f64>,
        temp_c: Option<f32>,
        movement: Option<f32>,
        accuracy_m: Option<f32>,
        confidence: Option<f32>,
        rssi: Option<i32>,
        hr: Option<u32>,
        spo2: Option<u32>,
        rr: Option<u32>,
        sys: Option<u32>,
        dia: Option<u32>,
        event_type: Option<u8>,
        battery_pct: Option<u32>,
        in_bed: Option<bool>,
        motion: Option<bool>,
        online: Option<bool>,
        room: Option<&'a str>,
        fw: Option<&'a str>,
    }
    fn num<T: std::fmt::Display>(out: &mut String, v: Option<T>) {
        if let Some(v) = v {
            write!(out, "{v}").expect("writing to a String");
        }
        out.push(',');
    }
    fn flag(out: &mut String, v: Option<bool>) {
        out.push_str(match v {
            Some(true) => "t,",
            Some(false) => "f,",
            None => ",",
        });
    }
    fn text(out: &mut String, v: Option<&str>) {
        if let Some(v) = v {
            out.push('"');
            out.push_str(&v.replace('"', "\"\""));
            out.push('"');
        }
    }
    let mut row = Row::default();
    // The same narrowing as the store: real columns get the f32.
    let stream = match &r.reading.body {
        Body::Vitals(v) => {
            (row.hr, row.spo2, row.rr, row.sys, row.dia) = (v.hr, v.spo2, v.rr, v.sys, v.dia);
            row.temp_c = v.temp_c.map(|x| x as f32);
            1
        }
        Body::Sleep(s) => {
            (row.in_bed, row.hr, row.rr) = (Some(s.in_bed), s.hr, s.rr);
            row.movement = s.movement.map(|x| x as f32);
            2
        }
        Body::Motion(m) => {
            (row.room, row.motion) = (Some(m.room.as_str()), Some(m.motion));
            3
        }
        Body::Location(l) => {
            (row.lat, row.lon) = (Some(l.lat), Some(l.lon));
            row.accuracy_m = l.accuracy_m.map(|x| x as f32);
            4
        }
        Body::Event(e) => {
            row.event_type = Some(match e.kind {
                EventType::Sos => 1,
                EventType::Fall => 2,
                EventType::SosCancel => 3,
                EventType::Visit => 4,
                EventType::CheckIn => 5,
            });
            row.confidence = e.confidence.map(|x| x as f32);
            5
        }
        Body::Status(s) => {
            (row.online, row.battery_pct, row.rssi) = (s.online, s.battery_pct, s.rssi);
            row.fw = s.fw.as_deref();
            6
        }
    };
    let ts = DateTime::<Utc>::from_timestamp_millis(r.reading.ts_ms).expect("a storable time");
    write!(out, "{},", ts.format("%Y-%m-%d %H:%M:%S%.3f+00")).expect("writing to a String");
    num(out, r.reading.seq);
    num(out, row.lat);
    num(out, row.lon);
    num(out, row.temp_c);
    num(out, row.movement);
    num(out, row.accuracy_m);
    num(out, row.confidence);
    num(out, row.rssi);
    num(out, Some(stream));
    num(out, row.hr);
    num(out, row.spo2);
    num(out, row.rr);
    num(out, row.sys);
    num(out, row.dia);
    num(out, row.event_type);
    num(out, row.battery_pct);
    flag(out, row.in_bed);
    flag(out, row.motion);
    flag(out, row.online);
    text(out, Some(&r.reading.device_id));
    out.push(',');
    text(out, Some(&r.elder_id));
    out.push(',');
    text(out, row.room);
    out.push(',');
    text(out, row.fw);
    out.push('\n');
}

/// A fresh database with the store's schema and the workload's day
/// partitioned, as the server would have it.
async fn fresh_store(server: &pg::PgServer, socket: bool) -> (pg::TestDb, PgStore, String) {
    let db = server.fresh_db().await;
    let url = if socket {
        server.socket_url(&db.name)
    } else {
        db.url.clone()
    };
    let store = PgStore::connect(&url, PgOptions::default())
        .await
        .expect("connecting the store");
    let day = DateTime::<Utc>::from_timestamp_millis(START_MS).expect("a time");
    store.maintain(day).await.expect("creating partitions");
    (db, store, url)
}

/// Records every (device, stream) pair of the workload in
/// `reading_streams`, as a running city has them: a device's streams are
/// new only on its first readings, ever.
async fn know_pairs(store: &PgStore, readings: &[StoredReading]) {
    let pairs: std::collections::BTreeSet<(&str, i16)> = readings
        .iter()
        .map(|r| {
            let code = match r.reading.stream() {
                Stream::Vitals => 1,
                Stream::Sleep => 2,
                Stream::Motion => 3,
                Stream::Location => 4,
                Stream::Event => 5,
                Stream::Status => 6,
            };
            (r.reading.device_id.as_str(), code)
        })
        .collect();
    let (devices, streams): (Vec<&str>, Vec<i16>) = pairs.into_iter().unzip();
    sqlx::query("INSERT INTO reading_streams SELECT * FROM UNNEST($1::text[], $2::int2[])")
        .bind(&devices)
        .bind(&streams)
        .execute(store.pool())
        .await
        .expect("recording the pairs");
    sqlx::query("VACUUM ANALYZE reading_streams")
        .execute(store.pool())
        .await
        .expect("vacuum");
}

async fn count(store: &PgStore) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM readings")
        .fetch_one(store.pool())
        .await
        .expect("counting readings")
}

/// The writer's rate, readings/s.
async fn run_writer(
    server: &pg::PgServer,
    readings: &[StoredReading],
    batch: usize,
    socket: bool,
    known_pairs: bool,
) -> f64 {
    let (_db, store, _) = fresh_store(server, socket).await;
    if known_pairs {
        know_pairs(&store, readings).await;
    }
    let owned: Vec<StoredReading> = readings.to_vec();
    let n = owned.len();
    let dyn_store: Arc<dyn Store> = Arc::new(store.clone());
    // A queue that holds the whole workload never makes the pusher wait,
    // and the writer still takes batches of `batch` as fast as it can
    // write them; the row count below proves nothing was lost.
    let (writer, task) = TelemetryWriter::start_with(dyn_store, n, batch, FLUSH_EVERY);
    let t0 = Instant::now();
    for (pos, r) in owned.into_iter().enumerate() {
        writer.push(r, pos as u64 + 1).await;
    }
    // Dropping the last handle ends the writer once everything queued is
    // written.
    drop(writer);
    task.await.expect("the writer task");
    let secs = t0.elapsed().as_secs_f64();
    let rows = count(&store).await;
    assert_eq!(rows, n as i64, "the writer lost readings");
    store.close().await;
    n as f64 / secs
}

/// `psql \copy`'s rate, readings/s.
async fn run_copy(server: &pg::PgServer, csv: &std::path::Path, n: usize) -> f64 {
    let (db, store, _) = fresh_store(server, false).await;
    let cmd = format!("\\copy readings({COLUMNS}) FROM '{}' CSV", csv.display());
    let t0 = Instant::now();
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &db.url,
            "-c",
            &cmd,
        ])
        .output()
        .expect("running psql (Debian: postgresql-client)");
    let secs = t0.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count(&store).await, n as i64, "\\copy lost rows");
    store.close().await;
    n as f64 / secs
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; this program takes no arguments.
    let n = env_usize("PG_WRITER_READINGS", 1_000_000);
    let reps = env_usize("PG_WRITER_REPS", 3).max(1);
    let batch = env_usize("PG_WRITER_BATCH", BATCH);
    let socket = std::env::var_os("PG_WRITER_SOCKET").is_some();
    let known_pairs = std::env::var_os("PG_WRITER_NEW_DEVICES").is_none();

    println!(
        "machine: {} cores, {}, {}, Linux {}; {}",
        sh("nproc"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        sh("grep MemTotal /proc/meminfo | tr -s ' '"),
        sh("uname -r"),
        sh("psql --version"),
    );
    println!("date: {}", sh("date -u '+%Y-%m-%d %H:%M UTC'"));
    println!(
        "{n} readings, {reps} repetitions, writer batch {batch}, writer over {}, {}",
        if socket { "the Unix socket" } else { "TCP" },
        if known_pairs {
            "devices' streams known (steady state)"
        } else {
            "every device new (PG_WRITER_NEW_DEVICES)"
        }
    );

    let server =
        tokio::task::spawn_blocking(|| pg::PgServer::start().unwrap_or_else(|e| panic!("{e}")))
            .await
            .expect("starting PostgreSQL");
    let readings = workload(n);
    let dir = std::env::temp_dir().join(format!("ec-pg-writer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let csv = dir.join("readings.csv");
    let mut text = String::with_capacity(n * 100);
    for r in &readings {
        csv_line(&mut text, r);
    }
    std::fs::write(&csv, &text).expect("writing the CSV");
    drop(text);

    let (mut w, mut c, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        // Alternated, so drift in the machine's speed hits both alike.
        let writer = run_writer(&server, &readings, batch, socket, known_pairs).await;
        let copy = run_copy(&server, &csv, n).await;
        println!(
            "rep {rep}: writer {writer:>9.0}/s  \\copy {copy:>9.0}/s  ratio {:.2}  (load {})",
            writer / copy,
            // Another build on the machine shows here: such a rep says little.
            sh("cut -d' ' -f1-3 /proc/loadavg"),
        );
        w.push(writer);
        c.push(copy);
        ratio.push(writer / copy);
    }
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::MAX, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        format!("{lo:.0}-{hi:.0}")
    };
    let (rw, rc) = (range(&w), range(&c));
    let (mw, mc) = (median(&mut w), median(&mut c));
    // The ratio of each repetition's pair, measured back to back, then
    // their median: steadier than a ratio of medians.
    let mr = median(&mut ratio);
    println!(
        "median: writer {mw:.0}/s ({rw}), \\copy {mc:.0}/s ({rc}), ratio {mr:.2} \
         ({:.2}-{:.2}); targets: >= 50,000/s {}, >= 0.70 of \\copy {}",
        ratio[0],
        ratio[ratio.len() - 1],
        if mw >= 50_000.0 { "met" } else { "NOT met" },
        if mr >= 0.70 { "met" } else { "NOT met" },
    );
    let _ = std::fs::remove_dir_all(&dir);
    // The server stops when dropped (pg_ctl stop on its own data dir).
    drop(server);
}
