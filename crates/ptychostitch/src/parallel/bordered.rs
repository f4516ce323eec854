//! The portable kernel: a patch's kept rows copied into a bordered buffer, rows interpolated.

#[allow(unused_imports)]
use super::*;

/// Per-worker buffers, allocated once per worker and run.
pub(super) struct Scratch {
    /// Zero-bordered copy of the kept patch: `(m+2)` rows of `(m+2)·LANES` lanes.
    pub(super) patch: Vec<f32>,
    /// Zero-bordered patch of ones for the weight canvas: `(m+2)²`.
    pub(super) ones: Vec<f32>,
    /// The footprint's column table: left neighbours, `1 − wx` and `wx`.
    pub(super) cols: Axis,
    /// Its two factor tables with every entry repeated once per lane.
    pub(super) ux_lanes: Vec<f32>,
    pub(super) wx_lanes: Vec<f32>,
    /// True when every column of the footprint has the same `ux` and `wx` (bit for bit): then a
    /// row's four weights are the same for every pixel and are computed once per row.
    pub(super) uniform: bool,
}

impl Scratch {
    pub(super) fn new(geometry: &Geometry, lanes_per_pixel: usize) -> Self {
        let width = geometry.kept() + 2;
        let mut ones = vec![0.0; width * width];
        for r in 1..width - 1 {
            ones[r * width + 1..(r + 1) * width - 1].fill(1.0);
        }
        Self {
            patch: vec![0.0; width * width * lanes_per_pixel],
            ones,
            cols: Axis::with_capacity(width + 1),
            ux_lanes: Vec::with_capacity((width + 1) * lanes_per_pixel),
            wx_lanes: Vec::with_capacity((width + 1) * lanes_per_pixel),
            uniform: false,
        }
    }

    /// The column tables with an entry per lane: `ux_lanes`/`wx_lanes`, or `ux`/`wx` themselves
    /// when a pixel is one lane.
    #[inline(always)]
    pub(super) fn lane_tables(&self, lanes_per_pixel: usize) -> (&[f32], &[f32]) {
        if lanes_per_pixel == 1 {
            (&self.cols.u, &self.cols.w)
        } else {
            (&self.ux_lanes, &self.wx_lanes)
        }
    }

    /// Fills the column tables for a footprint; returns the first column's index when the
    /// columns are consecutive (always, except where `f32` rounding skips or repeats a sample).
    /// Inlined so that its `floor` compiles to one instruction in the AVX2 kernel.
    #[inline(always)]
    pub(super) fn columns(
        &mut self,
        cols: Span,
        shift: f32,
        pad: usize,
        lanes_per_pixel: usize,
    ) -> Option<usize> {
        self.cols.fill(cols, shift, pad);
        self.uniform = self.cols.uniform();
        if lanes_per_pixel > 1 && !self.uniform {
            self.ux_lanes.clear();
            self.wx_lanes.clear();
            for (&u, &w) in self.cols.u.iter().zip(&self.cols.w) {
                for _ in 0..lanes_per_pixel {
                    self.ux_lanes.push(u);
                    self.wx_lanes.push(w);
                }
            }
        }
        self.cols.consecutive
    }
}

/// What every band of one run shares.
pub(super) struct Context<'g, 'p, 's, T> {
    pub(super) geometry: &'g Geometry,
    pub(super) patches: Option<ArrayView3<'p, T>>,
    pub(super) selection: Selection<'s>,
    pub(super) region: Region,
    pub(super) clear: bool,
    pub(super) normalise: bool,
    pub(super) kernel: Kernel,
}

impl<T: Sample> Context<'_, '_, '_, T> {
    pub(super) fn process(&self, band: &mut Band<'_, T>, scratch: &mut Scratch) {
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
    pub(super) fn process_avx512(&self, band: &mut Band<'_, T>, scratch: &mut Scratch) {
        // SAFETY: this function runs only where the CPU has AVX-512F (`process`).
        unsafe { self.band::<crate::direct::Avx512>(band, scratch, true) };
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn process_avx2(&self, band: &mut Band<'_, T>, scratch: &mut Scratch) {
        // SAFETY: this function runs only where the CPU has AVX2 and FMA (`process`).
        unsafe { self.band::<crate::direct::Avx2>(band, scratch, true) };
    }

    pub(super) fn process_portable(&self, band: &mut Band<'_, T>, scratch: &mut Scratch) {
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
    pub(super) unsafe fn band<I: Isa>(
        &self,
        band: &mut Band<'_, T>,
        scratch: &mut Scratch,
        direct: bool,
    ) {
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
                        ux: scratch.cols.u[0],
                        wx: scratch.cols.w[0],
                    }
                } else {
                    let (ux_lanes, wx_lanes) = scratch.lane_tables(lanes_per_pixel);
                    Columns::Tables {
                        ux: &scratch.cols.u,
                        wx: &scratch.cols.w,
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
pub(super) fn bordered_row(y: usize, shift: f32, pad: usize) -> usize {
    (sample_axis(y, shift).0 + 1 - pad as i64) as usize
}

/// Asks the CPU to start loading patch `k`'s kept rows (if it exists) into L2 while patch
/// `k - 1` is being placed. Reading the kept rows, short rows at a long stride, is what bounds
/// the fast path. Measured at n = 10,000 on the bench-grid scan, 2 threads (`cargo run --release
/// --example timing`): shift_and_sum 7.3 ms without prefetch, 7.4 ms prefetching into L1 (T0:
/// the prefetches then compete with the kernel's own loads for L1 fill buffers), 4.5 ms into L2
/// (T2); one or two patches ahead made no difference.
#[inline(always)]
pub(super) fn prefetch_kept_rows<T: Sample>(crop: Crop, all: &[T], k: usize, stack_len: usize) {
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
pub(super) fn copy_short(dst: &mut [f32], src: &[f32]) {
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
pub(super) fn place_row<const L: usize>(
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
            let w = Weights::from_factors(scratch.cols.u[0], scratch.cols.w[0], uy, wy);
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
pub(super) fn row_regular<const L: usize>(
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
pub(super) fn row_uniform<const L: usize>(
    out: &mut [f32],
    top: &[f32],
    bottom: &[f32],
    w: Weights,
) {
    let len = out.len();
    let (i00, i01) = (&top[..len], &top[L..L + len]);
    let (i10, i11) = (&bottom[..len], &bottom[L..L + len]);
    for t in 0..len {
        out[t] += w.apply(i00[t], i01[t], i10[t], i11[t]);
    }
}

/// One canvas row of one patch for any column table (the rare irregular case).
#[inline(always)]
pub(super) fn row_gather<const L: usize>(
    out: &mut [f32],
    top: &[f32],
    bottom: &[f32],
    tables: &Scratch,
    uy: f32,
    wy: f32,
) {
    for (j, pixel) in out.chunks_exact_mut(L).enumerate() {
        let c = tables.cols.neighbour[j];
        let w = Weights::from_factors(tables.cols.u[j], tables.cols.w[j], uy, wy);
        for (lane, v) in pixel.iter_mut().enumerate() {
            let (a, b) = (c * L + lane, (c + 1) * L + lane);
            *v += w.apply(top[a], top[b], bottom[a], bottom[b]);
        }
    }
}
