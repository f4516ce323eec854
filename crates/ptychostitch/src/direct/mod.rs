//! The direct kernel: a patch placed with masked vector loads instead of a zero border.
//!
//! The portable path ([`crate::parallel`]) copies a patch's kept rows into a zero-bordered
//! buffer, so that the footprint's edge pixels find zeros beyond the crop, and lets the compiler
//! vectorise the rows (with scalar remainders). Here the zeros come from the loads themselves.
//! Where a patch's footprint columns sample consecutive patch columns (all but the rare patches
//! whose `f32` sample positions skip or repeat one) and the stack is C-contiguous, every lane
//! whose neighbour lies outside the kept crop is masked off: a masked load yields `+0.0` there,
//! the very value the border holds. Each pixel is then [`crate::kernel::Weights::apply`] on the
//! same four neighbours with the same weights, in the same order, a lane at a time, so the bits
//! are the reference's. The row's last, partial vector is a masked store, not a scalar loop.
//!
//! The weight canvas is the same arithmetic on a patch of ones, made in registers and masked the
//! same way: it reads nothing but the canvas.
//!
//! Two measured choices (bench-grid scan, n = 10,000, one thread, AMD EPYC with AVX-512):
//! - The kept rows are first copied, a vector at a time, into a compact per-worker buffer.
//!   Loading them straight from the stack inside the row loop took 20 ms instead of 6.3 ms:
//!   the copy's loads go out together, the row loop's one kept row per canvas row.
//! - The next patch's kept rows are prefetched a couple per canvas row
//!   ([`PREFETCH_ROWS_PER_ROW`]), not all at once.
//!
//! The vector width is a parameter ([`Isa`]): AVX-512 (16 lanes), AVX2 (8 lanes) and a scalar
//! stand-in (1 lane) that the unit tests run on any CPU.

use crate::geometry::Span;
use crate::kernel::sample_axis;

/// The vector operations the direct kernel needs. Every method is `unsafe`: the caller must run
/// on a CPU with the instruction set (see [`crate::parallel::Simd`]), and the pointer methods
/// have the contract stated on each.
pub(crate) trait Isa: Copy {
    /// Lanes per vector.
    const WIDTH: usize;
    /// A vector of `WIDTH` `f32` lanes.
    type V: Copy;
    /// A lane mask.
    type M: Copy;

    /// The lanes `j` of a vector with `lo <= j < hi` (none if `hi <= lo`).
    unsafe fn range(lo: isize, hi: isize) -> Self::M;
    /// No lane.
    unsafe fn none() -> Self::M;
    /// `x` in every lane.
    unsafe fn splat(x: f32) -> Self::V;
    /// The lanes of `mask` from `p`, `+0.0` in the others. Reads exactly the masked lanes, so
    /// `p` need only be valid for them.
    unsafe fn load(mask: Self::M, p: *const f32) -> Self::V;
    /// `1.0` in the lanes of `mask`, `+0.0` in the others.
    unsafe fn ones(mask: Self::M) -> Self::V;
    /// Writes the lanes of `mask` to `p` and no other; `p` need only be valid for them.
    unsafe fn store(mask: Self::M, p: *mut f32, v: Self::V);
    /// All lanes from `p`.
    unsafe fn load_full(p: *const f32) -> Self::V;
    /// All lanes to `p`.
    unsafe fn store_full(p: *mut f32, v: Self::V);
    /// `a·b`, each lane rounded once.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// `a·b + c`, each lane rounded once (fused).
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a + b`.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
}

/// The masks of one vector-wide block of an output row, the same for every row of a patch.
#[derive(Clone, Copy)]
pub(crate) struct Block<M> {
    /// First lane of the block in the output row.
    at: usize,
    /// Lanes whose upper-left (and lower-left) neighbour is inside the kept crop.
    left: M,
    /// Lanes whose upper-right (and lower-right) neighbour is inside the kept crop.
    right: M,
    /// Lanes of the output row.
    out: M,
    /// Whether every lane of the block is in the output row.
    full: bool,
}

/// Per-worker buffers of the direct kernel: the blocks of the image row and of the weight row,
/// and the compact copy of the patch's kept rows.
pub(crate) struct Blocks<I: Isa> {
    image: Vec<Block<I::M>>,
    weights: Vec<Block<I::M>>,
    /// `PAD` lanes, the kept rows one after another (`m·L` lanes each), `PAD` lanes: a vector
    /// that starts up to `L` lanes before a row or ends up to a vector past it stays inside the
    /// buffer, so even its masked-off lanes lie on mapped memory (a masked load whose off lanes
    /// touch an unmapped page costs a fault-suppression assist).
    copy: Vec<f32>,
}

impl<I: Isa> Blocks<I> {
    /// Lanes before the first and after the last kept row of the copy.
    const PAD: usize = 16;

    pub(crate) fn new() -> Self {
        Self {
            image: Vec::new(),
            weights: Vec::new(),
            copy: Vec::new(),
        }
    }

    /// The copy, sized for `m` kept rows of `stride` lanes.
    fn copy_for(&mut self, m: usize, stride: usize) -> &mut [f32] {
        self.copy.resize(2 * Self::PAD + m * stride, 0.0);
        &mut self.copy
    }
}

/// `dst.copy_from_slice(src)` for one kept row, a vector at a time (a `memcpy` call per row
/// costs more than the copy).
///
/// # Safety
/// The CPU supports `I`.
#[inline(always)]
unsafe fn copy_row<I: Isa>(dst: &mut [f32], src: &[f32]) {
    let len = src.len().min(dst.len());
    let mut at = 0;
    // SAFETY: the CPU supports `I`; full vectors lie inside both slices (`at + WIDTH <= len`)
    // and the last, masked to `len - at` lanes, reads and writes only lanes inside them.
    unsafe {
        while at + I::WIDTH <= len {
            I::store_full(dst.as_mut_ptr().add(at), I::load_full(src.as_ptr().add(at)));
            at += I::WIDTH;
        }
        if at < len {
            let mask = I::range(0, (len - at) as isize);
            I::store(
                mask,
                dst.as_mut_ptr().add(at),
                I::load(mask, src.as_ptr().add(at)),
            );
        }
    }
}

/// The blocks of an output row of `len` lanes whose left neighbours start `start` lanes into a
/// kept row of `kept` lanes (may be negative: the border), `lanes` lanes per pixel.
///
/// # Safety
/// The CPU supports `I`.
#[inline(always)]
unsafe fn blocks<I: Isa>(
    out: &mut Vec<Block<I::M>>,
    len: usize,
    start: isize,
    kept: usize,
    lanes: usize,
) {
    out.clear();
    let (len_i, kept_i, lanes_i) = (len as isize, kept as isize, lanes as isize);
    let mut at = 0;
    while at < len {
        let a = at as isize;
        // SAFETY: the caller's CPU supports `I`.
        unsafe {
            out.push(Block {
                at,
                left: I::range(-start - a, kept_i - start - a),
                right: I::range(-start - lanes_i - a, kept_i - start - lanes_i - a),
                out: I::range(0, len_i - a),
                full: at + I::WIDTH <= len,
            });
        }
        at += I::WIDTH;
    }
}

/// The fractions of a patch's footprint columns.
#[derive(Clone, Copy)]
pub(crate) enum Columns<'a> {
    /// The same `1 - wx` and `wx` in every column (compared by bits).
    Uniform { ux: f32, wx: f32 },
    /// Per column (`ux`, `wx`: the weight row) and per lane (`ux_lanes`, `wx_lanes`: the image
    /// row; the same tables when a pixel is one lane).
    Tables {
        ux: &'a [f32],
        wx: &'a [f32],
        ux_lanes: &'a [f32],
        wx_lanes: &'a [f32],
    },
}

/// Where the kept crop lies in a patch: the same for every patch of a scan.
#[derive(Clone, Copy)]
pub(crate) struct Crop {
    /// `N`, the patch side.
    pub size: usize,
    /// `m`, kept rows and columns.
    pub kept: usize,
    /// The first kept row and column.
    pub start: usize,
}

impl Crop {
    /// The kept lanes of kept row `q` of a patch (its `N·N·L` lanes).
    #[inline(always)]
    pub(crate) fn row(self, patch: &[f32], q: usize, lanes: usize) -> &[f32] {
        let start = ((self.start + q) * self.size + self.start) * lanes;
        &patch[start..start + self.kept * lanes]
    }
}

/// Kept rows of the next patch to prefetch per canvas row of this one.
///
/// Measured on the bench-grid scan (n = 10,000, one thread, AMD EPYC with AVX-512; minimum of
/// 41 interleaved runs): all `m` rows prefetched at once before the patch, 7.0 ms; one row per
/// canvas row, 5.1 ms; two, 4.6 ms; three, 4.7 ms; two into L2 only (T2) instead of L1 (T0),
/// 5.1 ms; the crop-read floor, 4.5 ms. A burst of `4·m` prefetches fills the core's miss
/// buffers and stalls the loads of the patch being placed; spread out, the next patch streams
/// in while this one is computed.
const PREFETCH_ROWS_PER_ROW: usize = 2;

/// The cache a prefetch fills.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cache {
    /// L1 (`_MM_HINT_T0`): the direct kernel's choice ([`PREFETCH_ROWS_PER_ROW`]).
    L1,
    /// L2 (`_MM_HINT_T2`): the bordered path's choice (`parallel::prefetch_kept_rows`).
    L2,
}

/// Asks the CPU to start loading every cache line of these lanes into `cache` (a hint: it never
/// faults).
#[inline(always)]
pub(crate) fn prefetch(row: &[f32], cache: Cache) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _MM_HINT_T2, _mm_prefetch};
        let hint = |address: *const i8| {
            // SAFETY: a prefetch only hints and reads nothing into Rust's view of memory; the
            // addresses below lie inside `row` anyway.
            unsafe {
                match cache {
                    Cache::L1 => _mm_prefetch::<_MM_HINT_T0>(address),
                    Cache::L2 => _mm_prefetch::<_MM_HINT_T2>(address),
                }
            }
        };
        let (first, bytes) = (row.as_ptr().cast::<i8>(), std::mem::size_of_val(row));
        let mut offset = 0;
        while offset < bytes {
            hint(first.wrapping_add(offset));
            offset += 64;
        }
        if bytes > 0 {
            // The row's last byte: its line may not start inside the row.
            hint(first.wrapping_add(bytes - 1));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (row, cache);
}

/// One patch to add to a band of the outputs.
pub(crate) struct Placement<'a, 'o> {
    /// The patch's `N·N·L` lanes; needed for the image.
    pub patch: Option<&'a [f32]>,
    /// The next patch this band places (its `N·N·L` lanes), to prefetch.
    pub next: Option<&'a [f32]>,
    /// Where its kept crop lies.
    pub crop: Crop,
    /// The footprint columns' fractions.
    pub columns: Columns<'a>,
    /// The bordered-patch column (`0..=m`) of the first footprint column's left neighbour.
    pub first: usize,
    /// Canvas rows to place (inside the band).
    pub rows: Span,
    /// The patch's row shift.
    pub shift_y: f32,
    /// The canvas padding `p`.
    pub pad: usize,
    /// Output columns to place, counted from the region's first column.
    pub cols: Span,
    /// The band's first canvas row.
    pub band_top: usize,
    /// Pixels per output row (the region's width).
    pub width: usize,
    /// The band's image lanes, where the image is wanted.
    pub image: Option<&'o mut [f32]>,
    /// The band's weight canvas, where it is computed.
    pub weights: Option<&'o mut [f32]>,
}

/// Adds one patch to a band: its image rows (`lanes` lanes per pixel) and its weight rows.
///
/// # Safety
/// The CPU supports `I`.
#[inline(always)]
pub(crate) unsafe fn place<I: Isa>(p: Placement<'_, '_>, lanes: usize, scratch: &mut Blocks<I>) {
    let Placement {
        patch,
        crop,
        columns,
        first,
        rows,
        shift_y,
        pad,
        cols,
        band_top,
        width,
        image,
        mut weights,
        next,
    } = p;
    let m = crop.kept;
    // The kept column of the first left neighbour: -1 is the left border.
    let start = first as isize - 1;
    let ncols = cols.len();
    let mut image = image.zip(patch);
    // SAFETY: the caller's CPU supports `I`.
    unsafe {
        if image.is_some() {
            let lanes_i = lanes as isize;
            blocks::<I>(
                &mut scratch.image,
                ncols * lanes,
                start * lanes_i,
                m * lanes,
                lanes,
            );
        }
        if weights.is_some() {
            blocks::<I>(&mut scratch.weights, ncols, start, m, 1);
        }
    }
    let (image_fractions, weight_fractions) = match columns {
        Columns::Uniform { ux, wx } => (Fractions::Uniform(ux, wx), Fractions::Uniform(ux, wx)),
        Columns::Tables {
            ux,
            wx,
            ux_lanes,
            wx_lanes,
        } => (
            Fractions::Tables(ux_lanes, wx_lanes),
            Fractions::Tables(ux, wx),
        ),
    };
    let kept_row = |q: i64| (q >= 0 && q < m as i64).then_some(q as usize);
    let stride = m * lanes;
    if let Some((_, patch)) = image.as_ref() {
        // The kept rows the footprint's rows interpolate between, into the compact copy.
        let upper = |y: usize| sample_axis(y, shift_y).0 - pad as i64;
        let (from, to) = (
            upper(rows.start).max(0),
            (upper(rows.end - 1) + 2).min(m as i64),
        );
        let copy = scratch.copy_for(m, stride);
        for q in from as usize..to.max(from) as usize {
            let dst = &mut copy[Blocks::<I>::PAD + q * stride..][..stride];
            // SAFETY: the caller's CPU supports `I`.
            unsafe { copy_row::<I>(dst, crop.row(patch, q, lanes)) };
        }
    }
    let next = next.filter(|_| image.is_some());
    let mut prefetched = 0;
    for y in rows.start..rows.end {
        if let Some(next) = next {
            let end = (prefetched + PREFETCH_ROWS_PER_ROW).min(m);
            for q in prefetched..end {
                prefetch(crop.row(next, q, lanes), Cache::L1);
            }
            prefetched = end;
        }
        let (y0, wy) = sample_axis(y, shift_y);
        let uy = 1.0 - wy;
        // Bordered row `r`, the upper neighbour, holds kept row `r - 1`; the lower neighbour is
        // kept row `r`. Rows outside `0..m` are the zero border.
        let r = y0 + 1 - pad as i64;
        let (top, bottom) = (kept_row(r - 1), kept_row(r));
        let at = (y - band_top) * width;
        if let Some((img, _)) = image.as_mut() {
            let out = &mut img[(at + cols.start) * lanes..(at + cols.end) * lanes];
            let copy = &scratch.copy;
            let source =
                |q: Option<usize>| q.map(|q| &copy[Blocks::<I>::PAD + q * stride..][..stride]);
            let rows = Neighbours::Loaded(source(top), source(bottom));
            // SAFETY: the CPU supports `I`; `out` is the row's `ncols·lanes` lanes and the
            // blocks were made for it and for kept rows of `m·lanes` lanes.
            unsafe {
                row::<I>(
                    out,
                    rows,
                    start * lanes as isize,
                    lanes,
                    &scratch.image,
                    image_fractions,
                    uy,
                    wy,
                )
            };
        }
        if let Some(w) = weights.as_deref_mut() {
            let out = &mut w[at + cols.start..at + cols.end];
            let rows = Neighbours::Ones(top.is_some(), bottom.is_some());
            // SAFETY: as above, for one lane per pixel; ones are made, not loaded.
            unsafe {
                row::<I>(
                    out,
                    rows,
                    start,
                    1,
                    &scratch.weights,
                    weight_fractions,
                    uy,
                    wy,
                )
            };
        }
    }
    if let Some(next) = next {
        for q in prefetched..m {
            prefetch(crop.row(next, q, lanes), Cache::L1);
        }
    }
}

/// The two rows a canvas row interpolates between.
#[derive(Clone, Copy)]
enum Neighbours<'a> {
    /// Kept rows of the patch (`None`: the zero border).
    Loaded(Option<&'a [f32]>, Option<&'a [f32]>),
    /// Rows of ones (`false`: the zero border), for the weight canvas.
    Ones(bool, bool),
}

/// A row's column fractions: the same in every lane, or one per lane of the output row.
#[derive(Clone, Copy)]
enum Fractions<'a> {
    Uniform(f32, f32),
    Tables(&'a [f32], &'a [f32]),
}

/// Adds one output row: lane `t` of `out` gains [`crate::kernel::Weights::apply`] of its four
/// neighbours, lane `start + t` (left) and `start + lanes + t` (right) of the upper and lower
/// rows, with `+0.0` where a neighbour lies outside its row or the row is the border.
///
/// # Safety
/// The CPU supports `I`; `blocks` were made by [`blocks`] for `out.len()` lanes, this `start`
/// and `lanes`, and rows of the length of the given ones; table fractions have `out.len()`
/// entries.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn row<I: Isa>(
    out: &mut [f32],
    rows: Neighbours<'_>,
    start: isize,
    lanes: usize,
    blocks: &[Block<I::M>],
    fractions: Fractions<'_>,
    uy: f32,
    wy: f32,
) {
    // SAFETY: the CPU supports `I` (the caller's contract) for every operation below. Loads:
    // `left` admits lane `j` of a block only where `start + at + j` is inside the row, `right`
    // only where `start + lanes + at + j` is, so a load reads inside the row's slice and
    // `wrapping_offset` only forms the address; the border row and the ones load nothing.
    // Table loads and the output's load and store admit lanes `at + j < out.len()` only, and
    // the tables have `out.len()` entries.
    unsafe {
        let none = I::none();
        let dangling = std::ptr::NonNull::<f32>::dangling().as_ptr().cast_const();
        let (uy_v, wy_v) = (I::splat(uy), I::splat(wy));
        let zero = I::splat(0.0);
        // The uniform case's four weights, the same for every block (unused with tables).
        let uniform = match fractions {
            Fractions::Uniform(ux, wx) => {
                let w = crate::kernel::Weights::from_factors(ux, wx, uy, wy);
                [I::splat(w.a), I::splat(w.b), I::splat(w.c), I::splat(w.d)]
            }
            Fractions::Tables(..) => [zero; 4],
        };
        let pointer = |row: Option<&[f32]>| row.map_or((dangling, false), |r| (r.as_ptr(), true));
        let (top, bottom) = match rows {
            Neighbours::Loaded(top, bottom) => (pointer(top), pointer(bottom)),
            Neighbours::Ones(top, bottom) => ((dangling, top), (dangling, bottom)),
        };
        let ones = matches!(rows, Neighbours::Ones(..));
        let out_ptr = out.as_mut_ptr();
        for b in blocks {
            let on = |inside: bool, mask: I::M| if inside { mask } else { none };
            let (l_top, r_top) = (on(top.1, b.left), on(top.1, b.right));
            let (l_bottom, r_bottom) = (on(bottom.1, b.left), on(bottom.1, b.right));
            let [i00, i01, i10, i11] = if ones {
                [
                    I::ones(l_top),
                    I::ones(r_top),
                    I::ones(l_bottom),
                    I::ones(r_bottom),
                ]
            } else {
                // The border row loads nothing: a masked load with no lane on still costs a
                // fault-suppression assist (hundreds of cycles) when its address is unmapped.
                let left = start + b.at as isize;
                let right = left + lanes as isize;
                let pair = |(row, inside): (*const f32, bool), l: I::M, r: I::M| {
                    if inside {
                        [
                            I::load(l, row.wrapping_offset(left)),
                            I::load(r, row.wrapping_offset(right)),
                        ]
                    } else {
                        [zero, zero]
                    }
                };
                let [i00, i01] = pair(top, l_top, r_top);
                let [i10, i11] = pair(bottom, l_bottom, r_bottom);
                [i00, i01, i10, i11]
            };
            let [a, bw, c, d] = match fractions {
                Fractions::Uniform(..) => uniform,
                Fractions::Tables(ux, wx) => {
                    let ux = I::load(b.out, ux.as_ptr().wrapping_add(b.at));
                    let wx = I::load(b.out, wx.as_ptr().wrapping_add(b.at));
                    [
                        I::mul(ux, uy_v),
                        I::mul(wx, uy_v),
                        I::mul(ux, wy_v),
                        I::mul(wx, wy_v),
                    ]
                }
            };
            // fma(d, i11, fma(c, i10, fma(a, i00, b·i01))), as `Weights::apply`.
            let v = I::fmadd(d, i11, I::fmadd(c, i10, I::fmadd(a, i00, I::mul(bw, i01))));
            let o = out_ptr.wrapping_add(b.at);
            if b.full {
                I::store_full(o, I::add(I::load_full(o), v));
            } else {
                I::store(b.out, o, I::add(I::load(b.out, o), v));
            }
        }
    }
}

mod scalar;
pub(crate) use scalar::Scalar;

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::Weights;

    /// Lanes of a bordered patch: kept pixel `(r - 1, c - 1)` at `(r, c)`, zero on the border.
    fn bordered(patch: &[f32], crop: Crop, lanes: usize, r: i64, c: i64, lane: usize) -> f32 {
        let m = crop.kept as i64;
        if r < 1 || r > m || c < 1 || c > m {
            return 0.0;
        }
        let (q, col) = ((r - 1) as usize, (c - 1) as usize);
        crop.row(patch, q, lanes)[col * lanes + lane]
    }

    /// Places one patch with `I` and checks every lane against `Weights::apply` on the bordered
    /// patch, for uniform and per-column fractions and every first column and column range.
    fn check<I: Isa>(lanes: usize) {
        let (size, kept, start, pad) = (9, 6, 1, 4);
        let crop = Crop { size, kept, start };
        let patch: Vec<f32> = (0..size * size * lanes)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 8.0)
            .collect();
        let next = patch.clone();
        let width = 12;
        let rows = Span { start: 3, end: 11 };
        let shift_y = 0.375_f32;
        let ux_cols: Vec<f32> = (0..width).map(|j| 0.25 + j as f32 / 64.0).collect();
        let wx_cols: Vec<f32> = ux_cols.iter().map(|u| 1.0 - u).collect();
        let per_lane = |t: &[f32]| t.iter().flat_map(|&v| vec![v; lanes]).collect::<Vec<f32>>();
        let (ux_lanes, wx_lanes) = (per_lane(&ux_cols), per_lane(&wx_cols));
        for uniform in [true, false] {
            for first in 0..=kept {
                for (c0, c1) in [(0, 7), (2, 5), (0, 1), (5, 12), (0, 12)] {
                    let ncols = c1 - c0;
                    let columns = if uniform {
                        Columns::Uniform {
                            ux: 0.625,
                            wx: 0.375,
                        }
                    } else {
                        Columns::Tables {
                            ux: &ux_cols[..ncols],
                            wx: &wx_cols[..ncols],
                            ux_lanes: &ux_lanes[..ncols * lanes],
                            wx_lanes: &wx_lanes[..ncols * lanes],
                        }
                    };
                    let height = rows.end;
                    let mut image = vec![0.5_f32; height * width * lanes];
                    let mut weights = vec![0.25_f32; height * width];
                    let mut scratch = Blocks::<I>::new();
                    let placement = Placement {
                        patch: Some(&patch),
                        next: Some(&next),
                        crop,
                        columns,
                        first,
                        rows,
                        shift_y,
                        pad,
                        cols: Span { start: c0, end: c1 },
                        band_top: 0,
                        width,
                        image: Some(&mut image),
                        weights: Some(&mut weights),
                    };
                    // SAFETY: the caller checked that the CPU supports `I`.
                    unsafe { place::<I>(placement, lanes, &mut scratch) };
                    for y in 0..height {
                        for x in 0..width {
                            let inside = rows.start <= y && y < rows.end && c0 <= x && x < c1;
                            let (y0, wy) = sample_axis(y, shift_y);
                            let r = y0 + 1 - pad as i64;
                            let j = x.saturating_sub(c0);
                            let (ux, wx) = if uniform {
                                (0.625, 0.375)
                            } else {
                                (ux_cols[j], wx_cols[j])
                            };
                            let w = Weights::from_factors(ux, wx, 1.0 - wy, wy);
                            let c = (first + j) as i64;
                            let one = |rr: i64, cc: i64| {
                                f32::from(
                                    rr >= 1 && rr <= kept as i64 && cc >= 1 && cc <= kept as i64,
                                )
                            };
                            let expected_w = if inside {
                                0.25 + w.apply(
                                    one(r, c),
                                    one(r, c + 1),
                                    one(r + 1, c),
                                    one(r + 1, c + 1),
                                )
                            } else {
                                0.25
                            };
                            let got_w = weights[y * width + x];
                            assert_eq!(got_w.to_bits(), expected_w.to_bits(), "weights ({y}, {x})");
                            for lane in 0..lanes {
                                let v = |rr, cc| bordered(&patch, crop, lanes, rr, cc, lane);
                                let expected = if inside {
                                    0.5 + w.apply(
                                        v(r, c),
                                        v(r, c + 1),
                                        v(r + 1, c),
                                        v(r + 1, c + 1),
                                    )
                                } else {
                                    0.5
                                };
                                let got = image[(y * width + x) * lanes + lane];
                                assert_eq!(
                                    got.to_bits(),
                                    expected.to_bits(),
                                    "uniform={uniform} first={first} cols={c0}..{c1} ({y}, {x}) lane {lane}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn scalar_kernel_matches_the_bordered_definition() {
        check::<Scalar>(1);
        check::<Scalar>(2);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_kernels_match_the_bordered_definition() {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            check::<Avx2>(1);
            check::<Avx2>(2);
        } else {
            eprintln!("skipped AVX2: this CPU lacks AVX2 or FMA");
        }
        if is_x86_feature_detected!("avx512f") {
            check::<Avx512>(1);
            check::<Avx512>(2);
        } else {
            eprintln!("skipped AVX-512: this CPU lacks AVX-512F");
        }
    }
}
