//! `eldercare-sim`: drive an eldercare server with simulated homes.
use clap::{Parser, Subcommand};
use eldercare_sim::{Inject, Night, homes, inject, registry_csv, run};
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
    /// with `eldercare import`.
    ///
    /// Some episodes of `run --inject` raise their alert only when the
    /// registry allows it: out-of-bed and bathroom-fall need the home in
    /// --night-now-homes, inactivity in --day-now-homes, wandering in
    /// --dementia-homes (and --night-now-homes for a night-time exit).
    /// Night windows are computed from the current Asia/Shanghai time, so
    /// write the registry shortly before the rehearsal.
    Registry {
        #[arg(long, default_value_t = 50)]
        homes: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Homes (1-based, comma-separated) whose night window began an
        /// hour ago and lasts six more hours, to rehearse night-only rules now.
        #[arg(long, value_delimiter = ',', value_name = "HOMES")]
        night_now_homes: Vec<usize>,
        /// Homes whose night window starts in four hours, so it is daytime
        /// now: to rehearse inactivity at any hour.
        #[arg(long, value_delimiter = ',', value_name = "HOMES")]
        day_now_homes: Vec<usize>,
        /// Homes whose elder is flagged `dementia`.
        #[arg(long, value_delimiter = ',', value_name = "HOMES")]
        dementia_homes: Vec<usize>,
        /// Heartbeat interval of every device, in seconds: silent this long
        /// (plus the rules' grace) counts as offline.
        #[arg(long, default_value_t = eldercare_sim::DEFAULT_HEARTBEAT_S)]
        heartbeat_s: u32,
    },
    /// Connect every device and publish readings until Ctrl-C.
    Run {
        #[arg(long, default_value_t = 50)]
        homes: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = "127.0.0.1:1883")]
        mqtt_addr: String,
        /// Seconds between readings of one device.
        #[arg(long, default_value_t = 5.0)]
        interval_s: f64,
        /// Inject this episode into `--home`, then keep running. The
        /// devices it takes over keep being heard afterwards.
        #[arg(long)]
        inject: Option<Inject>,
        /// Home number (1-based) for `--inject`.
        #[arg(long, default_value_t = 1)]
        home: usize,
        /// Seconds of ordinary readings before the episode starts.
        #[arg(long, default_value_t = 10.0)]
        lead_s: f64,
    },
}

/// Checks 1-based home numbers against the fleet size.
fn check_homes(list: &[usize], n: usize, flag: &str) -> anyhow::Result<()> {
    match list.iter().find(|&&i| i == 0 || i > n) {
        Some(i) => anyhow::bail!("--{flag}: home {i} is not 1..={n}"),
        None => Ok(()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Registry {
            homes: n,
            seed,
            out,
            night_now_homes,
            day_now_homes,
            dementia_homes,
            heartbeat_s,
        } => {
            check_homes(&night_now_homes, n, "night-now-homes")?;
            check_homes(&day_now_homes, n, "day-now-homes")?;
            check_homes(&dementia_homes, n, "dementia-homes")?;
            if let Some(i) = night_now_homes.iter().find(|i| day_now_homes.contains(i)) {
                anyhow::bail!("home {i} is in both --night-now-homes and --day-now-homes");
            }
            let mut hs = homes(n, seed);
            for h in &mut hs {
                h.heartbeat_s = heartbeat_s;
                if night_now_homes.contains(&h.index) {
                    h.night = Night::covering_now();
                }
                if day_now_homes.contains(&h.index) {
                    h.night = Night::not_covering_now();
                }
                if dementia_homes.contains(&h.index) {
                    h.flags.push("dementia");
                }
            }
            let (e, d) = registry_csv(&hs);
            std::fs::create_dir_all(&out)?;
            std::fs::write(out.join("elders.csv"), e)?;
            std::fs::write(out.join("devices.csv"), d)?;
            println!(
                "wrote {0}/elders.csv and {0}/devices.csv for {n} homes",
                out.display()
            );
        }
        Cmd::Run {
            homes: n,
            seed,
            mqtt_addr,
            interval_s,
            inject: what,
            home,
            lead_s,
        } => {
            let interval = Duration::try_from_secs_f64(interval_s)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| anyhow::anyhow!("--interval-s must be a positive number"))?;
            let lead = Duration::try_from_secs_f64(lead_s)
                .map_err(|_| anyhow::anyhow!("--lead-s must be a number >= 0"))?;
            let hs = homes(n, seed);
            let (tx, rx) = tokio::sync::watch::channel(false);
            let mut injection = None;
            if let Some(what) = what {
                let h = hs
                    .get(home.saturating_sub(1))
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("--home {home} is not 1..={n}"))?;
                eprintln!(
                    "injecting {what} into home {} in {lead_s} s; expect {}",
                    h.index,
                    what.expected()
                );
                let (addr, rx) = (mqtt_addr.clone(), rx.clone());
                injection = Some(tokio::spawn(async move {
                    if let Err(e) = inject(&addr, &h, what, lead, interval, rx).await {
                        eprintln!("injection failed: {e:#}");
                    }
                }));
            }
            let mut driver = tokio::spawn({
                let injected: Vec<_> = what.map(|w| (home, w)).into_iter().collect();
                let hs = eldercare_sim::without_injected(&hs, &injected);
                async move { run(&mqtt_addr, &hs, interval, rx).await }
            });
            // The driver ends early only on a failure (a refused login):
            // report it rather than wait for a Ctrl-C.
            let early = tokio::select! {
                r = tokio::signal::ctrl_c() => { r?; None }
                r = &mut driver => Some(r),
            };
            let _ = tx.send(true);
            if let Some(i) = injection {
                let _ = i.await;
            }
            match early {
                Some(r) => r??,
                None => driver.await??,
            }
        }
    }
    Ok(())
}
