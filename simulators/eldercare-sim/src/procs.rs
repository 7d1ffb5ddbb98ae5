//! A fleet over several processes. One process may hold only so many
//! descriptors (its hard limit), so a test of tens of thousands of
//! sessions runs the simulator as N children of itself, each driving a
//! [`Part`] of the homes with its own descriptor limit raised, and the
//! parent merges what they report ([`merge`]).
//!
//! A child gets the parent's arguments plus a hidden `--part K/N`, runs
//! its share as a single simulator would, and speaks on stdout in JSON
//! lines (`{"tick": ...}` every second, `{"result": ...}` at the end; see
//! [`crate::drive::Report`]). Its stdin is a pipe from the parent and
//! nothing more: when it closes, because the parent stops the run or
//! died, the child stops and reports ([`stdin_closed`]). The children
//! run in a process group of their own, so a Ctrl-C reaches the parent
//! alone, which closes their stdin, waits for their reports and kills by
//! PID any child still running after a grace period.
use std::ffi::OsString;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::drive::{self, Stop};

/// A child's wait for its report after the run was stopped, before the
/// parent kills it.
pub const GRACE: Duration = Duration::from_secs(30);

/// The share of the fleet one child drives: part `index` (from 0) of
/// `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Part {
    type Err = String;
    fn from_str(s: &str) -> Result<Part, String> {
        let bad = || format!("`{s}` is not a part K/N with K < N");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if index >= count {
            return Err(bad());
        }
        Ok(Part { index, count })
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Part {
    /// The home numbers (from 1) of this part of `homes` homes.
    pub fn homes(&self, homes: usize) -> Range<usize> {
        split(homes, self.count)[self.index].clone()
    }
}

/// Home numbers (from 1) of each of `parts` parts of `homes` homes:
/// consecutive, in order, sizes differing by at most one (the first
/// parts take the extra homes). A home's devices stay together: they
/// share the home's day.
pub fn split(homes: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.max(1);
    let (each, extra) = (homes / parts, homes % parts);
    let mut start = 1;
    (0..parts)
        .map(|k| {
            let len = each + usize::from(k < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .collect()
}

/// A child's arguments: the parent's own (without the program name), and
/// its part.
pub fn child_args(parent: &[OsString], part: Part) -> Vec<OsString> {
    let mut args = parent.to_vec();
    args.push("--part".into());
    args.push(part.to_string().into());
    args
}

/// Raises this process's soft limit on open files to the hard limit;
/// returns `(soft, hard)`.
pub fn raise_descriptor_limit() -> std::io::Result<(u64, u64)> {
    let (_, hard) = rlimit::Resource::NOFILE.get()?;
    let soft = rlimit::increase_nofile_limit(hard)?;
    Ok((soft, hard))
}

/// Descriptors a process of the simulator needs for `sessions` MQTT
/// sessions: one each, three through the source-address relay (its Unix
/// socket's two ends and the TCP connection), and some to spare.
pub fn descriptors_needed(sessions: usize, relayed: bool) -> u64 {
    sessions as u64 * if relayed { 3 } else { 1 } + 64
}

/// Resolves on Ctrl-C or SIGTERM.
pub fn signals() -> Stop {
    Box::pin(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminated => {}
        }
    })
}

/// Resolves when stdin closes: the parent stopped the run or is gone. If
/// the process has not ended `GRACE` later (it was still connecting, or
/// its broker hangs), it exits.
pub fn stdin_closed() -> Stop {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = tx.send(());
        std::thread::sleep(GRACE);
        eprintln!("stopped by the parent, and no report within {GRACE:?}: exiting");
        std::process::exit(3);
    });
    Box::pin(async {
        let _ = rx.await;
    })
}

/// Runs `parts` children of this executable with `args` (the parent's
/// own), each with its part; prints their stderr prefixed with the part,
/// shows their progress, and returns their results merged, or why a
/// child failed.
pub async fn run_children(
    args: &[OsString],
    parts: usize,
    progress: bool,
) -> anyhow::Result<Value> {
    use std::os::unix::process::CommandExt as _;
    let exe = std::env::current_exe()?;
    let ticks: Arc<Mutex<Vec<Value>>> = Arc::new(Mutex::new(vec![Value::Null; parts]));
    let results: Arc<Mutex<Vec<Option<Value>>>> = Arc::new(Mutex::new(vec![None; parts]));
    let bar = progress.then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        pb
    });
    let mut stdins = Vec::new();
    let mut readers = Vec::new();
    let mut waits = tokio::task::JoinSet::new();
    let (kill_tx, kill_rx) = tokio::sync::watch::channel(false);
    for index in 0..parts {
        let part = Part {
            index,
            count: parts,
        };
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(child_args(args, part))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            // Ctrl-C reaches the parent alone, which stops them in order.
            .process_group(0);
        let mut child = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", exe.display()))?;
        stdins.push(child.stdin.take());
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let (ticks, results, bar2) = (ticks.clone(), results.clone(), bar.clone());
        readers.push(tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Value>(&line) {
                    Ok(mut v) if v.get("tick").is_some() => {
                        ticks.lock().unwrap()[index] = v["tick"].take();
                        if let Some(b) = &bar2 {
                            b.set_message(progress_line(&ticks.lock().unwrap()));
                        }
                    }
                    Ok(mut v) if v.get("result").is_some() => {
                        results.lock().unwrap()[index] = Some(v["result"].take());
                    }
                    _ => say(&bar2, &format!("[{part}] {line}")),
                }
            }
        }));
        let bar3 = bar.clone();
        readers.push(tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                say(&bar3, &format!("[{part}] {line}"));
            }
        }));
        let mut kill = kill_rx.clone();
        waits.spawn(async move {
            let status = tokio::select! {
                s = child.wait() => s,
                _ = async { let _ = kill.wait_for(|k| *k).await; } => {
                    // By PID: this child only.
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            (part, status)
        });
    }
    let mut stop = signals();
    let mut stopping = false;
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut failed: Vec<String> = Vec::new();
    loop {
        let grace_over = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = waits.join_next() => match r {
                None => break,
                Some(Ok((part, Ok(status)))) if !status.success() => {
                    failed.push(format!("part {part} exited with {status}"));
                    // The others stop and report; the run has failed.
                    stdins.clear();
                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + GRACE);
                }
                Some(Ok((part, Err(e)))) => failed.push(format!("part {part}: {e}")),
                Some(_) => {}
            },
            _ = &mut stop, if !stopping => {
                stopping = true;
                say(&bar, "interrupted: stopping the processes");
                stdins.clear();
                deadline.get_or_insert_with(|| tokio::time::Instant::now() + GRACE);
            }
            _ = grace_over => {
                say(&bar, "processes still running after the grace period: killing them");
                let _ = kill_tx.send(true);
                deadline = None;
            }
        }
    }
    for r in readers {
        let _ = r.await;
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if !failed.is_empty() {
        anyhow::bail!("the run failed: {}", failed.join("; "));
    }
    let results: Vec<Value> = results.lock().unwrap().drain(..).flatten().collect();
    if results.len() < parts {
        anyhow::bail!(
            "only {} of {parts} processes reported a result",
            results.len()
        );
    }
    Ok(merge(&results))
}

fn say(bar: &Option<indicatif::ProgressBar>, line: &str) {
    match bar {
        Some(b) => b.println(line),
        None => eprintln!("{line}"),
    }
}

/// The children's latest counters, added up, as a progress line.
fn progress_line(ticks: &[Value]) -> String {
    let sum = |k: &str| ticks.iter().filter_map(|t| t[k].as_u64()).sum::<u64>();
    format!(
        "{} processes  sent {}  acked {}  connections {}  alerts {}",
        ticks.len(),
        sum("sent"),
        sum("acked"),
        sum("connections"),
        sum("alerts")
    )
}

/// The results of several processes as one: counts and rates added up,
/// the longest duration, the earliest start and the latest CONNACK (so
/// the CONNACK rate is of the whole fleet), lists put together, and every
/// percentile taken again from the histograms' buckets. The buckets are
/// removed from what is returned.
pub fn merge(results: &[Value]) -> Value {
    let mut out = results.first().cloned().unwrap_or(Value::Null);
    for r in results.iter().skip(1) {
        merge_into(&mut out, r, "");
    }
    if !out.is_object() {
        return out;
    }
    out["processes"] = json!(results.len());
    drive::with_connect_rates(&mut out["connect"]);
    let rate = &mut out["rate"];
    if let (Some(offered), Some(target)) = (
        rate["offered_per_s"].as_f64(),
        rate["target_per_s"].as_f64(),
    ) {
        rate["offered_of_target"] = json!(offered / target);
    }
    drive::rebuild_percentiles(&mut out);
    drive::strip_buckets(&mut out);
    out
}

fn merge_into(a: &mut Value, b: &Value, key: &str) {
    match (a, b) {
        (a, b) if a.is_null() => *a = b.clone(),
        (Value::Object(a), Value::Object(b)) => {
            // Each process's own pacing: the first one's stands for all.
            if key == "intervals_ms" {
                return;
            }
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(x) => merge_into(x, v, k),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for v in b {
                if key != "reasons" || !a.contains(v) {
                    a.push(v.clone());
                }
            }
        }
        (Value::Bool(a), Value::Bool(b)) => *a = *a && *b,
        (Value::Number(x), Value::Number(y)) => {
            let pick = |f: fn(f64, f64) -> f64| {
                let v = f(x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                if x.is_f64() || y.is_f64() {
                    json!(v)
                } else {
                    json!(v as i64)
                }
            };
            let merged = match key {
                "duration_s"
                | "span_s"
                | "cores"
                | "inflight_window"
                | "device_max_per_s"
                | "busiest_device_per_s"
                | "machine_busy_pct"
                | "concurrency"
                | "last_connack_ms" => pick(f64::max),
                "started_ms" | "first_connack_ms" => pick(f64::min),
                // Taken again from the sums.
                "connacks_per_s" | "ramp_s" | "all_connected_s" | "offered_of_target" => return,
                _ => match (x.as_u64(), y.as_u64()) {
                    (Some(p), Some(q)) => json!(p + q),
                    _ => json!(x.as_f64().unwrap_or(0.0) + y.as_f64().unwrap_or(0.0)),
                },
            };
            *x = match merged {
                Value::Number(n) => n,
                _ => return,
            };
        }
        // Strings (the mode, the first reason), and a value against null.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_split_the_homes_in_order_evenly() {
        assert_eq!(split(10, 3), vec![1..5, 5..8, 8..11]);
        assert_eq!(
            split(2112, 4),
            vec![1..529, 529..1057, 1057..1585, 1585..2113]
        );
        assert_eq!(split(4, 4), vec![1..2, 2..3, 3..4, 4..5]);
        assert_eq!(split(7, 1), vec![1..8]);
        // Every home once, whatever the numbers.
        for homes in 0..40 {
            for parts in 1..9 {
                let s = split(homes, parts);
                assert_eq!(s.len(), parts);
                let all: Vec<usize> = s.iter().flat_map(|r| r.clone()).collect();
                assert_eq!(all, (1..=homes).collect::<Vec<_>>());
                let sizes: Vec<usize> = s.iter().map(|r| r.len()).collect();
                assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
            }
        }
    }

    #[test]
    fn a_part_is_k_of_n() {
        assert_eq!("1/4".parse::<Part>(), Ok(Part { index: 1, count: 4 }));
        assert_eq!(Part { index: 3, count: 4 }.to_string(), "3/4");
        for bad in ["4/4", "1", "a/2", "1/0", "-1/2"] {
            assert!(bad.parse::<Part>().is_err(), "{bad}");
        }
        assert_eq!(Part { index: 2, count: 3 }.homes(10), 8..11);
    }

    #[test]
    fn a_child_gets_the_parents_arguments_and_its_part() {
        let parent: Vec<OsString> = ["run", "--homes", "8", "--procs", "2", "--mqtt5"]
            .map(OsString::from)
            .to_vec();
        let a = child_args(&parent, Part { index: 1, count: 2 });
        assert_eq!(a[..6], parent[..]);
        assert_eq!(a[6..], [OsString::from("--part"), OsString::from("1/2")]);
    }

    #[test]
    fn descriptors_are_counted_per_session_and_through_the_relay() {
        assert_eq!(descriptors_needed(4750, false), 4750 + 64);
        assert_eq!(descriptors_needed(4750, true), 3 * 4750 + 64);
    }

    fn hist_ms(v: &[u64]) -> Value {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000, 3).unwrap();
        v.iter().for_each(|x| h.record(*x).unwrap());
        json!({
            "count": h.len(),
            "p50": h.value_at_quantile(0.5),
            "p95": h.value_at_quantile(0.95),
            "p99": h.value_at_quantile(0.99),
            "max": h.max(),
            "_buckets": h.iter_recorded()
                .map(|v| json!([v.value_iterated_to(), v.count_at_value()]))
                .collect::<Vec<_>>(),
        })
    }

    #[test]
    fn results_add_up_and_the_connack_rate_is_the_fleets() {
        let one = json!({
            "mode": "run", "homes": 2, "devices": 18, "connections": 18,
            "duration_s": 10.0,
            "messages": {"sent": 100, "acked": 99, "rate_sent_per_s": 10.0, "connection_errors": 1},
            "connect": {"sessions": 18, "concurrency": 128, "connacks": 18,
                        "started_ms": 1_000, "first_connack_ms": 1_100, "last_connack_ms": 2_100},
            "commands": {"alert_acks": 1, "other": 0, "subscriptions_refused": 0},
            "rate": {"offered_per_s": 10.0, "target_per_s": 20.0, "met": true,
                     "reasons": ["a"], "reason": "a"},
            "latency_ms": {"sos": hist_ms(&[100, 200])},
        });
        let two = json!({
            "mode": "run", "homes": 1, "devices": 9, "connections": 9,
            "duration_s": 12.5,
            "messages": {"sent": 50, "acked": 50, "rate_sent_per_s": 5.0, "connection_errors": 0},
            "connect": {"sessions": 9, "concurrency": 128, "connacks": 9,
                        "started_ms": 900, "first_connack_ms": 1_000, "last_connack_ms": 4_000},
            "commands": {"alert_acks": 2, "other": 1, "subscriptions_refused": 0},
            "rate": {"offered_per_s": 5.0, "target_per_s": 10.0, "met": false,
                     "reasons": ["a", "b"], "reason": "a"},
            "latency_ms": {"sos": hist_ms(&[300]), "fall": {"count": 0}},
        });
        let m = merge(&[one, two]);
        assert_eq!(m["processes"], 2);
        assert_eq!(m["homes"], 3);
        assert_eq!(m["connections"], 27);
        assert_eq!(m["duration_s"], 12.5);
        assert_eq!(m["messages"]["sent"], 150);
        assert_eq!(m["messages"]["rate_sent_per_s"], 15.0);
        assert_eq!(m["messages"]["connection_errors"], 1);
        assert_eq!(m["commands"]["alert_acks"], 3);
        let c = &m["connect"];
        assert_eq!(c["connacks"], 27);
        assert_eq!(c["concurrency"], 128);
        assert_eq!(c["started_ms"], 900);
        assert_eq!(
            (c["first_connack_ms"].clone(), c["last_connack_ms"].clone()),
            (json!(1_000), json!(4_000))
        );
        assert_eq!(c["ramp_s"], 3.0);
        assert_eq!(c["connacks_per_s"], 9.0);
        assert_eq!(c["all_connected_s"], 3.1);
        assert_eq!(m["rate"]["offered_of_target"], 0.5);
        assert_eq!(m["rate"]["met"], false);
        assert_eq!(m["rate"]["reasons"], json!(["a", "b"]));
        let sos = &m["latency_ms"]["sos"];
        assert_eq!(sos["count"], 3);
        assert_eq!(sos["max"], 300);
        assert_eq!(sos["p50"], 200);
        assert!(
            sos.get("_buckets").is_none(),
            "buckets are not in the result"
        );
        assert_eq!(m["latency_ms"]["fall"]["count"], 0);
    }
}
