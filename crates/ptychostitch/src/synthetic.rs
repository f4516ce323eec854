//! Synthetic scans for benchmarks, validation and demos (the "bench-grid" scan of
//! `docs/semantics.md`).
//!
//! Deterministic for a given seed on every platform: a SplitMix64 generator and Box–Muller
//! normals, so benchmark inputs are the same for every run and every tool.

use crate::error::{Error, Result};
use crate::memory::try_zeroed_vec;
use ndarray::{Array2, Array3};
use num_complex::Complex32;

/// Sizes of the benchmark scan in `docs/semantics.md` §5.
pub const BENCH_SIZES: [usize; 6] = [100, 500, 1000, 2000, 5000, 10000];
/// Patch side of the benchmark scan.
pub const BENCH_PATCH: usize = 64;
/// Crop `M` of the benchmark scan.
pub const BENCH_CROP: i64 = 20;
/// Grid step of the benchmark scan in pixels.
pub const BENCH_STEP: f64 = 3.7;

/// A small, fast, deterministic pseudo-random generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1_u64 << 53) as f64)
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// `[x, y]` positions of the bench-grid scan: `ceil(sqrt(n))` columns, step 3.7 px, row-major,
/// the first `n` points, each jittered by uniform `[-0.5, 0.5)`.
///
/// Memory for them (16 bytes a patch) is checked first: a count too large for this machine is
/// an [`Error::OutOfMemory`], not an abort.
pub fn bench_grid_offsets(n: usize, rng: &mut SplitMix64) -> Result<Array2<f64>> {
    let cols = (n as f64).sqrt().ceil() as usize;
    let what = || format!("the [x, y] offsets of {n} patches");
    let len = n.checked_mul(2).ok_or_else(|| Error::OutOfMemory {
        what: what(),
        bytes: n as f64 * 16.0,
    })?;
    let values = try_zeroed_vec::<f64>(len, what)?;
    let mut offsets =
        Array2::from_shape_vec((n, 2), values).expect("2·n values for an (n, 2) array");
    for k in 0..n {
        offsets[[k, 0]] = (k % cols.max(1)) as f64 * BENCH_STEP + rng.uniform() - 0.5;
        offsets[[k, 1]] = (k / cols.max(1)) as f64 * BENCH_STEP + rng.uniform() - 0.5;
    }
    Ok(offsets)
}

/// The bench-grid scan of `n` patches: `(n, 64, 64)` complex patches with standard-normal real
/// and imaginary parts, and their `(n, 2)` offsets. Crop with [`BENCH_CROP`].
///
/// Memory for the patches is checked against the effective limit first: a scan too large for
/// this machine is an [`Error::OutOfMemory`], not an abort.
pub fn bench_grid(n: usize, seed: u64) -> Result<(Array3<Complex32>, Array2<f64>)> {
    let len = n
        .checked_mul(BENCH_PATCH * BENCH_PATCH)
        .ok_or_else(|| Error::OutOfMemory {
            what: format!("{n} patches of {BENCH_PATCH}×{BENCH_PATCH}"),
            bytes: n as f64 * (BENCH_PATCH * BENCH_PATCH * 8) as f64,
        })?;
    let mut values = try_zeroed_vec::<Complex32>(len, || {
        format!("{n} patches of {BENCH_PATCH}×{BENCH_PATCH}")
    })?;
    let (offsets, mut patches) = bench_grid_stream(n, seed)?;
    patches.fill(&mut values);
    let patches = Array3::from_shape_vec((n, BENCH_PATCH, BENCH_PATCH), values)
        .expect("n·N·N values for an (n, N, N) stack");
    Ok((patches, offsets))
}

/// The bench-grid scan of `n` patches as its offsets and a generator of its patch values, for
/// scans too large to hold: [`BenchGridPatches::fill`] writes the next values (patch after patch,
/// row-major) into any buffer, so the patches can be written to a file in chunks. The values
/// are exactly [`bench_grid`]'s.
pub fn bench_grid_stream(n: usize, seed: u64) -> Result<(Array2<f64>, BenchGridPatches)> {
    let mut rng = SplitMix64::new(seed);
    let offsets = bench_grid_offsets(n, &mut rng)?;
    Ok((offsets, BenchGridPatches(rng)))
}

/// The patch values of a bench-grid scan, in order (see [`bench_grid_stream`]).
#[derive(Debug, Clone)]
pub struct BenchGridPatches(SplitMix64);

impl BenchGridPatches {
    /// Fills `out` with the next patch values.
    pub fn fill(&mut self, out: &mut [Complex32]) {
        for v in out {
            *v = Complex32::new(self.0.normal() as f32, self.0.normal() as f32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_grid_canvas_sides_match_the_spec() {
        // docs/semantics.md, bench-grid: canvas sides near 56, 104, 140, 190, 290, 390 px.
        for (n, near) in BENCH_SIZES.iter().zip([56, 104, 140, 190, 290, 390]) {
            let mut rng = SplitMix64::new(1);
            let offsets = bench_grid_offsets(*n, &mut rng).unwrap();
            let plan = crate::Plan::new(offsets.view(), BENCH_PATCH, BENCH_CROP).unwrap();
            let side = plan.canvas_shape().0 as i64;
            assert!(
                (side - near).abs() <= 8,
                "n={n}: side {side}, spec says near {near}"
            );
        }
    }

    #[test]
    fn the_stream_gives_bench_grids_values() {
        let (patches, offsets) = bench_grid(3, 9).unwrap();
        let (stream_offsets, mut stream) = bench_grid_stream(3, 9).unwrap();
        assert_eq!(offsets, stream_offsets);
        let mut values = vec![Complex32::new(0.0, 0.0); 3 * BENCH_PATCH * BENCH_PATCH];
        let (a, b) = values.split_at_mut(5000);
        stream.fill(a);
        stream.fill(b);
        assert_eq!(patches.as_slice().unwrap(), &values[..]);
    }

    #[test]
    fn normals_have_unit_variance() {
        let mut rng = SplitMix64::new(7);
        let v: Vec<f64> = (0..20000).map(|_| rng.normal()).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "mean {mean} var {var}"
        );
    }
}
