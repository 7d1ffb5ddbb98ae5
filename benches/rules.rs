//! The rule engine under a city's load: 100,000 elders, six devices each,
//! realistic mixed readings through the full default rule set, with the
//! engine's timers ticking every simulated second.
//!
//! Targets: >= 1,000,000 readings/s on one core; engine state <= 2 KiB
//! per elder. The peer measured in the same run is the least any engine
//! must do per reading (find the device's slot in a hash map), so the
//! ratio survives a noisy machine.
//!
//!     cargo bench -p eldercare-benches --bench rules
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eldercare_benches::{START_MS, city, rng, round, rss_bytes};
use eldercare_model::Reading;
use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

const ELDERS: usize = 100_000;
/// Event time one round of readings (one per elder) spans: 100,000 elders
/// produce about 25,000 readings per second in all.
const ROUND_MS: i64 = 4_000;

fn engine(c: &mut Criterion) {
    // Memory first, on a fresh process heap. The readings are made
    // before the first measurement so only the engine's state counts.
    let mut g = rng();
    let mut now = START_MS;
    let warm: Vec<Vec<Reading>> = (0..3)
        .map(|i| round(ELDERS, now + i * ROUND_MS, ROUND_MS, &mut g))
        .collect();
    let mut out = Vec::with_capacity(1024);
    let before = rss_bytes().unwrap_or(0);
    let mut e = city(ELDERS);
    for batch in &warm {
        for r in batch {
            e.on_reading_into(r, r.ts_ms, &mut out);
        }
        now += ROUND_MS;
        e.tick_into(now, &mut out);
        out.clear();
    }
    let after = rss_bytes().unwrap_or(0);
    drop(warm);
    println!(
        "engine state: {} elders, {} devices, RSS +{:.1} MiB = {:.0} bytes per elder (registry included)",
        e.elders(),
        e.devices(),
        (after - before) as f64 / 1_048_576.0,
        (after - before) as f64 / ELDERS as f64
    );

    let mut group = c.benchmark_group("rules");
    group.throughput(Throughput::Elements(ELDERS as u64));
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("100k_elders_mixed_readings", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batch = round(ELDERS, now, ROUND_MS, &mut g);
                let start = Instant::now();
                for (k, r) in batch.iter().enumerate() {
                    e.on_reading_into(r, r.ts_ms, &mut out);
                    // Timers every simulated second.
                    if k % (ELDERS / 4) == 0 {
                        e.tick_into(r.ts_ms, &mut out);
                    }
                    out.clear();
                }
                total += start.elapsed();
                now += ROUND_MS;
            }
            total
        })
    });

    // The peer: one hash lookup and a write per reading.
    let mut slots: HashMap<String, i64> = HashMap::new();
    for r in round(ELDERS, START_MS, ROUND_MS, &mut rng()) {
        for p in ["bed", "band", "pirl", "pirb", "gps", "btn"] {
            let id = format!("{p}{}", &r.device_id[r.device_id.find('-').unwrap_or(0)..]);
            slots.insert(id, 0);
        }
    }
    group.bench_function("peer_device_lookup_only", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batch: Vec<Reading> = round(ELDERS, now, ROUND_MS, &mut g);
                let start = Instant::now();
                for r in &batch {
                    if let Some(s) = slots.get_mut(r.device_id.as_str()) {
                        *s = black_box(r.ts_ms);
                    }
                }
                total += start.elapsed();
                now += ROUND_MS;
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
