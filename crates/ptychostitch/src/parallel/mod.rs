//! The fast path: footprint-only work, the canvas split into row bands across threads.
//!
//! Bit-identity with [`crate::reference`] rests on three facts:
//! 1. A pixel outside a patch's [`Footprint`](crate::geometry::Footprint) reads only zero
//!    padding, so the reference adds exactly `+0.0` there; and an `f32` sum that starts at `+0.0`
//!    is never `-0.0`, so skipping that addition leaves every bit unchanged.
//! 2. Inside the footprint each pixel is computed with [`crate::kernel`]'s expression from the
//!    same sample positions and the same four neighbours: read from a zero-bordered copy of the
//!    kept patch, which holds exactly the values the padded canvas holds there, or, in the
//!    direct kernel ([`crate::direct`], AVX2 and AVX-512), with masked loads that give the
//!    border's `+0.0` in the lanes whose neighbour lies outside the crop.
//! 3. Threads own disjoint row bands of the canvas and walk the patches in index order, so
//!    every pixel receives its patches in index order whatever the band layout.
//!
//! Memory beyond the outputs is one scratch set per worker: a `(m+2)²` copy of the patch being
//! placed (or the direct kernel's `m²` one), the ones patch for the weights and per-column
//! tables, i.e. `O(threads·m²)`.

use crate::direct::{self, Blocks, Cache, Columns, Crop, Isa, Placement};
use crate::error::Result;
use crate::geometry::{Geometry, Span};
use crate::kernel::{Weights, sample_axis};
use crate::sample::{Sample, lanes, lanes_mut};
use ndarray::ArrayView3;
use rayon::prelude::*;
use std::sync::{Mutex, OnceLock};

mod axis;
mod bordered;
mod schedule;
mod simd;

pub(crate) use axis::Axis;
pub(crate) use bordered::copy_kept_rows;
#[allow(unused_imports)]
use bordered::*;
pub(crate) use schedule::Schedule;
#[allow(unused_imports)]
use schedule::*;
pub use simd::Simd;
#[allow(unused_imports)]
use simd::*;

/// What the weight canvas does in a run.
pub(crate) enum WeightCanvas<'a> {
    /// Not needed.
    Skip,
    /// Compute it into this buffer (of the region): add the selected patches' weights, after
    /// zeroing it if the job clears.
    Compute(&'a mut [f32]),
    /// Already known (a plan's cache); only read, for normalisation.
    Given(&'a [f32]),
}

/// Which patches a run places, in index order, and where each sits in the stack it was given.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Selection<'s> {
    /// Patches `start..end`; the stack holds patch `start + i` at its index `i`.
    Range(usize, usize),
    /// These patches (strictly increasing); the stack holds `indices[i]` at its index `i`.
    Indices(&'s [usize]),
}

impl Selection<'_> {
    fn len(self) -> usize {
        match self {
            Selection::Range(start, end) => end - start,
            Selection::Indices(list) => list.len(),
        }
    }

    /// The scan index of the stack's `i`-th patch.
    #[inline(always)]
    fn get(self, i: usize) -> usize {
        match self {
            Selection::Range(start, _) => start + i,
            Selection::Indices(list) => list[i],
        }
    }
}

/// A rectangle of the canvas: output buffers hold its `rows.len() × cols.len()` pixels, C order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Region {
    pub rows: Span,
    pub cols: Span,
}

impl Region {
    /// The whole `S×S` canvas.
    pub fn whole(geometry: &Geometry) -> Self {
        let all = Span {
            start: 0,
            end: geometry.side(),
        };
        Self {
            rows: all,
            cols: all,
        }
    }
}

/// One run of the fast path over a region of the canvas.
pub(crate) struct Job<'a, 'p, 's, T> {
    /// The patches, `(k, N, N)`, holding the selected patches; needed when `image` is set.
    pub patches: Option<ArrayView3<'p, T>>,
    /// Which patches to place, in index order.
    pub selection: Selection<'s>,
    /// The part of the canvas the output buffers hold.
    pub region: Region,
    /// The region's image (C order): the selected patches are added to it.
    pub image: Option<&'a mut [T]>,
    /// Zero the image and a computed weight canvas first (a one-shot run); a streaming run, or
    /// a window built from several runs, adds to what is there.
    pub clear: bool,
    /// The weight canvas (of the region).
    pub weights: WeightCanvas<'a>,
    /// Divide the image by `weights + 1e-9` once the selected patches are in.
    pub normalise: bool,
}

/// Runs a job as scheduled.
pub(crate) fn run<T: Sample>(
    geometry: &Geometry,
    job: Job<'_, '_, '_, T>,
    schedule: Schedule,
) -> Result<()> {
    let Schedule {
        threads,
        simd,
        min_pixels_per_worker,
    } = schedule;
    let (selection, region) = (job.selection, job.region);
    let Work {
        pixels: footprint_pixels,
        rows: rows_with_work,
    } = work(geometry, selection, region);
    let workers = workers_for(threads, min_pixels_per_worker, footprint_pixels);
    // Four bands per worker for balance, but no band much shorter than a footprint: a patch
    // that straddles bands is set up (column tables, prefetch) once per band, and a streamed
    // chunk covers only a stripe of the canvas. (n = 100,000 in chunks of 4,096 on 2 threads:
    // 73 ms with eight bands per stripe, against 40 ms for the one-shot call.)
    let tall_enough = (rows_with_work / (2 * (geometry.kept() + 1))).max(workers);
    let pieces = if workers <= 1 {
        1
    } else {
        (workers * 4).min(tall_enough)
    };
    let bounds = band_bounds(geometry, selection, region, pieces);
    let bands = split_bands(region.cols.len(), &bounds, job.image, job.weights);
    let kernel = simd.kernel();
    let context = Context {
        geometry,
        patches: job.patches,
        selection,
        region,
        clear: job.clear,
        normalise: job.normalise,
        kernel,
    };
    for_each_piece(
        workers,
        bands,
        || Scratch::new(geometry, T::LANES),
        |mut band, scratch| context.process(&mut band, scratch),
    );
    Ok(())
}

/// How many workers a run of `pixels` pixels of work gets: `threads` (0 = the pool's size), but
/// none with fewer than `min_pixels_per_worker` pixels, and at least one.
pub(crate) fn workers_for(threads: usize, min_pixels_per_worker: usize, pixels: usize) -> usize {
    let requested = if threads == 0 {
        rayon::current_num_threads()
    } else {
        threads
    };
    let affordable = pixels
        .checked_div(min_pixels_per_worker)
        .unwrap_or(usize::MAX);
    requested.min(affordable).max(1)
}

/// Runs that started more than one worker task, since the process started: how a test shows
/// that a thread count above one really ran in parallel (the minimum work per worker can keep a
/// small input on one thread whatever was asked).
static PARALLEL_RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many runs (of every operation) have started more than one worker task in this process.
pub fn parallel_runs() -> u64 {
    PARALLEL_RUNS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Runs `work` on every piece, each worker with its own scratch from `scratch`.
///
/// Exactly `workers` tasks on the caller's rayon pool (the global one unless the caller
/// installed another), each taking pieces from a shared queue until none is left. No pool is
/// ever created here, so any sequence of thread counts leaves no threads behind; a count above
/// the pool's size splits the work as asked but runs at most pool-size pieces at once. Pieces
/// own disjoint outputs, so the result never depends on which worker took which piece.
pub(crate) fn for_each_piece<P: Send, S>(
    workers: usize,
    pieces: Vec<P>,
    scratch: impl Fn() -> S + Sync,
    work: impl Fn(P, &mut S) + Sync,
) {
    if workers <= 1 || pieces.len() <= 1 {
        let mut s = scratch();
        for piece in pieces {
            work(piece, &mut s);
        }
        return;
    }
    let tasks = workers.min(pieces.len());
    PARALLEL_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let queue = Mutex::new(pieces.into_iter());
    (0..tasks).into_par_iter().for_each(|_| {
        let mut s = scratch();
        loop {
            let next = queue
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .next();
            match next {
                Some(piece) => work(piece, &mut s),
                None => break,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_bounds_cover_canvas_in_order() {
        let positions: Vec<[f64; 2]> = (0..100)
            .map(|i| [(i % 10) as f64 * 3.7, (i / 10) as f64 * 3.7])
            .collect();
        let g = Geometry::new(&positions, 64, 20).unwrap();
        for pieces in [1, 2, 3, 8, 1000] {
            let b = band_bounds(&g, Selection::Range(0, g.len()), Region::whole(&g), pieces);
            assert_eq!(*b.first().unwrap(), 0);
            assert_eq!(*b.last().unwrap(), g.side());
            assert!(b.windows(2).all(|w| w[0] < w[1]), "{b:?}");
            assert!(b.len() - 1 <= pieces.min(g.side()));
        }
    }
}
