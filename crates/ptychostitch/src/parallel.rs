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

/// Default footprint pixels a worker must have before another worker is worth waking
/// (measured with `ptychostitch bench`: at 100 patches of 21² one thread is fastest).
pub const DEFAULT_MIN_PIXELS_PER_WORKER: usize = 128 * 1024;

/// How a run is scheduled. None of it changes the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Schedule {
    /// Worker threads (0 = all cores of rayon's global pool).
    pub threads: usize,
    /// Instruction set.
    pub simd: Simd,
    /// Footprint pixels per worker below which fewer workers are used (0 = always all).
    pub min_pixels_per_worker: usize,
}

/// Which instruction set the fast path may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Simd {
    /// Detect the CPU once and use the widest supported kernel: AVX-512 where the CPU has it,
    /// else AVX2 + FMA, else the portable kernel.
    #[default]
    Auto,
    /// AVX2 + FMA even where AVX-512 is available (the portable kernel where AVX2 is not).
    /// Same bits; for comparing and testing the kernels on one machine.
    Avx2,
    /// The portable kernel only (what a CPU without AVX2/FMA runs). Same bits, slower.
    Portable,
}

/// The kernel a run uses, resolved from [`Simd`] and the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// AVX-512F (with AVX2 and FMA): the direct kernel, 16 lanes.
    Avx512,
    /// AVX2 + FMA: the direct kernel, 8 lanes.
    Avx2,
    /// No intrinsics: the bordered path, vectorised by the compiler where it can.
    Portable,
}

impl Simd {
    /// The kernel that will actually run on this CPU: `"avx512"`, `"avx2+fma"` or `"portable"`.
    pub fn resolved(self) -> &'static str {
        match self.kernel() {
            Kernel::Avx512 => "avx512",
            Kernel::Avx2 => "avx2+fma",
            Kernel::Portable => "portable",
        }
    }

    /// Whether AVX2 + FMA code may run (the gradients' kernels have no AVX-512 version).
    pub(crate) fn uses_avx2(self) -> bool {
        self.kernel() != Kernel::Portable
    }

    pub(crate) fn kernel(self) -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            static DETECTED: OnceLock<(bool, bool)> = OnceLock::new();
            let (avx2, avx512) = *DETECTED.get_or_init(|| {
                let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
                (avx2, avx2 && is_x86_feature_detected!("avx512f"))
            });
            match self {
                Simd::Auto if avx512 => Kernel::Avx512,
                Simd::Auto | Simd::Avx2 if avx2 => Kernel::Avx2,
                _ => Kernel::Portable,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = self;
            Kernel::Portable
        }
    }
}

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

/// How much a run has to do, from the selected footprints clipped to the region.
struct Work {
    /// Footprint pixels to compute.
    pixels: usize,
    /// Rows from the first to the last that some selected patch changes.
    rows: usize,
}

fn work(geometry: &Geometry, selection: Selection<'_>, region: Region) -> Work {
    let (mut pixels, mut lo, mut hi) = (0, usize::MAX, 0);
    for i in 0..selection.len() {
        let (rows, cols) = clipped(geometry.footprints()[selection.get(i)], region);
        if !rows.is_empty() && !cols.is_empty() {
            pixels += rows.len() * cols.len();
            lo = lo.min(rows.start);
            hi = hi.max(rows.end);
        }
    }
    Work {
        pixels,
        rows: hi.saturating_sub(lo),
    }
}

/// A footprint clipped to a region: the rows and columns of the region it changes.
#[inline(always)]
fn clipped(fp: crate::geometry::Footprint, region: Region) -> (Span, Span) {
    (
        fp.rows.intersect(region.rows),
        fp.cols.intersect(region.cols),
    )
}

/// Row boundaries `r0 = b0 < b1 < … = r1` of the region's rows `r0..r1` that give `pieces`
/// bands of about equal work (footprint pixels, plus a little per row for clearing and
/// normalising).
fn band_bounds(
    geometry: &Geometry,
    selection: Selection<'_>,
    region: Region,
    pieces: usize,
) -> Vec<usize> {
    let (top, height) = (region.rows.start, region.rows.len());
    let pieces = pieces.clamp(1, height.max(1));
    if pieces == 1 {
        return vec![top, region.rows.end];
    }
    let mut delta = vec![0_i64; height + 1];
    for i in 0..selection.len() {
        let (rows, cols) = clipped(geometry.footprints()[selection.get(i)], region);
        if rows.is_empty() || cols.is_empty() {
            continue;
        }
        delta[rows.start - top] += cols.len() as i64;
        delta[rows.end - top] -= cols.len() as i64;
    }
    let per_row_base = (region.cols.len() / 8).max(1) as i64;
    let mut row_work = Vec::with_capacity(height);
    let mut covering = 0_i64;
    for d in &delta[..height] {
        covering += d;
        row_work.push(covering + per_row_base);
    }
    let total: i64 = row_work.iter().sum();
    let mut bounds = vec![top];
    let mut acc = 0_i64;
    for (y, w) in row_work.iter().enumerate() {
        acc += w;
        let next_cut = total * bounds.len() as i64 / pieces as i64;
        if acc >= next_cut && bounds.len() < pieces && y + 1 < height {
            bounds.push(top + y + 1);
        }
    }
    bounds.push(region.rows.end);
    bounds
}

/// One band of canvas rows and the slices of the outputs it owns.
struct Band<'a, T> {
    rows: Span,
    image: Option<&'a mut [T]>,
    weights: WeightCanvas<'a>,
}

fn split_bands<'a, T>(
    width: usize,
    bounds: &[usize],
    mut image: Option<&'a mut [T]>,
    mut weights: WeightCanvas<'a>,
) -> Vec<Band<'a, T>> {
    let mut bands = Vec::with_capacity(bounds.len().saturating_sub(1));
    for pair in bounds.windows(2) {
        let len = (pair[1] - pair[0]) * width;
        let band_image = image.take().map(|rest| {
            let (head, tail) = rest.split_at_mut(len);
            image = Some(tail);
            head
        });
        let band_weights = match std::mem::replace(&mut weights, WeightCanvas::Skip) {
            WeightCanvas::Skip => WeightCanvas::Skip,
            WeightCanvas::Compute(rest) => {
                let (head, tail) = rest.split_at_mut(len);
                weights = WeightCanvas::Compute(tail);
                WeightCanvas::Compute(head)
            }
            WeightCanvas::Given(rest) => {
                let (head, tail) = rest.split_at(len);
                weights = WeightCanvas::Given(tail);
                WeightCanvas::Given(head)
            }
        };
        bands.push(Band {
            rows: Span {
                start: pair[0],
                end: pair[1],
            },
            image: band_image,
            weights: band_weights,
        });
    }
    bands
}

/// Per-worker buffers, allocated once per worker and run.
struct Scratch {
    /// Zero-bordered copy of the kept patch: `(m+2)` rows of `(m+2)·LANES` lanes.
    patch: Vec<f32>,
    /// Zero-bordered patch of ones for the weight canvas: `(m+2)²`.
    ones: Vec<f32>,
    /// Per footprint column: index into the bordered patch of its left neighbour.
    col: Vec<usize>,
    /// Per footprint column: `1 - wx` and `wx`.
    ux: Vec<f32>,
    wx: Vec<f32>,
    /// The same two tables with every entry repeated once per lane.
    ux_lanes: Vec<f32>,
    wx_lanes: Vec<f32>,
    /// True when every column of the footprint has the same `ux` and `wx` (bit for bit): then a
    /// row's four weights are the same for every pixel and are computed once per row.
    uniform: bool,
}

impl Scratch {
    fn new(geometry: &Geometry, lanes_per_pixel: usize) -> Self {
        let width = geometry.kept() + 2;
        let mut ones = vec![0.0; width * width];
        for r in 1..width - 1 {
            ones[r * width + 1..(r + 1) * width - 1].fill(1.0);
        }
        Self {
            patch: vec![0.0; width * width * lanes_per_pixel],
            ones,
            col: Vec::with_capacity(width + 1),
            ux: Vec::with_capacity(width + 1),
            wx: Vec::with_capacity(width + 1),
            ux_lanes: Vec::with_capacity((width + 1) * lanes_per_pixel),
            wx_lanes: Vec::with_capacity((width + 1) * lanes_per_pixel),
            uniform: false,
        }
    }

    /// The column tables with an entry per lane: `ux_lanes`/`wx_lanes`, or `ux`/`wx` themselves
    /// when a pixel is one lane.
    #[inline(always)]
    fn lane_tables(&self, lanes_per_pixel: usize) -> (&[f32], &[f32]) {
        if lanes_per_pixel == 1 {
            (&self.ux, &self.wx)
        } else {
            (&self.ux_lanes, &self.wx_lanes)
        }
    }

    /// Fills the column tables for a footprint; returns the first column's index when the
    /// columns are consecutive (always, except where `f32` rounding skips or repeats a sample).
    /// Inlined so that its `floor` compiles to one instruction in the AVX2 kernel.
    #[inline(always)]
    fn columns(
        &mut self,
        cols: Span,
        shift: f32,
        pad: usize,
        lanes_per_pixel: usize,
    ) -> Option<usize> {
        self.col.clear();
        self.ux.clear();
        self.wx.clear();
        for x in cols.start..cols.end {
            let (x0, wx) = sample_axis(x, shift);
            // x0 ∈ [p-1, p+m-1] inside the footprint, so this index is in 0..=m.
            self.col.push((x0 + 1 - pad as i64) as usize);
            self.ux.push(1.0 - wx);
            self.wx.push(wx);
        }
        // `x - shift` is exact for most scans (the bench grid: every patch), so the fraction is
        // the same in every column; compared by bits, so the products below are unchanged.
        self.uniform = match (self.ux.first(), self.wx.first()) {
            (Some(&u), Some(&w)) => {
                self.ux.iter().all(|v| v.to_bits() == u.to_bits())
                    && self.wx.iter().all(|v| v.to_bits() == w.to_bits())
            }
            _ => false,
        };
        if lanes_per_pixel > 1 && !self.uniform {
            self.ux_lanes.clear();
            self.wx_lanes.clear();
            for (&u, &w) in self.ux.iter().zip(&self.wx) {
                for _ in 0..lanes_per_pixel {
                    self.ux_lanes.push(u);
                    self.wx_lanes.push(w);
                }
            }
        }
        let first = *self.col.first()?;
        self.col
            .iter()
            .enumerate()
            .all(|(j, &c)| c == first + j)
            .then_some(first)
    }
}

/// What every band of one run shares.
struct Context<'g, 'p, 's, T> {
    geometry: &'g Geometry,
    patches: Option<ArrayView3<'p, T>>,
    selection: Selection<'s>,
    region: Region,
    clear: bool,
    normalise: bool,
    kernel: Kernel,
}

impl<T: Sample> Context<'_, '_, '_, T> {
    fn process(&self, band: &mut Band<'_, T>, scratch: &mut Scratch) {
        match self.kernel {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Simd::kernel` resolves to AVX-512 only where `is_x86_feature_detected!`
            // found AVX-512F, AVX2 and FMA on this CPU.
            Kernel::Avx512 => unsafe { self.process_avx512(band, scratch) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Simd::kernel` resolves to AVX2 only where it found AVX2 and FMA.
            Kernel::Avx2 => unsafe { self.process_avx2(band, scratch) },
            _ => self.process_portable(band, scratch),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn process_avx512(&self, band: &mut Band<'_, T>, scratch: &mut Scratch) {
        // SAFETY: this function runs only where the CPU has AVX-512F (`process`).
        unsafe { self.band::<crate::direct::Avx512>(band, scratch, true) };
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn process_avx2(&self, band: &mut Band<'_, T>, scratch: &mut Scratch) {
        // SAFETY: this function runs only where the CPU has AVX2 and FMA (`process`).
        unsafe { self.band::<crate::direct::Avx2>(band, scratch, true) };
    }

    fn process_portable(&self, band: &mut Band<'_, T>, scratch: &mut Scratch) {
        // SAFETY: `direct` is false, so no instruction of `Scalar` runs (it needs none anyway).
        unsafe { self.band::<crate::direct::Scalar>(band, scratch, false) };
    }

    /// One band of the outputs: clear (one-shot runs), add the selected patches in index order,
    /// normalise (`reassemble_position`). With `direct`, patches with regular columns take the
    /// direct kernel ([`crate::direct`]) in `I`'s instruction set; the rest, the bordered copy.
    ///
    /// # Safety
    /// With `direct`, the CPU supports `I`.
    #[inline(always)]
    unsafe fn band<I: Isa>(&self, band: &mut Band<'_, T>, scratch: &mut Scratch, direct: bool) {
        let g = self.geometry;
        let (pad, kept) = (g.pad(), g.kept());
        let (left, out_width) = (self.region.cols.start, self.region.cols.len());
        let width = kept + 2;
        let lanes_per_pixel = T::LANES;
        let row_lanes = width * lanes_per_pixel;

        let mut image = band.image.as_deref_mut().map(lanes_mut);
        if let Some(img) = image.as_deref_mut().filter(|_| self.clear) {
            img.fill(0.0);
        }
        if let WeightCanvas::Compute(w) = &mut band.weights
            && self.clear
        {
            w.fill(0.0);
        }
        let patches = self.patches.as_ref().filter(|_| image.is_some());
        let contiguous = patches.and_then(|p| p.as_slice());
        let stack_len = self.selection.len();
        let mut blocks = Blocks::<I>::new();
        let crop = Crop {
            size: g.patch_size(),
            kept,
            start: g.crop_start(),
        };
        let patch_lanes = crop.size * crop.size * lanes_per_pixel;

        for local in 0..stack_len {
            let k = self.selection.get(local);
            let fp = g.footprints()[k];
            let [ax, ay] = g.shifts()[k];
            let rows = fp.rows.intersect(band.rows);
            let cols = fp.cols.intersect(self.region.cols);
            if rows.is_empty() || cols.is_empty() {
                continue;
            }
            let regular = scratch.columns(cols, ax, pad, lanes_per_pixel);
            if let Some(first) = regular.filter(|_| direct)
                && (image.is_none() || contiguous.is_some())
            {
                let patch = |i: usize| {
                    contiguous
                        .filter(|_| i < stack_len)
                        .map(|all| &lanes(all)[i * patch_lanes..(i + 1) * patch_lanes])
                };
                let columns = if scratch.uniform {
                    Columns::Uniform {
                        ux: scratch.ux[0],
                        wx: scratch.wx[0],
                    }
                } else {
                    let (ux_lanes, wx_lanes) = scratch.lane_tables(lanes_per_pixel);
                    Columns::Tables {
                        ux: &scratch.ux,
                        wx: &scratch.wx,
                        ux_lanes,
                        wx_lanes,
                    }
                };
                let placement = Placement {
                    patch: patch(local),
                    next: patch(local + 1),
                    crop,
                    columns,
                    first,
                    rows,
                    shift_y: ay,
                    pad,
                    cols: Span {
                        start: cols.start - left,
                        end: cols.end - left,
                    },
                    band_top: band.rows.start,
                    width: out_width,
                    image: image.as_deref_mut(),
                    weights: match &mut band.weights {
                        WeightCanvas::Compute(w) => Some(&mut **w),
                        _ => None,
                    },
                };
                // SAFETY: `direct` is set only where the CPU supports `I` (this function's
                // contract).
                unsafe { direct::place::<I>(placement, lanes_per_pixel, &mut blocks) };
                continue;
            }
            if let Some(all) = contiguous {
                prefetch_kept_rows(crop, all, local + 1, stack_len);
            }
            let first_row = bordered_row(rows.start, ay, pad);
            let last_row = bordered_row(rows.end - 1, ay, pad);
            if let Some(p) = patches {
                copy_kept_rows(
                    g,
                    *p,
                    contiguous,
                    local,
                    first_row,
                    last_row + 1,
                    &mut scratch.patch,
                );
            }
            let (x0, x1) = (cols.start - left, cols.end - left);
            for y in rows.start..rows.end {
                let (y0, wy) = sample_axis(y, ay);
                let r = (y0 + 1 - pad as i64) as usize;
                let uy = 1.0 - wy;
                let at = (y - band.rows.start) * out_width;
                if let Some(img) = image.as_deref_mut() {
                    let out = &mut img[(at + x0) * lanes_per_pixel..(at + x1) * lanes_per_pixel];
                    let top = &scratch.patch[r * row_lanes..(r + 1) * row_lanes];
                    let bottom = &scratch.patch[(r + 1) * row_lanes..(r + 2) * row_lanes];
                    if lanes_per_pixel == 2 {
                        place_row::<2>(out, top, bottom, regular, scratch, uy, wy);
                    } else {
                        place_row::<1>(out, top, bottom, regular, scratch, uy, wy);
                    }
                }
                if let WeightCanvas::Compute(w) = &mut band.weights {
                    let out = &mut w[at + x0..at + x1];
                    let top = &scratch.ones[r * width..(r + 1) * width];
                    let bottom = &scratch.ones[(r + 1) * width..(r + 2) * width];
                    place_row::<1>(out, top, bottom, regular, scratch, uy, wy);
                }
            }
        }

        if self.normalise {
            let weights: &[f32] = match &band.weights {
                WeightCanvas::Compute(w) => w,
                WeightCanvas::Given(w) => w,
                WeightCanvas::Skip => return,
            };
            if let Some(img) = image {
                for (pixel, &w) in img.chunks_exact_mut(lanes_per_pixel).zip(weights) {
                    T::normalise(pixel, w);
                }
            }
        }
    }
}

/// Row of the zero-bordered patch that canvas row `y` samples as its upper neighbour.
#[inline(always)]
fn bordered_row(y: usize, shift: f32, pad: usize) -> usize {
    (sample_axis(y, shift).0 + 1 - pad as i64) as usize
}

/// Asks the CPU to start loading patch `k`'s kept rows (if it exists) into L2 while patch
/// `k - 1` is being placed. Reading the kept rows, short rows at a long stride, is what bounds
/// the fast path. Measured at n = 10,000 on the bench-grid scan, 2 threads (`cargo run --release
/// --example timing`): shift_and_sum 7.3 ms without prefetch, 7.4 ms prefetching into L1 (T0:
/// the prefetches then compete with the kernel's own loads for L1 fill buffers), 4.5 ms into L2
/// (T2); one or two patches ahead made no difference.
#[inline(always)]
fn prefetch_kept_rows<T: Sample>(crop: Crop, all: &[T], k: usize, stack_len: usize) {
    if k >= stack_len {
        return;
    }
    let patch_lanes = crop.size * crop.size * T::LANES;
    let patch = &lanes(all)[k * patch_lanes..(k + 1) * patch_lanes];
    for q in 0..crop.kept {
        direct::prefetch(crop.row(patch, q, T::LANES), Cache::L2);
    }
}

/// Copies the kept rows of the stack's patch `k` that bordered rows `first..=last` need into the
/// bordered copy.
#[inline(always)]
pub(crate) fn copy_kept_rows<T: Sample>(
    g: &Geometry,
    patches: ArrayView3<'_, T>,
    contiguous: Option<&[T]>,
    k: usize,
    first: usize,
    last: usize,
    bordered: &mut [f32],
) {
    let (n, m, c0) = (g.patch_size(), g.kept(), g.crop_start());
    let lanes_per_pixel = T::LANES;
    let row_lanes = (m + 2) * lanes_per_pixel;
    // Bordered row i holds kept row i - 1; rows 0 and m + 1 stay zero.
    for i in first.max(1)..=last.min(m) {
        let dst = &mut bordered[i * row_lanes + lanes_per_pixel..][..m * lanes_per_pixel];
        let src_row = c0 + i - 1;
        match contiguous {
            Some(all) => {
                let start = (k * n + src_row) * n + c0;
                copy_short(dst, lanes(&all[start..start + m]));
            }
            None => {
                for (c, out) in dst.chunks_exact_mut(lanes_per_pixel).enumerate() {
                    let v = patches[[k, src_row, c0 + c]];
                    out.copy_from_slice(lanes(std::slice::from_ref(&v)));
                }
            }
        }
    }
}

/// `dst.copy_from_slice(src)` for a short row (a kept row: tens of lanes), in blocks of eight
/// lanes the compiler moves inline: `copy_from_slice` calls `memcpy` for a length it does not
/// know, and a call per kept row per patch cost more than the copy (measured: 5% of the run in
/// `memmove`).
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d8, s8) in (&mut d).zip(&mut s) {
        let block: [f32; 8] = s8.try_into().unwrap_or([0.0; 8]);
        d8.copy_from_slice(&block);
    }
    for (d1, s1) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d1 = *s1;
    }
}

/// Adds one canvas row of one patch: the vectorised kernel when the footprint columns sample
/// consecutive patch columns (`regular` = the first one's index), the gather kernel otherwise.
#[inline(always)]
fn place_row<const L: usize>(
    out: &mut [f32],
    top: &[f32],
    bottom: &[f32],
    regular: Option<usize>,
    scratch: &Scratch,
    uy: f32,
    wy: f32,
) {
    match regular {
        Some(c) if scratch.uniform => {
            let w = Weights::from_factors(scratch.ux[0], scratch.wx[0], uy, wy);
            row_uniform::<L>(out, &top[c * L..], &bottom[c * L..], w)
        }
        Some(c) => {
            let (ux, wx) = scratch.lane_tables(L);
            row_regular::<L>(out, &top[c * L..], &bottom[c * L..], ux, wx, uy, wy)
        }
        None => row_gather::<L>(out, top, bottom, scratch, uy, wy),
    }
}

/// One canvas row of one patch when its columns sample consecutive patch columns.
///
/// `top`/`bottom` start at the left neighbour of the first footprint column; `ux`/`wx` hold
/// one entry per lane. Written as a flat loop so that the compiler vectorises it.
#[inline(always)]
fn row_regular<const L: usize>(
    out: &mut [f32],
    top: &[f32],
    bottom: &[f32],
    ux: &[f32],
    wx: &[f32],
    uy: f32,
    wy: f32,
) {
    let len = out.len();
    let (ux, wx) = (&ux[..len], &wx[..len]);
    let (i00, i01) = (&top[..len], &top[L..L + len]);
    let (i10, i11) = (&bottom[..len], &bottom[L..L + len]);
    for t in 0..len {
        let w = Weights::from_factors(ux[t], wx[t], uy, wy);
        out[t] += w.apply(i00[t], i01[t], i10[t], i11[t]);
    }
}

/// One canvas row of one patch whose columns sample consecutive patch columns with the same
/// fractions: the weights, the same products as [`row_regular`] computes per pixel, once.
#[inline(always)]
fn row_uniform<const L: usize>(out: &mut [f32], top: &[f32], bottom: &[f32], w: Weights) {
    let len = out.len();
    let (i00, i01) = (&top[..len], &top[L..L + len]);
    let (i10, i11) = (&bottom[..len], &bottom[L..L + len]);
    for t in 0..len {
        out[t] += w.apply(i00[t], i01[t], i10[t], i11[t]);
    }
}

/// One canvas row of one patch for any column table (the rare irregular case).
#[inline(always)]
fn row_gather<const L: usize>(
    out: &mut [f32],
    top: &[f32],
    bottom: &[f32],
    tables: &Scratch,
    uy: f32,
    wy: f32,
) {
    for (j, pixel) in out.chunks_exact_mut(L).enumerate() {
        let c = tables.col[j];
        let w = Weights::from_factors(tables.ux[j], tables.wx[j], uy, wy);
        for (lane, v) in pixel.iter_mut().enumerate() {
            let (a, b) = (c * L + lane, (c + 1) * L + lane);
            *v += w.apply(top[a], top[b], bottom[a], bottom[b]);
        }
    }
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
