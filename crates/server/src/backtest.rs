//! `eldercare backtest`: how a change of the rule file would have felt
//! before it is made. Stored readings of a time range are replayed through
//! a fresh rule engine with the candidate rule file (and, with
//! `--against`, a second one with the baseline file), and the alerts each
//! would have raised are set against those the alert log kept for the
//! range. Read only: it may run beside a live server.
//!
//! Each elder is replayed on an engine of their own (the engine's state
//! is per elder, so this decides as one engine for all would) from the
//! store's per-elder index, page by page: a reader task fetches and
//! decodes the pages while this one replays, and nothing holds more than
//! a few pages. The pure parts are in `replay` (readings in, alerts out;
//! matching) and `report` (what is printed).
mod replay;
mod report;

use crate::EXIT_CONFIG;
use crate::config::StorageArgs;
use anyhow::Context;
use eldercare_model::{Body, Device, EpochMs, Reading};
use eldercare_rules::{DeviceProfile, ElderProfile, PlanProfile, Rules};
use eldercare_store::{AlertQuery, ReadingQuery, ReadingSubject, Store};
use replay::{AlertRow, Replay};
use report::Report;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tracing::debug;

/// Readings fetched from the store at a time.
const PAGE: u32 = 5_000;
/// Pages decoded ahead of the replay.
const PAGES_AHEAD: usize = 4;

#[derive(clap::Args, Debug)]
#[command(after_long_help = "\
Readings are replayed in event-time order (the store keeps no arrival \
time); the engine's clock is the readings' event time, ticked every \
--tick of simulated time so the timer rules (out of bed, inactivity, \
offline) fire. Each elder's engine is told today's registry. Alerts are \
the same on two sides when they have the same elder, kind and subject and \
were raised within --tolerance of each other (from the first raise to \
the last repeat folded in), or over overlapping windows. See the \
Backtesting section of docs/rules.md for what it cannot see.

Exit codes: 0 report printed; 64 a rule file, time or elder refused; 1 \
the store failed.")]
pub struct BacktestArgs {
    #[command(flatten)]
    storage: StorageArgs,
    /// The candidate rule file, as `serve --rules` takes it; a bad file is
    /// refused with the key and why.
    #[arg(long, value_name = "CANDIDATE.toml")]
    rules: PathBuf,
    /// A baseline rule file, replayed too and compared with the candidate
    /// (e.g. the file the server runs with).
    #[arg(long, value_name = "BASELINE.toml")]
    against: Option<PathBuf>,
    /// Start of the range, event time: RFC 3339 (`2026-03-01T08:00:00+08:00`)
    /// or a UTC date (`2026-03-01`) [default: 24 h before --to]
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    from: Option<EpochMs>,
    /// End of the range, exclusive, as --from [default: now]
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    to: Option<EpochMs>,
    /// Only this elder; repeat for several [default: every registered elder]
    #[arg(long = "elder", value_name = "ID")]
    elders: Vec<String>,
    /// Two alerts raised this close together are the same alert; a repeat
    /// this soon after a replayed raise folds into it (`90s`, `10m`, `1h`)
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    tolerance: i64,
    /// Simulated time between two ticks of the engine's timers
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    tick: i64,
    /// Readings this long before --from are replayed first, so holds and
    /// timers under way at --from are known; alerts they raise before
    /// --from are not reported
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    warmup: i64,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// A time flag: RFC 3339, or a date alone for its UTC midnight.
fn parse_time(s: &str) -> Result<EpochMs, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d
            .and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_millis());
    }
    Err(format!(
        "`{s}` is not a time: give RFC 3339 (2026-03-01T08:00:00Z) or a date (2026-03-01)"
    ))
}

/// A duration flag in milliseconds: a number with `ms`, `s`, `m`, `h` or
/// `d`, or seconds alone.
fn parse_duration(s: &str) -> Result<i64, String> {
    let bad = || format!("`{s}` is not a duration: give e.g. 90s, 10m, 1h");
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms).ok_or_else(bad)
}

/// A rule file loaded as the server loads it; refused with its key and why.
fn load_rules(what: &str, path: &std::path::Path) -> Result<Rules, String> {
    Rules::load(path).map_err(|e| format!("{what} rule file {}: {e}", path.display()))
}

pub async fn run(args: BacktestArgs) -> anyhow::Result<ExitCode> {
    let refuse = |msg: String| {
        eprintln!("eldercare: {msg}");
        Ok(ExitCode::from(EXIT_CONFIG))
    };
    let candidate = match load_rules("candidate", &args.rules) {
        Ok(r) => r,
        Err(e) => return refuse(e),
    };
    let baseline = match &args.against {
        None => None,
        Some(p) => match load_rules("baseline", p) {
            Ok(r) => Some(r),
            Err(e) => return refuse(e),
        },
    };
    let to = args
        .to
        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
    let from = args.from.unwrap_or(to - 86_400_000);
    if from >= to {
        return refuse("--from must be before --to".into());
    }
    if args.tick <= 0 {
        return refuse("--tick must be more than 0".into());
    }
    let store = crate::open_store(&args.storage).await?;
    let mut elders = store
        .list_elders(None)
        .await
        .context("reading the elders")?;
    elders.sort_by(|a, b| a.elder_id.cmp(&b.elder_id));
    if !args.elders.is_empty() {
        let known: HashSet<&str> = elders.iter().map(|e| e.elder_id.as_str()).collect();
        if let Some(e) = args.elders.iter().find(|e| !known.contains(e.as_str())) {
            return refuse(format!("--elder {e}: no such elder in the registry"));
        }
        let wanted: HashSet<&str> = args.elders.iter().map(String::as_str).collect();
        elders.retain(|e| wanted.contains(e.elder_id.as_str()));
    }
    let mut devices: HashMap<String, Vec<Device>> = HashMap::new();
    for d in store
        .list_devices(None)
        .await
        .context("reading the devices")?
    {
        devices.entry(d.elder_id.clone()).or_default().push(d);
    }
    let (carers, mut plans) = visit_registry(store.as_ref()).await?;
    let homes: Vec<Home> = elders
        .iter()
        .map(|e| Home {
            elder: ElderProfile::from_elder(e),
            devices: devices
                .remove(&e.elder_id)
                .unwrap_or_default()
                .iter()
                .map(DeviceProfile::from)
                .collect(),
            plans: plans.remove(&e.elder_id).unwrap_or_default(),
            carers: carers.clone(),
        })
        .collect();
    drop(elders);

    let start = from - args.warmup.max(0);
    let replayed = replay_homes(
        store.clone(),
        &homes,
        Window { start, from, to },
        &candidate,
        baseline.as_ref(),
        args.tick,
        args.tolerance,
    )
    .await?;
    let actual = actual_alerts(store.as_ref(), &homes, !args.elders.is_empty(), from, to)
        .await
        .context("reading the alert log")?;
    let report = Report {
        from,
        to,
        tolerance_ms: args.tolerance,
        tick_ms: args.tick,
        elders: homes.len(),
        readings: replayed.readings,
        skipped: replayed.skipped,
        candidate_file: args.rules.display().to_string(),
        baseline_file: args.against.as_ref().map(|p| p.display().to_string()),
        actual,
        baseline: replayed.baseline,
        candidate: replayed.candidate,
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(ExitCode::SUCCESS)
}

/// An elder and the devices registered to them now.
/// Every carer with their provider, and each elder's visit plans, as the
/// server's rule engine is told them (today's registry, like the elders
/// and devices).
async fn visit_registry(
    store: &dyn Store,
) -> anyhow::Result<(
    Arc<Vec<(String, String)>>,
    HashMap<String, Vec<PlanProfile>>,
)> {
    let carers = store
        .list_carers()
        .await
        .context("reading the carers")?
        .into_iter()
        .map(|c| (c.carer_id, c.provider_id))
        .collect();
    let mut plans: HashMap<String, Vec<PlanProfile>> = HashMap::new();
    for p in store
        .list_visit_plans()
        .await
        .context("reading the visit plans")?
    {
        if let Some(pp) = PlanProfile::from_plan(&p) {
            plans.entry(p.elder_id).or_default().push(pp);
        }
    }
    Ok((Arc::new(carers), plans))
}

struct Home {
    elder: ElderProfile,
    devices: Vec<DeviceProfile>,
    /// The elder's visit plans, and every carer with their provider (a
    /// check-in is matched to a plan of the carer's provider).
    plans: Vec<PlanProfile>,
    carers: Arc<Vec<(String, String)>>,
}

#[derive(Clone, Copy)]
struct Window {
    /// Readings are replayed from here (`from` less the warm-up).
    start: EpochMs,
    /// Alerts raised from here on are reported.
    from: EpochMs,
    to: EpochMs,
}

struct Replayed {
    candidate: Vec<AlertRow>,
    baseline: Option<Vec<AlertRow>>,
    readings: u64,
    skipped: u64,
}

/// A page of one home's readings, decoded; `last` ends the home.
struct Page {
    readings: Vec<Reading>,
    skipped: u64,
    last: bool,
}

/// Replays every home, in order, with the candidate (and baseline) rules.
async fn replay_homes(
    store: Arc<dyn Store>,
    homes: &[Home],
    w: Window,
    candidate: &Rules,
    baseline: Option<&Rules>,
    tick_ms: i64,
    tolerance_ms: i64,
) -> anyhow::Result<Replayed> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<anyhow::Result<Page>>(PAGES_AHEAD);
    let plan: Vec<(String, HashSet<String>)> = homes
        .iter()
        .map(|h| {
            let ids = h.devices.iter().map(|d| d.device_id.clone()).collect();
            (h.elder.elder_id.clone(), ids)
        })
        .collect();
    let reader = tokio::spawn(read_pages(store, plan, w, tx));
    let mut out = Replayed {
        candidate: Vec::new(),
        baseline: baseline.map(|_| Vec::new()),
        readings: 0,
        skipped: 0,
    };
    let in_range = move |rows: Vec<AlertRow>| {
        rows.into_iter()
            .filter(move |a| a.at_ms >= w.from && a.at_ms < w.to)
    };
    for home in homes {
        let elders = std::slice::from_ref(&home.elder);
        let new = |rules: &Rules| {
            Replay::new(
                rules.clone(),
                elders,
                &home.devices,
                w.start,
                tick_ms,
                tolerance_ms,
            )
            .with_visits(&home.carers, &home.elder.elder_id, home.plans.clone())
        };
        let mut cand = new(candidate);
        let mut base = baseline.map(new);
        loop {
            let page = match rx.recv().await {
                Some(p) => p?,
                None => anyhow::bail!("the reader of the readings stopped early"),
            };
            out.skipped += page.skipped;
            for r in &page.readings {
                cand.reading(r);
                if let Some(b) = &mut base {
                    b.reading(r);
                }
            }
            if page.last {
                break;
            }
        }
        let (rows, n) = cand.finish(w.to);
        out.readings += n;
        out.candidate.extend(in_range(rows));
        if let (Some(b), Some(rows)) = (base, &mut out.baseline) {
            rows.extend(in_range(b.finish(w.to).0));
        }
        debug!(elder_id = %home.elder.elder_id, readings = n, "Backtest: elder replayed.");
    }
    reader.await.context("the reader of the readings")?;
    Ok(out)
}

/// Fetches each home's readings of the window in event-time order, page
/// by page, decodes them and leaves out those of devices not registered
/// to the home now (counted as skipped).
async fn read_pages(
    store: Arc<dyn Store>,
    plan: Vec<(String, HashSet<String>)>,
    w: Window,
    tx: tokio::sync::mpsc::Sender<anyhow::Result<Page>>,
) {
    for (elder_id, devices) in plan {
        let mut after = None;
        loop {
            let q = ReadingQuery {
                subject: ReadingSubject::Elder(elder_id.clone()),
                from: Some(w.start),
                to: Some(w.to),
                streams: Vec::new(),
                newest_first: false,
                after,
                limit: PAGE,
            };
            let rows = match store.query_readings(&q).await {
                Ok(rows) => rows,
                Err(e) => {
                    let e = anyhow::Error::new(e)
                        .context(format!("reading the readings of {elder_id}"));
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let last = rows.len() < PAGE as usize;
            after = rows.last().map(|r| (r.ts_ms, r.id));
            let mut page = Page {
                readings: Vec::with_capacity(rows.len()),
                skipped: 0,
                last,
            };
            for r in rows {
                if !devices.contains(&r.device_id) {
                    page.skipped += 1;
                    continue;
                }
                match Body::from_json(r.stream, &r.json) {
                    Ok(body) => page.readings.push(Reading {
                        device_id: r.device_id,
                        seq: r.seq,
                        ts_ms: r.ts_ms,
                        body,
                    }),
                    Err(e) => {
                        // The body is not logged: it may be a health reading.
                        debug!(device_id = %r.device_id, id = r.id, error = %e, "Backtest: stored reading does not decode; skipped.");
                        page.skipped += 1;
                    }
                }
            }
            if tx.send(Ok(page)).await.is_err() {
                return;
            }
            if last {
                break;
            }
        }
    }
}

/// The alert log's alerts raised in `[from, to)` for the homes replayed:
/// one query per elder when only some were asked for, else one for all.
async fn actual_alerts(
    store: &dyn Store,
    homes: &[Home],
    some: bool,
    from: EpochMs,
    to: EpochMs,
) -> anyhow::Result<Vec<AlertRow>> {
    let ids: HashSet<&str> = homes.iter().map(|h| h.elder.elder_id.as_str()).collect();
    let queries: Vec<Option<String>> = if some {
        ids.iter().map(|e| Some(e.to_string())).collect()
    } else {
        vec![None]
    };
    let mut out = Vec::new();
    for elder_id in queries {
        let mut q = AlertQuery {
            elder_id,
            raised_from: Some(from),
            raised_to: Some(to),
            limit: 1_000,
            ..AlertQuery::default()
        };
        loop {
            let page = store.list_alerts(&q).await?;
            let done = page.len() < q.limit as usize;
            q.after = page.last().map(|a| (a.raised_at, a.id.clone()));
            out.extend(
                page.iter()
                    .filter(|a| ids.contains(a.elder_id.as_str()))
                    .map(AlertRow::from_alert),
            );
            if done {
                break;
            }
        }
    }
    // Oldest first, as the replays raise them.
    out.sort_by(|a, b| (a.at_ms, &a.elder_id).cmp(&(b.at_ms, &b.elder_id)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_a_utc_date() {
        assert_eq!(parse_time("2026-01-01T00:00:00Z"), Ok(1_767_225_600_000));
        assert_eq!(
            parse_time("2026-01-01T08:00:00+08:00"),
            Ok(1_767_225_600_000)
        );
        assert_eq!(parse_time("2026-01-01"), Ok(1_767_225_600_000));
        assert!(parse_time("yesterday").unwrap_err().contains("yesterday"));
    }

    #[test]
    fn durations_take_a_unit_or_mean_seconds() {
        assert_eq!(parse_duration("10m"), Ok(600_000));
        assert_eq!(parse_duration("90s"), Ok(90_000));
        assert_eq!(parse_duration("90"), Ok(90_000));
        assert_eq!(parse_duration("1h"), Ok(3_600_000));
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn a_bad_rule_file_is_refused_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cand.toml");
        std::fs::write(&p, "[vitals]\npulse_high = \"fast\"\n").unwrap();
        let e = load_rules("candidate", &p).unwrap_err();
        assert!(e.starts_with("candidate rule file "), "{e}");
        assert!(e.contains("vitals.pulse_high"), "{e}");
    }
}
