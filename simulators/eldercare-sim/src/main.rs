//! `eldercare-sim`: drive an eldercare server with simulated homes.
use clap::{Parser, Subcommand};
use eldercare_sim::{Inject, homes, inject, registry_csv, run};
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
    Registry {
        #[arg(long, default_value_t = 50)]
        homes: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = ".")]
        out: PathBuf,
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
        /// Inject this emergency into `--home`, then keep running.
        #[arg(long)]
        inject: Option<Inject>,
        /// Home number (1-based) for `--inject`.
        #[arg(long, default_value_t = 1)]
        home: usize,
    },
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
        } => {
            let (e, d) = registry_csv(&homes(n, seed));
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
        } => {
            let hs = homes(n, seed);
            let (tx, rx) = tokio::sync::watch::channel(false);
            if let Some(what) = what {
                let h = hs
                    .get(home.saturating_sub(1))
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("--home {home} is not 1..={n}"))?;
                let addr = mqtt_addr.clone();
                tokio::spawn(async move {
                    match inject(&addr, &h, what).await {
                        Ok(()) => eprintln!("injected {what:?} into home {}", h.index),
                        Err(e) => eprintln!("injection failed: {e}"),
                    }
                });
            }
            let driver = tokio::spawn({
                let injected: Vec<_> = what.map(|w| (home, w)).into_iter().collect();
                let hs = eldercare_sim::without_injected(&hs, &injected);
                async move { run(&mqtt_addr, &hs, Duration::from_secs_f64(interval_s), rx).await }
            });
            tokio::signal::ctrl_c().await?;
            let _ = tx.send(true);
            driver.await??;
        }
    }
    Ok(())
}
