//! `ptychostitch validate` and `ptychostitch bench`: the reference ("old") against the fast path
//! ("new") on the bench-grid scan, and the fast path's throughput.

use crate::device::{self, Device};
use crate::progress;
use anyhow::{Result, bail};
use ptychostitch::synthetic::{BENCH_CROP, BENCH_PATCH, bench_grid};
use ptychostitch::{Operation, Plan};
use serde_json::json;
use std::time::Instant;

/// Arguments of `validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Scan sizes (number of patches) of the bench-grid scan.
    #[arg(long, value_delimiter = ',', default_value = "100,500,1000,2000", value_parser = crate::args::count, allow_hyphen_values = true)]
    pub sizes: Vec<usize>,
    /// Worker threads for the fast path (0 = all cores).
    #[arg(long, default_value_t = 0, value_parser = crate::args::threads, allow_hyphen_values = true)]
    pub threads: usize,
    /// Where the fast ("new") path runs: the CPU, or an NVIDIA GPU (against the CPU reference).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Scan sizes (number of patches), up to 100,000 or more if memory allows
    /// (each patch of the bench-grid scan is 64×64 complex64, 32 KiB).
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000", value_parser = crate::args::count, allow_hyphen_values = true)]
    pub sizes: Vec<usize>,
    /// Thread counts to measure (0 = all cores).
    #[arg(long, value_delimiter = ',', default_value = "0", value_parser = crate::args::threads, allow_hyphen_values = true)]
    pub threads: Vec<usize>,
    /// Timed runs per size (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 7, value_parser = crate::args::count, allow_hyphen_values = true)]
    pub runs: usize,
    /// Where to run: the CPU, or an NVIDIA GPU (reports device time with the stack resident
    /// and host-to-host time with the copies; cached plan, weights included).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn seconds(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn validate(args: ValidateArgs) -> Result<()> {
    let bar = progress::bar(args.sizes.len() as u64, "validate");
    let mut rows = Vec::new();
    // The reference's speed, in canvas-pixel updates a second: a cautious guess until the first
    // size has measured it.
    let mut rate = 2e8_f64;
    for &n in &args.sizes {
        bar.set_message(format!("n={n}"));
        let (patches, offsets) = bench_grid(n, 1)?;
        // The reference translates every patch over the whole canvas: O(n·S²), which grows fast.
        let side = Plan::new(offsets.view(), BENCH_PATCH, BENCH_CROP)?
            .canvas_shape()
            .0 as f64;
        let updates = n as f64 * side * side;
        let estimate = updates / rate;
        if estimate > 10.0 {
            let text = format!(
                "note: n={n}: the reference (O(n·S²), one thread) will take about {} on this machine",
                human_seconds(estimate)
            );
            bar.suspend(|| eprintln!("{text}"));
        }
        let mut old = None;
        let old_s = seconds(|| {
            old = Some(ptychostitch::reassemble_position_reference(
                patches.view(),
                offsets.view(),
                BENCH_CROP,
            )?);
            Ok(())
        })?;
        rate = updates / old_s.max(1e-9);
        let mut new = None;
        let new_times = (0..5)
            .map(|_| {
                seconds(|| {
                    let plan = Plan::new(offsets.view(), BENCH_PATCH, BENCH_CROP)?
                        .with_threads(args.threads);
                    new = Some(device::stitch(
                        &plan,
                        Operation::ReassemblePosition,
                        patches.view(),
                        args.device,
                    )?);
                    Ok(())
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let new_s = median(new_times);
        let (old, new) = (old.unwrap_or_default(), new.unwrap_or_default());
        let max_diff = old
            .iter()
            .zip(&new)
            .map(|(a, b)| (a - b).norm())
            .fold(0.0_f32, |m, d| if d.is_nan() || d > m { d } else { m });
        let identical = old.len() == new.len()
            && old
                .iter()
                .zip(&new)
                .all(|(a, b)| a.re.to_bits() == b.re.to_bits() && a.im.to_bits() == b.im.to_bits());
        rows.push((n, old_s, new_s, max_diff, identical));
        bar.inc(1);
    }
    bar.finish_and_clear();
    if args.json {
        let items: Vec<_> = rows
            .iter()
            .map(|&(n, old, new, diff, identical)| {
                json!({"size": n, "old_s": old, "new_s": new, "speedup": old / new, "max_abs_diff": diff, "bit_identical": identical})
            })
            .collect();
        out!("{}", serde_json::to_string_pretty(&items)?)?;
    } else {
        out!(
            "{:>8} {:>10} {:>10} {:>10} {:>11}",
            "Size",
            "Old (s)",
            "New (s)",
            "Speedup",
            "Max |diff|"
        )?;
        for &(n, old, new, diff, _) in &rows {
            out!(
                "{n:>8} {old:>10.3} {new:>10.5} {:>9.0}x {diff:>11.2e}",
                old / new
            )?;
        }
    }
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| !r.4)
        .map(|r| r.0.to_string())
        .collect();
    if !bad.is_empty() {
        bail!(
            "fast path differs from the reference at sizes {}",
            bad.join(", ")
        );
    }
    Ok(())
}

pub fn bench(args: BenchArgs) -> Result<()> {
    if args.device == Device::Cuda {
        return bench_gpu(args);
    }
    let total = (args.sizes.len() * args.threads.len() * (args.runs + 1)) as u64;
    let bar = progress::bar(total, "bench");
    let mut rows = Vec::new();
    for &n in &args.sizes {
        bar.set_message(format!("n={n}"));
        let (patches, offsets) = bench_grid(n, 1)?;
        for &threads in &args.threads {
            let mut times: Vec<f64> =
                ptychostitch::memory::try_with_capacity(args.runs + 1, || {
                    format!("the times of {} runs", args.runs)
                })?;
            let mut side = 0;
            let mut kept = 0;
            for run in 0..=args.runs {
                let t = seconds(|| {
                    let plan =
                        Plan::new(offsets.view(), BENCH_PATCH, BENCH_CROP)?.with_threads(threads);
                    std::hint::black_box(plan.reassemble_position(patches.view())?);
                    side = plan.canvas_shape().0;
                    kept = plan.geometry().kept();
                    Ok(())
                })?;
                if run > 0 {
                    times.push(t);
                }
                bar.inc(1);
            }
            let t = median(times);
            let pixels = (n * (kept + 1) * (kept + 1)) as f64;
            let workers = if threads == 0 {
                std::thread::available_parallelism().map_or(1, |p| p.get())
            } else {
                threads
            };
            rows.push((n, workers, side, t, n as f64 / t, pixels / t));
        }
    }
    bar.finish_and_clear();
    if args.json {
        let items: Vec<_> = rows
            .iter()
            .map(|&(n, threads, side, t, pps, ups)| {
                json!({"size": n, "threads": threads, "canvas": side, "median_s": t, "patches_per_s": pps, "pixel_updates_per_s": ups})
            })
            .collect();
        out!("{}", serde_json::to_string_pretty(&items)?)?;
    } else {
        out!(
            "{:>8} {:>8} {:>7} {:>12} {:>12} {:>16}",
            "Size",
            "Threads",
            "Canvas",
            "Median (ms)",
            "Patches/s",
            "Pixel updates/s"
        )?;
        for &(n, threads, side, t, pps, ups) in &rows {
            out!(
                "{n:>8} {threads:>8} {side:>7} {:>12.3} {pps:>12.3e} {ups:>16.3e}",
                t * 1e3
            )?;
        }
    }
    Ok(())
}

/// `bench --device cuda`: per size, the medians of a run on a stack already on the GPU (launch
/// and synchronisation, timed on the host: the kernel plus a launch's host overhead, not a
/// device-only time; scripts/bench_gpu.py's graph replay gives that) and host to host.
fn bench_gpu(args: BenchArgs) -> Result<()> {
    let mut rows = Vec::new();
    for &n in &args.sizes {
        let (patches, offsets) = bench_grid(n, 1)?;
        let plan = Plan::new(offsets.view(), BENCH_PATCH, BENCH_CROP)?;
        let (end_to_end, resident) = device::gpu_times(
            &plan,
            Operation::ReassemblePosition,
            patches.view(),
            args.runs,
        )?;
        rows.push((n, plan.canvas_shape().0, resident, end_to_end));
    }
    if args.json {
        let items: Vec<_> = rows
            .iter()
            .map(|&(n, side, resident, e2e)| {
                json!({"size": n, "device": "cuda", "canvas": side, "resident_launch_sync_median_s": resident, "host_to_host_median_s": e2e, "patches_per_s": n as f64 / resident})
            })
            .collect();
        out!("{}", serde_json::to_string_pretty(&items)?)?;
    } else {
        out!(
            "{:>8} {:>7} {:>14} {:>16} {:>12}",
            "Size",
            "Canvas",
            "Resident (ms)",
            "Host→host (ms)",
            "Patches/s"
        )?;
        for &(n, side, resident, e2e) in &rows {
            out!(
                "{n:>8} {side:>7} {:>14.4} {:>16.3} {:>12.3e}",
                resident * 1e3,
                e2e * 1e3,
                n as f64 / resident
            )?;
        }
    }
    Ok(())
}

/// `seconds` as `42 s`, `7.5 min` or `3.2 h`.
fn human_seconds(seconds: f64) -> String {
    if seconds < 120.0 {
        format!("{seconds:.0} s")
    } else if seconds < 7200.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}
