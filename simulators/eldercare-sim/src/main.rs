//! `eldercare-sim`: drive an eldercare server with simulated homes.
use clap::{Args, Parser, Subcommand};
use eldercare_rules::Rules;
use eldercare_sim::drift::{self, emit::Intervals, plan::DriftKind};
use eldercare_sim::drive::{self, Config, Link, Mode, Pacing, Report};
use eldercare_sim::mqtt::Protocol;
use eldercare_sim::net::{self, SourceAddrs};
use eldercare_sim::procs::{self, Part};
use eldercare_sim::visits;
use eldercare_sim::{Inject, homes, registry_csv};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "eldercare-sim",
    about = "Simulated homes for load tests and rehearsals"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write elders.csv and devices.csv for the simulated homes, to load
    /// with `eldercare import` (the run modes register their homes
    /// themselves through RegistryService when given --admin-token).
    Registry {
        #[arg(long, default_value_t = 50)]
        homes: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Heartbeat interval of every device, in seconds.
        #[arg(long, default_value_t = eldercare_sim::DEFAULT_HEARTBEAT_S)]
        heartbeat_s: u32,
        /// Register a gateway per home too (for `run --gateway`).
        #[arg(long)]
        gateway: bool,
    },
    /// Steady load for a duration: every home lives its day and its
    /// devices report; emergencies are injected as asked.
    Run(RunArgs),
    /// As `run`, and also subscribes to AlertService and matches every
    /// alert to the injected ground truth: detected, missed, false alerts
    /// and latency per episode.
    Verify(RunArgs),
    /// As `run`, with a power cut: at --burst-at-s every device drops its
    /// connection and reconnects at once, then for --burst-s sends
    /// --multiple times as often (catching up). Given --token, alerts are
    /// matched as in `verify`: the storm should raise none.
    Burst {
        #[command(flatten)]
        run: RunArgs,
        #[arg(long, default_value_t = 10.0)]
        multiple: f64,
        #[arg(long, default_value_t = 30.0)]
        burst_at_s: f64,
        #[arg(long, default_value_t = 30.0)]
        burst_s: f64,
    },
    /// Weeks of ordinary life in every home, with a slow drift (more
    /// night-time bathroom visits, less activity, faster breathing in
    /// bed, ...) injected in --drifting of them, fast-forwarded through
    /// the rule engine in process (no server, no MQTT): which drifts its
    /// `trend` alerts catch, how soon, and how many false ones it raises.
    Drift(DriftArgs),
    /// A month of carers' visits to every home, each visit with its
    /// truth (on time, late, short, missed, read from outside the door,
    /// not checked out or in), fast-forwarded through the rule engine in
    /// process: whether every one is flagged as docs/visits.md says,
    /// with no false flag, and each provider's month counted from the
    /// alerts against the truth.
    Visits(VisitsArgs),
}

#[derive(Args, Clone)]
struct VisitsArgs {
    #[arg(long, default_value_t = 100)]
    homes: usize,
    /// The month to simulate, `YYYY-MM` (Asia/Shanghai); default
    /// 2026-11 unless --days is given.
    #[arg(long, conflicts_with = "days")]
    month: Option<String>,
    /// Days to simulate from Monday 2026-11-23, instead of a month.
    #[arg(long)]
    days: Option<u32>,
    /// Providers P1..PK, with a few carers each.
    #[arg(long, default_value_t = 3)]
    providers: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The rule file (default: the default rules).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Share of on-time visits, percent; the rest spread over late,
    /// short, missed, outside, no_check_out and no_check_in.
    #[arg(long, default_value_t = 70)]
    on_time_pct: u32,
    /// Ticks of the engine, seconds of simulated time apart.
    #[arg(long, default_value_t = 30)]
    tick_s: u32,
    /// The band every 10 s and the sleep sensor every 5 s, as the real
    /// devices, instead of every 60 s and 15 s (same status heartbeats,
    /// PIR and GPS; visits are judged the same).
    #[arg(long)]
    real_intervals: bool,
    /// Worker threads (default: the cores available).
    #[arg(long)]
    threads: Option<usize>,
    /// Write the score as JSON here.
    #[arg(long)]
    result: Option<PathBuf>,
    /// Write every alert, as it stands at the end, as JSON lines here.
    #[arg(long)]
    alerts: Option<PathBuf>,
    /// Write the ground truth (per provider and month, per visit) here.
    #[arg(long)]
    truth: Option<PathBuf>,
    #[arg(long)]
    no_progress: bool,
}

/// `YYYY-MM` as its first local day number and its length in days.
fn parse_month(s: &str) -> anyhow::Result<(i64, u32)> {
    let bad = || anyhow::anyhow!("--month {s:?} is not a month as YYYY-MM");
    let first =
        chrono::NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").map_err(|_| bad())?;
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .ok_or_else(bad)?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).ok_or_else(bad)?;
    Ok((
        (first - epoch).num_days(),
        u32::try_from((next - first).num_days())?,
    ))
}

fn visits_config(a: &VisitsArgs) -> anyhow::Result<visits::Config> {
    let rules = match &a.rules {
        Some(p) => Rules::load(p)?,
        None => Rules::defaults(),
    };
    let (first_day, days) = match (&a.month, a.days) {
        (_, Some(0)) => anyhow::bail!("--days must be at least 1"),
        (_, Some(d)) => (visits::plan::local_day(drift::plan::EPOCH), d),
        (Some(m), None) => parse_month(m)?,
        (None, None) => parse_month("2026-11")?,
    };
    if a.homes == 0 || a.providers == 0 {
        anyhow::bail!("--homes and --providers must be at least 1");
    }
    if a.on_time_pct > 100 {
        anyhow::bail!("--on-time-pct {} is more than 100", a.on_time_pct);
    }
    if a.tick_s == 0 {
        anyhow::bail!("--tick-s must be at least 1");
    }
    let mix = visits::plan::Mix::with_on_time(a.on_time_pct);
    let threads = a.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    Ok(visits::Config {
        homes: a.homes,
        first_day,
        days,
        providers: a.providers,
        seed: a.seed,
        rules,
        mix,
        intervals: if a.real_intervals {
            Intervals::real()
        } else {
            Intervals::coarse()
        },
        tick_ms: i64::from(a.tick_s) * 1000,
        threads: threads.max(1),
    })
}

/// `eldercare-sim visits`: runs, prints the summary, writes the files.
fn run_visits(a: &VisitsArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let cfg = visits_config(a)?;
    eprintln!(
        "{} homes x {} days from {}, {} providers, seed {}, on {} threads",
        cfg.homes,
        cfg.days,
        visits::plan::date(cfg.first_day),
        cfg.providers,
        cfg.seed,
        cfg.threads
    );
    let started = std::time::Instant::now();
    let bar = if a.no_progress {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(cfg.homes as u64)
    };
    let runs = visits::run(&cfg, &|n| bar.set_position(n as u64));
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let score = visits::measure::score(&runs, cfg.days);
    let readings: u64 = runs.iter().map(|r| r.readings).sum();
    let t = score.total();
    println!(
        "{} homes x {} days, {} visits, seed {}: {} readings in {:.0} s",
        cfg.homes, cfg.days, t.visits, cfg.seed, readings, elapsed
    );
    println!(
        "flags found {} / {} expected, false flags {}, visits exact {} / {}",
        t.found, t.expected, t.false_flags, t.exact, t.visits
    );
    score.print();
    if let Some(path) = &a.result {
        let mut v = score.to_json();
        v["mode"] = "visits".into();
        v["seed"] = cfg.seed.into();
        v["first_day"] = visits::plan::date(cfg.first_day).into();
        v["providers"] = cfg.providers.into();
        v["mix"] = cfg
            .mix
            .0
            .iter()
            .map(|(b, w)| (b.name().to_string(), serde_json::Value::from(*w)))
            .collect::<serde_json::Map<_, _>>()
            .into();
        v["readings"] = readings.into();
        v["elapsed_s"] = elapsed.into();
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
        eprintln!("result written to {}", path.display());
    }
    if let Some(path) = &a.alerts {
        let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
        for alert in runs.iter().flat_map(|r| &r.alerts) {
            serde_json::to_writer(&mut w, alert)?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
        eprintln!("alerts written to {}", path.display());
    }
    if let Some(path) = &a.truth {
        let ps = visits::plan::providers(cfg.providers, cfg.homes);
        let v = visits::measure::truth_json(&runs, &ps);
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
        eprintln!("ground truth written to {}", path.display());
    }
    Ok(())
}

#[derive(Args, Clone)]
struct DriftArgs {
    #[arg(long, default_value_t = 200)]
    homes: usize,
    /// Days of life per home.
    #[arg(long, default_value_t = 60)]
    days: u32,
    /// Homes with one drift each.
    #[arg(long, default_value_t = 40)]
    drifting: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The rule file (default: the default rules).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Drifts to inject, in turn over the drifting homes (default: all).
    #[arg(long, value_delimiter = ',')]
    drift_kinds: Vec<DriftKind>,
    /// Earliest onset day (after the engine's baseline period).
    #[arg(long, default_value_t = 28)]
    onset_from: u32,
    /// Latest onset day.
    #[arg(long, default_value_t = 45)]
    onset_to: u32,
    /// Ticks of the engine, seconds of simulated time apart.
    #[arg(long, default_value_t = 30)]
    tick_s: u32,
    /// The band every 60 s and the sleep sensor every 15 s instead of
    /// their own 10 s and 5 s: about half the readings, for a quicker run.
    #[arg(long)]
    coarse_intervals: bool,
    /// Worker threads (default: the cores available).
    #[arg(long)]
    threads: Option<usize>,
    /// Write the result as JSON here.
    #[arg(long)]
    result: Option<PathBuf>,
    /// Write the ground truth, each home's daily aggregates, as CSV here.
    #[arg(long)]
    truth: Option<PathBuf>,
    #[arg(long)]
    no_progress: bool,
}

fn drift_config(a: &DriftArgs) -> anyhow::Result<drift::Config> {
    let rules = match &a.rules {
        Some(p) => Rules::load(p)?,
        None => Rules::defaults(),
    };
    if a.days == 0 {
        anyhow::bail!("--days must be at least 1");
    }
    if a.drifting > a.homes {
        anyhow::bail!("--drifting {} is more than --homes {}", a.drifting, a.homes);
    }
    if a.onset_from > a.onset_to || a.onset_to >= a.days {
        anyhow::bail!(
            "--onset-from {} to --onset-to {} must be a range of days within --days {}",
            a.onset_from,
            a.onset_to,
            a.days
        );
    }
    if a.tick_s == 0 {
        anyhow::bail!("--tick-s must be at least 1");
    }
    let threads = a.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    Ok(drift::Config {
        homes: a.homes,
        days: a.days,
        drifting: a.drifting,
        seed: a.seed,
        rules,
        kinds: if a.drift_kinds.is_empty() {
            DriftKind::ALL.to_vec()
        } else {
            a.drift_kinds.clone()
        },
        onset: (a.onset_from, a.onset_to),
        intervals: if a.coarse_intervals {
            Intervals::coarse()
        } else {
            Intervals::real()
        },
        tick_ms: i64::from(a.tick_s) * 1000,
        threads: threads.max(1),
    })
}

/// `eldercare-sim drift`: runs, prints the summary, writes the files.
fn run_drift(a: &DriftArgs) -> anyhow::Result<()> {
    let cfg = drift_config(a)?;
    let inactivity_s = cfg.rules.global().inactivity.after_s;
    if inactivity_s < 3600 {
        eprintln!(
            "warning: inactivity.after_s is {inactivity_s} s: weeks of ordinary life (sitting \
             still, walks, a day out) need an hour and more; expect inactivity alerts"
        );
    }
    eprintln!(
        "{} homes x {} days, {} drifting ({}), onset days {}-{}, on {} threads",
        cfg.homes,
        cfg.days,
        cfg.drifting,
        cfg.kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(","),
        cfg.onset.0,
        cfg.onset.1,
        cfg.threads
    );
    let started = std::time::Instant::now();
    let bar = if a.no_progress {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(cfg.homes as u64)
    };
    let runs = drift::run(&cfg, &|n| bar.set_position(n as u64));
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let score = drift::measure::score(&runs, cfg.days);
    let readings: u64 = runs.iter().map(|r| r.readings).sum();
    println!(
        "{} homes x {} days ({} resident-days), {} drifting, seed {}: {} readings in {:.0} s",
        cfg.homes,
        cfg.days,
        score.resident_days(),
        cfg.drifting,
        cfg.seed,
        readings,
        elapsed
    );
    score.print();
    if let Some(path) = &a.result {
        let mut v = score.to_json();
        v["mode"] = "drift".into();
        v["seed"] = cfg.seed.into();
        v["drifting"] = cfg.drifting.into();
        v["onset_days"] = serde_json::json!([cfg.onset.0, cfg.onset.1]);
        v["readings"] = readings.into();
        v["elapsed_s"] = elapsed.into();
        v["intervals"] = serde_json::json!({
            "vitals_s": cfg.intervals.vitals_ms / 1000,
            "sleep_s": cfg.intervals.sleep_ms / 1000,
            "gps_outdoors_s": cfg.intervals.gps_ms / 1000,
            "status_s": cfg.intervals.status_ms / 1000,
            "tick_s": cfg.tick_ms / 1000,
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
        eprintln!("result written to {}", path.display());
    }
    if let Some(path) = &a.truth {
        std::fs::write(path, drift::measure::truth_csv(&runs))?;
        eprintln!("daily aggregates written to {}", path.display());
    }
    Ok(())
}

#[derive(Args, Clone)]
struct RunArgs {
    #[arg(long, default_value_t = 50)]
    homes: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The broker, host:port (e.g. 127.0.0.1:8883 with --tls-ca).
    #[arg(long, visible_alias = "mqtt", default_value = "127.0.0.1:1883")]
    mqtt_addr: String,
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    grpc_addr: String,
    /// Admin token: register the homes through RegistryService first.
    #[arg(long, env = "ELDERCARE_SIM_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Viewer or operator token, to subscribe to alerts (verify).
    #[arg(long, env = "ELDERCARE_SIM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The homes are registered already (or the broker is a peer that
    /// knows no registry): do not register them.
    #[arg(long)]
    no_register: bool,
    /// Run this long, then stop and report.
    #[arg(long, default_value_t = 60.0)]
    duration_s: f64,
    /// Scale the devices' intervals so the fleet sends this many
    /// messages/s over the run (default: realistic intervals, ~0.2–0.4
    /// msg/s a home). The run reports the rate offered and, if short,
    /// why.
    #[arg(long)]
    rate: Option<f64>,
    /// With --rate, no device sends more than this many messages/s
    /// (eldercare slows down, then cuts off, a session above its
    /// `mqtt.rate_msgs_per_s`, 50 by default); more homes are needed
    /// when the target asks for more.
    #[arg(long, default_value_t = 40.0)]
    device_max_rate: f64,
    /// QoS 1 messages a connection may have waiting for their PUBACK.
    #[arg(long, default_value_t = 100)]
    inflight: u16,
    /// The server's rule file, to know when each alert is due and to keep
    /// ordinary life within it (default: the default rules).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Emergencies per home per day, spread over the run.
    #[arg(long, default_value_t = 0.0)]
    inject_rate: f64,
    /// Which episodes --inject-rate draws from (default: all).
    #[arg(long, value_delimiter = ',')]
    inject_kinds: Vec<Inject>,
    /// Episodes at given times: lines of `at_s,home,episode`.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Write the result as JSON here.
    #[arg(long)]
    result: Option<PathBuf>,
    #[arg(long)]
    no_progress: bool,
    /// Each home publishes through a gateway (`gw-NNNNN`, registered as
    /// kind `gateway`) over one MQTT session, instead of one session a
    /// device.
    #[arg(long)]
    gateway: bool,
    /// Devices speak MQTT 5 instead of 3.1.1 (same topics, payloads,
    /// QoS and last will).
    #[arg(long)]
    mqtt5: bool,
    /// CA certificates (PEM) to trust: the devices connect over TLS, the
    /// host of --mqtt-addr as the server name.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Client certificate chain (PEM) the devices present, with --tls-key.
    #[arg(long, requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Run the fleet as this many processes of the simulator, the homes
    /// split between them, each with its open-file limit raised to the
    /// hard limit; their results are merged into one.
    #[arg(long, default_value_t = 1)]
    procs: usize,
    /// Local addresses the sessions connect from, in turn: a range
    /// (127.0.0.2-127.0.0.9) or a comma list. Each gives ~28,000
    /// ephemeral ports; a session then holds 3 descriptors instead of 1.
    #[arg(long)]
    source_addrs: Option<SourceAddrs>,
    /// Sessions connecting at once (in each process) while the fleet
    /// connects.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// Place every home in the timezone (whole hours from UTC: an
    /// `Etc/GMT` zone) where the run starts in this local hour, so a run
    /// is in the elders' day (e.g. 10 or 15) or night (e.g. 2), whatever
    /// the clock says; their routine, meals, walks and the registry's
    /// night window (21:00-07:00) follow local time. Default: every home
    /// in Asia/Shanghai.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..24))]
    local_hour: Option<u32>,
    /// The homes' UTC offset as the parent of --procs fixed it from
    /// --local-hour, so every child places them alike.
    #[arg(long, hide = true, allow_hyphen_values = true)]
    utc_offset_h: Option<i32>,
    /// verify: carers visit every home with no injected episode, one
    /// planned visit each (a window of 2 min opening from 3 min in,
    /// staggered over the homes, a visit of 2 min), each on time, late,
    /// short, missed, read from outside the door, not checked out or not
    /// checked in as drawn from --seed; the plans are registered through
    /// RegistryService, the carers' tag reads and footprints published
    /// by the homes, and every visit's alerts matched to what its carer
    /// did. Times follow the rule file's [visits] section (--rules
    /// deploy/verify-rules.toml); one process only.
    #[arg(long)]
    carers: bool,
    /// With --carers, the share of visits on time, percent; the rest
    /// spread as in `visits`.
    #[arg(long, default_value_t = 70, requires = "carers")]
    carers_on_time_pct: u32,
    /// The part of the homes this process drives, as a child of --procs.
    #[arg(long, hide = true)]
    part: Option<Part>,
}

/// The homes' UTC offset: as fixed by the parent, or where the run
/// starts in --local-hour, or Shanghai's.
fn utc_offset_h(a: &RunArgs) -> i32 {
    match (a.utc_offset_h, a.local_hour) {
        (Some(off), _) => off,
        (None, Some(hour)) => eldercare_sim::utc_offset_for_local_hour(drive::now_ms(), hour),
        (None, None) => eldercare_sim::SHANGHAI_UTC_OFFSET_H,
    }
}

fn config(a: RunArgs, mode: Mode) -> anyhow::Result<(Config, Pacing)> {
    let rules = match &a.rules {
        Some(p) => Rules::load(p)?,
        None => Rules::defaults(),
    };
    let rules = (**rules.global()).clone();
    let duration = Duration::try_from_secs_f64(a.duration_s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| anyhow::anyhow!("--duration-s must be a positive number"))?;
    if a.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        anyhow::bail!("--rate must be a positive number");
    }
    if a.device_max_rate.is_nan() || a.device_max_rate <= 0.0 {
        anyhow::bail!("--device-max-rate must be a positive number");
    }
    if a.inflight == 0 {
        anyhow::bail!("--inflight must be at least 1");
    }
    let pacing = Pacing {
        device_max_per_s: a.device_max_rate,
        inflight: a.inflight,
    };
    let kinds = if a.inject_kinds.is_empty() {
        Inject::ALL.to_vec()
    } else {
        a.inject_kinds.clone()
    };
    let mut injections =
        drive::injections_by_rate(a.homes, a.inject_rate, &kinds, duration, &rules, a.seed);
    if let Some(p) = &a.scenario {
        injections.extend(drive::read_scenario(&std::fs::read_to_string(p)?, a.homes)?);
    }
    // A child of --procs drives its part of the homes, and its share of
    // the episodes and of the rate.
    let mine = a.part.map_or(1..a.homes + 1, |p| p.homes(a.homes));
    injections.retain(|(_, home, _)| mine.contains(home));
    let rate = a
        .rate
        .map(|r| r * mine.len() as f64 / a.homes.max(1) as f64);
    if a.carers && mode != Mode::Verify {
        anyhow::bail!("--carers is for verify");
    }
    if a.carers && a.procs > 1 {
        anyhow::bail!("--carers runs in one process: leave out --procs");
    }
    if a.carers_on_time_pct > 100 {
        anyhow::bail!(
            "--carers-on-time-pct {} is more than 100",
            a.carers_on_time_pct
        );
    }
    if mode == Mode::Verify && a.token.is_none() {
        anyhow::bail!("verify needs --token (or ELDERCARE_SIM_TOKEN): a viewer or operator token");
    }
    let mut hs = homes(a.homes, a.seed);
    hs.retain(|h| mine.contains(&h.index));
    let offset = utc_offset_h(&a);
    for h in &mut hs {
        h.utc_offset_h = offset;
    }
    if a.gateway {
        eldercare_sim::with_gateways(&mut hs, a.seed);
    }
    let cfg = Config {
        mode,
        homes: hs,
        seed: a.seed,
        mqtt_addr: a.mqtt_addr,
        grpc_addr: a.grpc_addr,
        admin_token: a.admin_token,
        token: a.token,
        register: !a.no_register,
        duration,
        rate,
        rules,
        injections,
        result: a.result,
        progress: !a.no_progress,
        carers: a.carers.then(|| visits::live::Options {
            mix: visits::plan::Mix::with_on_time(a.carers_on_time_pct),
            ..visits::live::Options::default()
        }),
    };
    Ok((cfg, pacing))
}

/// How the devices reach the broker.
fn link(a: &RunArgs) -> anyhow::Result<Link> {
    if a.connect_concurrency == 0 {
        anyhow::bail!("--connect-concurrency must be at least 1");
    }
    let tls = match &a.tls_ca {
        Some(ca) => Some(net::tls_client_config(
            ca,
            a.tls_cert.as_deref().zip(a.tls_key.as_deref()),
        )?),
        None => None,
    };
    Ok(Link {
        protocol: if a.mqtt5 {
            Protocol::V5
        } else {
            Protocol::V311
        },
        tls,
        source_addrs: a.source_addrs.clone(),
        connect_concurrency: a.connect_concurrency,
    })
}

/// MQTT sessions of `homes` homes: one per device, or one per home
/// through its gateway.
fn sessions(homes: usize, gateway: bool) -> usize {
    if gateway {
        homes
    } else {
        homes * eldercare_sim::life::DEVICES_PER_HOME
    }
}

/// The parent of --procs: checks the arguments once, then runs the
/// children and reports their merged result.
async fn run_procs(a: RunArgs, mode: Mode) -> anyhow::Result<()> {
    if a.procs > a.homes {
        anyhow::bail!("--procs {} is more than --homes {}", a.procs, a.homes);
    }
    link(&a)?;
    let (cfg, _) = config(a.clone(), mode)?;
    let per_proc = sessions(a.homes.div_ceil(a.procs), a.gateway);
    let need = procs::descriptors_needed(per_proc, a.source_addrs.is_some());
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get()
        && need > hard
    {
        eprintln!(
            "warning: up to {per_proc} sessions a process need ~{need} descriptors, above the hard limit of {hard}: use more --procs"
        );
    }
    eprintln!(
        "{} homes, {} episodes to inject, in {} processes",
        cfg.homes.len(),
        cfg.injections.len(),
        a.procs
    );
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if a.local_hour.is_some() && a.utc_offset_h.is_none() {
        // Every child places the homes alike, even if the hour turns
        // while they start.
        let off = cfg
            .homes
            .first()
            .map_or(utc_offset_h(&a), |h| h.utc_offset_h);
        args.push(format!("--utc-offset-h={off}").into());
    }
    let mut result = procs::run_children(&args, a.procs, !a.no_progress).await?;
    drive::strip_buckets(&mut result);
    drive::print_summary(&result);
    if let Some(path) = &a.result {
        std::fs::write(path, serde_json::to_string_pretty(&result)?)?;
        eprintln!("result written to {}", path.display());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let (args, mode) = match Cli::parse().cmd {
        Cmd::Registry {
            homes: n,
            seed,
            out,
            heartbeat_s,
            gateway,
        } => {
            let mut hs = homes(n, seed);
            if gateway {
                eldercare_sim::with_gateways(&mut hs, seed);
            }
            for h in &mut hs {
                h.heartbeat_s = heartbeat_s;
            }
            let (e, d) = registry_csv(&hs);
            std::fs::create_dir_all(&out)?;
            std::fs::write(out.join("elders.csv"), e)?;
            std::fs::write(out.join("devices.csv"), d)?;
            println!(
                "wrote {0}/elders.csv and {0}/devices.csv for {n} homes",
                out.display()
            );
            return Ok(());
        }
        Cmd::Drift(a) => return run_drift(&a),
        Cmd::Visits(a) => return run_visits(&a),
        Cmd::Run(a) => (a, Mode::Run),
        Cmd::Verify(a) => (a, Mode::Verify),
        Cmd::Burst {
            run,
            multiple,
            burst_at_s,
            burst_s,
        } => (
            run,
            Mode::Burst {
                multiple,
                at_s: burst_at_s,
                len_s: burst_s,
            },
        ),
    };
    if args.procs == 0 {
        anyhow::bail!("--procs must be at least 1");
    }
    if args.procs > 1 && args.part.is_none() {
        return run_procs(args, mode).await;
    }
    let child = args.part.is_some();
    match procs::raise_descriptor_limit() {
        Ok((soft, _)) => {
            let need = procs::descriptors_needed(
                sessions(
                    args.part.map_or(args.homes, |p| p.homes(args.homes).len()),
                    args.gateway,
                ),
                args.source_addrs.is_some(),
            );
            if need > soft {
                eprintln!(
                    "warning: ~{need} descriptors needed, above the open-file limit of {soft}: use --procs"
                );
            }
        }
        Err(e) => eprintln!("warning: could not raise the open-file limit: {e}"),
    }
    let link = link(&args)?;
    let (mut cfg, pacing) = config(args, mode)?;
    if child {
        // The parent shows the progress and writes the merged result.
        cfg.progress = false;
        cfg.result = None;
    }
    eprintln!(
        "{} homes in {}, {} episodes to inject",
        cfg.homes.len(),
        eldercare_sim::timezone_name(
            cfg.homes
                .first()
                .map_or(eldercare_sim::SHANGHAI_UTC_OFFSET_H, |h| h.utc_offset_h)
        ),
        cfg.injections.len()
    );
    let report = Report {
        child,
        stop: Some(if child {
            procs::stdin_closed()
        } else {
            procs::signals()
        }),
    };
    drive::drive_over(cfg, pacing, link, report).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(extra: &[&str]) -> Result<RunArgs, clap::Error> {
        let argv = ["eldercare-sim", "run"].iter().chain(extra);
        match Cli::try_parse_from(argv)?.cmd {
            Cmd::Run(a) => Ok(a),
            _ => unreachable!("a run"),
        }
    }

    #[test]
    fn the_fleet_flags_parse() {
        let a = run_args(&[
            "--homes",
            "2112",
            "--mqtt",
            "127.0.0.1:8883",
            "--mqtt5",
            "--tls-ca",
            "ca.pem",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--procs",
            "4",
            "--source-addrs",
            "127.0.0.2-127.0.0.9",
            "--connect-concurrency",
            "256",
        ])
        .unwrap();
        assert_eq!(a.mqtt_addr, "127.0.0.1:8883");
        assert!(a.mqtt5);
        assert_eq!(a.tls_ca.as_deref(), Some(std::path::Path::new("ca.pem")));
        assert_eq!(a.procs, 4);
        assert_eq!(a.source_addrs.as_ref().map(SourceAddrs::len), Some(8));
        assert_eq!(a.connect_concurrency, 256);
        assert_eq!(a.part, None);
        let plain = run_args(&[]).unwrap();
        assert!(!plain.mqtt5 && plain.tls_ca.is_none() && plain.source_addrs.is_none());
        assert_eq!(plain.procs, 1);
    }

    #[test]
    fn bad_fleet_flags_are_refused() {
        for bad in [
            &["--tls-cert", "c.pem", "--tls-key", "k.pem"][..],
            &["--tls-ca", "ca.pem", "--tls-cert", "c.pem"],
            &["--tls-ca", "ca.pem", "--tls-key", "k.pem"],
            &["--source-addrs", "127.0.0.9-127.0.0.2"],
            &["--part", "2/2"],
        ] {
            assert!(run_args(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_part_drives_its_homes_its_episodes_and_its_share_of_the_rate() {
        let whole = run_args(&["--homes", "10", "--rate", "100", "--no-register"]).unwrap();
        let scenario = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(scenario.path(), "30,2,sos\n30,9,fall\n").unwrap();
        let mut a = whole.clone();
        a.scenario = Some(scenario.path().to_path_buf());
        a.part = Some(Part { index: 1, count: 3 });
        let (cfg, _) = config(a, Mode::Run).unwrap();
        let idx: Vec<usize> = cfg.homes.iter().map(|h| h.index).collect();
        assert_eq!(idx, [5, 6, 7]);
        assert_eq!(cfg.rate, Some(30.0));
        assert!(cfg.injections.is_empty(), "homes 2 and 9 are other parts'");
        let mut last = whole.clone();
        last.scenario = Some(scenario.path().to_path_buf());
        last.part = Some(Part { index: 2, count: 3 });
        let (cfg, _) = config(last, Mode::Run).unwrap();
        assert_eq!(cfg.homes.first().map(|h| h.index), Some(8));
        assert_eq!(cfg.injections.len(), 1);
        assert_eq!(cfg.injections[0].1, 9);
        // The same homes as a single process would have: same ids, secrets.
        let single = homes(10, 1);
        assert_eq!(cfg.homes[0].devices[0].secret, single[7].devices[0].secret);
    }

    #[test]
    fn the_homes_local_hour() {
        let at = |a: RunArgs| {
            let (cfg, _) = config(a, Mode::Run).unwrap();
            let off = cfg.homes[0].utc_offset_h;
            assert!(cfg.homes.iter().all(|h| h.utc_offset_h == off));
            off
        };
        assert_eq!(at(run_args(&["--homes", "3"]).unwrap()), 8, "Shanghai");
        for hour in [2, 15] {
            let off = at(run_args(&["--homes", "3", "--local-hour", &hour.to_string()]).unwrap());
            let local = (drive::now_ms() / 3_600_000 + i64::from(off)).rem_euclid(24);
            // (Unless the hour turned in between.)
            assert!(local == hour || local == (hour + 1) % 24, "{hour}: {local}");
        }
        // A child of --procs takes the offset its parent fixed.
        let child = run_args(&["--local-hour", "15", "--utc-offset-h=-5"]).unwrap();
        assert_eq!(at(child), -5);
        assert!(run_args(&["--local-hour", "24"]).is_err());
    }

    fn drift_args(extra: &[&str]) -> Result<DriftArgs, clap::Error> {
        let argv = ["eldercare-sim", "drift"].iter().chain(extra);
        match Cli::try_parse_from(argv)?.cmd {
            Cmd::Drift(a) => Ok(a),
            _ => unreachable!("a drift run"),
        }
    }

    #[test]
    fn the_drift_flags_parse_and_are_checked() {
        let a = drift_args(&[
            "--homes",
            "20",
            "--days",
            "40",
            "--drifting",
            "5",
            "--drift-kinds",
            "nocturia,breathing-up",
            "--onset-from",
            "20",
            "--onset-to",
            "30",
            "--coarse-intervals",
        ])
        .unwrap();
        let cfg = drift_config(&a).unwrap();
        assert_eq!((cfg.homes, cfg.days, cfg.drifting), (20, 40, 5));
        assert_eq!(cfg.kinds, [DriftKind::Nocturia, DriftKind::BreathingUp]);
        assert_eq!(cfg.onset, (20, 30));
        assert_eq!(cfg.intervals, Intervals::coarse());
        let d = drift_config(&drift_args(&[]).unwrap()).unwrap();
        assert_eq!(
            (d.homes, d.days, d.drifting, d.onset),
            (200, 60, 40, (28, 45))
        );
        assert_eq!(d.kinds, DriftKind::ALL);
        assert_eq!(d.intervals, Intervals::real());
        for bad in [
            &["--drifting", "300"][..],
            &["--days", "30"],
            &["--onset-from", "40", "--onset-to", "30"],
            &["--tick-s", "0"],
        ] {
            assert!(drift_config(&drift_args(bad).unwrap()).is_err(), "{bad:?}");
        }
    }

    fn visits_args(extra: &[&str]) -> Result<VisitsArgs, clap::Error> {
        let argv = ["eldercare-sim", "visits"].iter().chain(extra);
        match Cli::try_parse_from(argv)?.cmd {
            Cmd::Visits(a) => Ok(a),
            _ => unreachable!("a visits run"),
        }
    }

    #[test]
    fn the_visits_flags_parse_and_are_checked() {
        let c =
            visits_config(&visits_args(&["--month", "2026-11", "--homes", "5"]).unwrap()).unwrap();
        assert_eq!(visits::plan::date(c.first_day), "2026-11-01");
        assert_eq!((c.days, c.homes, c.providers), (30, 5, 3));
        let c = visits_config(&visits_args(&["--month", "2027-02"]).unwrap()).unwrap();
        assert_eq!(c.days, 28);
        let c =
            visits_config(&visits_args(&["--days", "7", "--on-time-pct", "50"]).unwrap()).unwrap();
        assert_eq!(visits::plan::date(c.first_day), "2026-11-23");
        assert_eq!(c.mix.0[0].1, 5000);
        let rest: u32 = c.mix.0.iter().skip(1).map(|(_, w)| w).sum();
        assert!((4900..=5000).contains(&rest), "{rest}");
        assert!(visits_args(&["--days", "7", "--month", "2026-11"]).is_err());
        for bad in [
            &["--month", "2026-13"][..],
            &["--days", "0"],
            &["--on-time-pct", "101"],
        ] {
            assert!(
                visits_config(&visits_args(bad).unwrap()).is_err(),
                "{bad:?}"
            );
        }
    }
}
