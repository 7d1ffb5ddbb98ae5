//! `eldercare backtest` end to end: the real server on SQLite takes a few
//! hours of a home's readings from the stock `mosquitto_pub` and raises
//! what the default rules raise; then, on the stopped server's store, the
//! command replays them with a candidate rule file that lowers
//! `pulse_high`, against a baseline with the default, and must show the
//! one extra alert only the candidate raises. Every wait is on an event
//! (an alert event, a counter, a process exit), bounded by a deadline
//! that only turns a hang into a failure.
mod support;

use serde_json::Value;
use std::process::{Command, Output, Stdio};
use support::*;

const ELDERS: &str = "elder_id,name,district,community\n\
E1,Test One,D1,C1\n\
E2,Test Two,D1,C2\n";
// A day's heartbeat: no device_offline joins the alerts compared.
const DEVICES: &str = "device_id,kind,elder_id,room,secret,heartbeat_s\n\
band-1,vital_band,E1,,s-band-1,86400\n\
btn-1,sos_button,E1,,s-btn-1,86400\n\
band-2,vital_band,E2,,s-band-2,86400\n";

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

/// A band's readings from `t0` for five hours: a resting pulse of 72 every
/// 5 min, and from `spike` a pulse of `hr` every 10 s for `spike_s`
/// seconds; one JSON message a line, in event-time order.
fn band_day(t0: i64, spike: i64, hr: u32, spike_s: i64) -> Vec<String> {
    let mut at: Vec<(i64, u32)> = (0..60)
        .map(|i| t0 + i * 5 * MIN)
        .filter(|t| *t < spike || *t > spike + spike_s * 1000)
        .map(|t| (t, 72))
        .collect();
    at.extend((0..=spike_s / 10).map(|i| (spike + i * 10_000, hr)));
    at.sort();
    at.into_iter()
        .map(|(ts, hr)| format!(r#"{{"ts": {ts}, "hr": {hr}}}"#))
        .collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `eldercare backtest --data-dir DIR ARGS`.
fn backtest(dir: &std::path::Path, args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .arg("backtest")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("ELDERCARE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    exited(child)
}

/// The elder ids and kinds of a list of the JSON report.
fn listed(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|a| {
            (
                a["elder_id"].as_str().unwrap().to_string(),
                a["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_lower_pulse_threshold_shows_its_extra_alert_only_in_the_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = Server::issue_tokens(dir.path());
    let data = dir.path().to_str().unwrap().to_string();
    import_csv(dir.path(), &["--data-dir", &data], ELDERS, DEVICES);
    let s = Server::spawn(dir, tokens);
    let mut sub = s.subscribe(0).await;

    // Six hours ago, to the second: the readings' event times.
    let t0 = (now_ms() - 6 * HOUR) / 1000 * 1000;
    // E1: 125 bpm held for 2 min (under the default pulse_high of 131),
    // then a fall. E2: 140 bpm for 90 s, over either threshold.
    let spike1 = t0 + 2 * HOUR + 30_000;
    let band1 = band_day(t0, spike1, 125, 120);
    let spike2 = t0 + 3 * HOUR + 30_000;
    let band2 = band_day(t0, spike2, 140, 90);
    let fall_at = t0 + 4 * HOUR;
    let fall = vec![format!(
        r#"{{"ts": {fall_at}, "type": "fall", "confidence": 0.9}}"#
    )];
    mosquitto_pub_lines(&s, "band-1", "vitals", &band1);
    mosquitto_pub_lines(&s, "band-2", "vitals", &band2);
    mosquitto_pub_lines(&s, "btn-1", "event", &fall);

    // What the server raised with the default rules: E2's pulse and E1's
    // fall, and nothing for E1's 125 bpm.
    let mut raised = Vec::new();
    while raised.len() < 2 {
        let a = next(&mut sub).await.alert.unwrap();
        raised.push((a.elder_id, a.kind));
    }
    raised.sort();
    assert_eq!(
        raised,
        [
            ("E1".to_string(), "fall".to_string()),
            ("E2".to_string(), "vital_out_of_range".to_string())
        ]
    );
    // Every vitals message judged (and so queued for storage), then a
    // clean stop, which writes what is queued.
    let vitals = (band1.len() + band2.len()) as u64;
    assert_eq!(
        s.await_counter(
            "eldercare_ingest_accepted_total",
            "stream=\"vitals\"",
            vitals
        )
        .await,
        vitals
    );
    let (dir, _tokens) = s.stop().await;

    let base = dir.path().join("baseline.toml");
    std::fs::write(&base, "[vitals]\npulse_high = 131\n").unwrap();
    let cand = dir.path().join("candidate.toml");
    std::fs::write(&cand, "[vitals]\npulse_high = 120\n").unwrap();
    let from = rfc3339(t0 - MIN);
    let (cand_s, base_s) = (cand.to_str().unwrap(), base.to_str().unwrap());
    let out = backtest(
        dir.path(),
        &[
            "--rules",
            cand_s,
            "--against",
            base_s,
            "--from",
            &from,
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));

    // Every stored reading replayed, for both elders.
    assert_eq!(report["readings"], vitals + 1, "{report}");
    assert_eq!(report["skipped_readings"], 0);
    assert_eq!(report["elders"], 2);
    let kinds: Vec<(String, u64, u64, u64)> = report["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["kind"].as_str().unwrap().to_string(),
                k["actual"].as_u64().unwrap(),
                k["baseline"].as_u64().unwrap(),
                k["candidate"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("fall".to_string(), 1, 1, 1),
            ("vital_out_of_range".to_string(), 1, 1, 2)
        ],
        "{report}"
    );
    let only = &report["only"];
    let extra = [("E1".to_string(), "vital_out_of_range".to_string())];
    assert_eq!(listed(&only["candidate_not_actual"]), extra, "{report}");
    assert_eq!(listed(&only["candidate_not_baseline"]), extra, "{report}");
    assert_eq!(listed(&only["actual_not_candidate"]), [], "{report}");
    assert_eq!(listed(&only["baseline_not_candidate"]), [], "{report}");
    // Raised on the reading that completed the 60 s hold.
    let a = &only["candidate_not_actual"][0];
    assert_eq!(a["at"], rfc3339(spike1 + MIN), "{a}");
    assert_eq!(a["severity"], "high");
    assert!(a["summary_en"].as_str().unwrap().contains("125"), "{a}");

    // The table says the same to a person.
    let out = backtest(
        dir.path(),
        &["--rules", cand_s, "--against", base_s, "--from", &from],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let row = |kind: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.starts_with(kind))
            .unwrap_or_else(|| panic!("no {kind} row in\n{table}"))
            .split_whitespace()
            .skip(1)
            .map(String::from)
            .collect()
    };
    assert_eq!(row("fall"), ["1", "1", "1"], "{table}");
    assert_eq!(row("vital_out_of_range"), ["1", "1", "2"], "{table}");
    let listed_after = |title: &str| {
        let mut lines = table.lines().skip_while(|l| !l.starts_with(title));
        lines
            .next()
            .unwrap_or_else(|| panic!("no `{title}` in\n{table}"));
        lines.next().unwrap_or_default().to_string()
    };
    let line = listed_after("Only in the candidate, not in the baseline (1):");
    assert!(
        line.starts_with(&format!(
            "  E1  vital_out_of_range  -  {}  high",
            rfc3339(spike1 + MIN)
        )),
        "{table}"
    );

    // Only E2: E1's extra alert and fall are not in the report.
    let out = backtest(
        dir.path(),
        &[
            "--rules", cand_s, "--from", &from, "--elder", "E2", "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["elders"], 1);
    assert_eq!(report["readings"], band2.len() as u64);
    assert_eq!(
        listed(&report["only"]["candidate_not_actual"]),
        [],
        "{report}"
    );
    assert!(report["only"].get("candidate_not_baseline").is_none());
    assert_eq!(report["kinds"][0]["kind"], "vital_out_of_range");
    assert_eq!(report["kinds"][0]["actual"], 1);
    assert!(report["kinds"][0]["baseline"].is_null());

    // A bad candidate is refused with the key and why, as `serve` refuses it.
    std::fs::write(&cand, "[vitals]\npulse_high = \"fast\"\n").unwrap();
    let out = backtest(dir.path(), &["--rules", cand_s, "--from", &from]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("candidate rule file") && err.contains("vitals.pulse_high"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
