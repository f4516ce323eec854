//! `ptychostitch make-scan`: the bench-grid scan of any size, written straight to `.npy` files
//! in chunks (never held in memory), so the large benchmarks can be reproduced anywhere.

use crate::paths::{Output, check_outputs};
use crate::progress;
use anyhow::{Result, bail};
use ptychostitch::atomic::write_files_atomically;
use ptychostitch::npy::{NpyView, npy_header};
use ptychostitch::synthetic::{BENCH_CROP, BENCH_PATCH, bench_grid_stream};
use ptychostitch::{Complex32, memory};
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `make-scan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of patches.
    #[arg(short, long, value_parser = crate::args::count, allow_hyphen_values = true)]
    pub n: usize,
    /// Output: the patches, (n, 64, 64) complex64.
    #[arg(value_name = "PATCHES.npy")]
    pub patches: PathBuf,
    /// Output: the offsets, (n, 2) float64 [x, y] in pixels.
    #[arg(value_name = "OFFSETS.npy")]
    pub offsets: PathBuf,
    /// Seed of the generator (the benchmarks use 1).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Patches generated and written per step.
const CHUNK: usize = 1024;

/// Writes the scan; `program` is the command as it was started, for the suggested next line.
pub fn run(args: Args, program: &str) -> Result<()> {
    check_outputs(
        &[],
        &[
            Output {
                flag: "PATCHES",
                path: &args.patches,
                extension: "npy",
            },
            Output {
                flag: "OFFSETS",
                path: &args.offsets,
                extension: "npy",
            },
        ],
    )?;
    let n = args.n;
    // Sizes first (offsets in memory, the patches' bytes), before any file exists.
    let (offsets, mut values) = bench_grid_stream(n, args.seed)?;
    if n.checked_mul(BENCH_PATCH * BENCH_PATCH * 8).is_none() {
        bail!("-n {n}: the patches would take more bytes than a file can hold");
    }
    let per_patch = BENCH_PATCH * BENCH_PATCH;
    let mut buffer = memory::try_zeroed_vec::<Complex32>(CHUNK * per_patch, || {
        format!("{CHUNK} patches of {BENCH_PATCH}×{BENCH_PATCH}")
    })?;
    let bar = progress::patches_bar(n as u64);
    bar.set_message("writing");
    let header = npy_header("<c8", &[n, BENCH_PATCH, BENCH_PATCH]);
    let patches = Box::new(|w: &mut std::io::BufWriter<std::fs::File>| {
        w.write_all(&header)?;
        for start in (0..n).step_by(CHUNK) {
            let len = CHUNK.min(n - start);
            let chunk = &mut buffer[..len * per_patch];
            values.fill(chunk);
            w.write_all(bytemuck::cast_slice(chunk))?;
            bar.inc(len as u64);
        }
        Ok(())
    });
    let offsets_view = NpyView::Float64(offsets.view().into_dyn());
    let offsets_fill =
        Box::new(|w: &mut std::io::BufWriter<std::fs::File>| offsets_view.write_npy_to(w));
    write_files_atomically(vec![
        (&args.patches, patches),
        (&args.offsets, offsets_fill),
    ])?;
    out!(
        "wrote the bench-grid scan: {n} patches of {BENCH_PATCH}×{BENCH_PATCH} complex64 to {} ({:.1} GB) and their [x, y] offsets to {}; reassemble with: {program} reassemble {} {} -M {BENCH_CROP}",
        args.patches.display(),
        (n * per_patch * 8) as f64 / 1e9,
        args.offsets.display(),
        args.patches.display(),
        args.offsets.display(),
    )?;
    Ok(())
}
