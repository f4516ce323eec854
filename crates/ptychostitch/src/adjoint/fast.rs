//! The fast vector–Jacobian product: gathers over each patch's footprint, one patch per task.
//!
//! Bit-identity with [`super::reference`] rests on these facts:
//! 1. **Patches.** The reference adds, to a kept pixel, `weight·G[y, x]` for every canvas pixel
//!    `(y, x)` that reads it, in row-major order. Along one axis the canvas coordinates that
//!    read kept index `q` are those whose sample's integer part is `q − 1` (right/lower
//!    neighbour, factor `w`) followed by those whose integer part is `q` (factor `1 − w`):
//!    `floor(c − a)` never decreases with `c`. Walking those rows, and inside each row those
//!    columns, visits the same terms in the same order; each weight is the same single `f32`
//!    product ([`crate::kernel::Weights`]). Where a neighbour column lies off the canvas the
//!    vectorised loop adds `(0·f)·0 = +0`, which leaves a sum that started at `+0.0` unchanged.
//! 2. **Offsets.** Both paths add the same terms ([`crate::kernel::d_dwx`], `d_dwy` of the same
//!    four neighbours) for the same pixels (those that read the kept patch: the footprint) into
//!    [`ShiftGradient`]'s slots by canvas column, row by row; the fast path rotates the eight
//!    slots to the row's first column instead of taking a remainder per term.
//! 3. Every patch's cotangent and sums depend on that patch alone, so any split of the patches
//!    across threads gives the same bits.

use crate::error::Result;
use crate::geometry::{Geometry, Span};
use crate::kernel::{SHIFT_SLOTS, ShiftGradient, d_dwx, d_dwy};
use crate::memory::try_zeroed_vec;
use crate::parallel::{Axis, Schedule, copy_kept_rows, for_each_piece, workers_for};
use crate::sample::{Sample, lanes_mut};
use ndarray::ArrayView3;

/// What the translated patches are: the caller's stack, or the ones of the weight canvas.
#[derive(Clone, Copy)]
pub(crate) enum Source<'p, T> {
    Patches(ArrayView3<'p, T>),
    /// Patches of ones (only with `T = f32`, one lane).
    Ones,
}

/// See [`super::reference::translate_vjp`]; the same results, bit for bit.
pub(crate) fn translate_vjp<T: Sample>(
    g: &Geometry,
    source: Source<'_, T>,
    cot: &[f32],
    want_patches: bool,
    want_offsets: bool,
    schedule: Schedule,
) -> Result<(Option<Vec<T>>, Vec<ShiftGradient>)> {
    let (count, n, l) = (g.len(), g.patch_size(), T::LANES);
    let per_patch = n * n * l;
    // Allocated zeroed in its final type (fresh pages: no memset, no copy afterwards).
    let mut grads = if want_patches {
        Some(try_zeroed_vec::<T>(count * n * n, || {
            "the patches' cotangent".into()
        })?)
    } else {
        None
    };
    let mut sums = crate::memory::try_filled_vec(count, ShiftGradient::default(), || {
        "the offsets' gradients".into()
    })?;
    let pixels = count * (g.kept() + 1) * (g.kept() + 1);
    let workers = workers_for(schedule.threads, schedule.min_pixels_per_worker, pixels);
    let chunk = count
        .div_ceil(if workers <= 1 { 1 } else { workers * 8 })
        .max(1);

    // Pieces: consecutive patches with their slices of the outputs.
    let mut pieces = Vec::new();
    let mut grad_rest = grads.as_deref_mut().map(lanes_mut);
    for (i, sum_chunk) in sums.chunks_mut(chunk).enumerate() {
        let len = sum_chunk.len();
        let grad_chunk = grad_rest.take().map(|rest| {
            let (head, tail) = rest.split_at_mut(len * per_patch);
            grad_rest = Some(tail);
            head
        });
        pieces.push((i * chunk, sum_chunk, grad_chunk));
    }
    let context = Context {
        g,
        source,
        cot,
        want_offsets,
        avx2: schedule.simd.uses_avx2(),
    };
    for_each_piece(
        workers,
        pieces,
        || Scratch::new(g, l, matches!(source, Source::Ones)),
        |(first, sum_chunk, mut grad_chunk), scratch| {
            for (i, sum) in sum_chunk.iter_mut().enumerate() {
                let grad = grad_chunk
                    .as_deref_mut()
                    .map(|all| &mut all[i * per_patch..(i + 1) * per_patch]);
                *sum = context.patch(first + i, grad, scratch);
            }
        },
    );
    Ok((grads, sums))
}

/// Per-worker tables and buffers, `O(m²)`.
struct Scratch {
    /// Zero-bordered copy of the kept patch: `(m+2)` rows of `(m+2)·LANES` lanes.
    bordered: Vec<f32>,
    /// One axis' tables over the footprint: bordered index of the left/upper neighbour,
    /// `1 − w` and `w`.
    cols: Gather,
    rows: Gather,
    /// Column tables repeated once per lane.
    u_lanes: Vec<f32>,
    w_lanes: Vec<f32>,
    /// One kept row of the patch cotangent.
    acc: Vec<f32>,
    /// One row of offset terms.
    dwx: Vec<f32>,
    dwy: Vec<f32>,
}

/// A footprint axis's table ([`Axis`], shared with the forward) and, per kept index, where its
/// readers start: the gather form the patches' cotangent needs.
#[derive(Default)]
struct Gather {
    table: Axis,
    /// `starts[v]`: the first footprint index whose neighbour is at least `v` (`v` in `0..=m+1`).
    starts: Vec<usize>,
}

impl std::ops::Deref for Gather {
    type Target = Axis;
    fn deref(&self) -> &Axis {
        &self.table
    }
}

impl Gather {
    #[inline(always)]
    fn fill(&mut self, span: Span, shift: f32, pad: usize, kept: usize) {
        self.table.fill(span, shift, pad);
        self.starts.clear();
        let mut j = 0;
        for v in 0..=kept + 1 {
            while j < self.neighbour.len() && self.neighbour[j] < v {
                j += 1;
            }
            self.starts.push(j);
        }
    }

    /// Footprint indices that read kept index `q`: `(index, factor)`, in coordinate order.
    #[inline(always)]
    fn readers(&self, q: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let lower = (self.starts[q]..self.starts[q + 1]).map(|j| (j, self.w[j]));
        let upper = (self.starts[q + 1]..self.starts[q + 2]).map(|j| (j, self.u[j]));
        lower.chain(upper)
    }

    /// True when footprint index `j` reads neighbours `j` and `j + 1` for every `j` in `0..=m`.
    fn regular(&self, kept: usize) -> bool {
        self.neighbour.len() == kept + 1 && self.consecutive == Some(0)
    }
}

impl Scratch {
    /// Scratch for one worker; the bordered patch holds the ones of the weight canvas already
    /// when `ones` (they never change), and its border stays zero (never written).
    fn new(g: &Geometry, l: usize, ones: bool) -> Self {
        let width = g.kept() + 2;
        let mut bordered = vec![0.0; width * width * l];
        if ones {
            for r in 1..width - 1 {
                bordered[r * width + 1..(r + 1) * width - 1].fill(1.0);
            }
        }
        Self {
            bordered,
            cols: Gather::default(),
            rows: Gather::default(),
            u_lanes: Vec::with_capacity(width * l),
            w_lanes: Vec::with_capacity(width * l),
            acc: vec![0.0; g.kept() * l],
            dwx: vec![0.0; width * l],
            dwy: vec![0.0; width * l],
        }
    }
}

struct Context<'a, 'p, T> {
    g: &'a Geometry,
    source: Source<'p, T>,
    cot: &'a [f32],
    want_offsets: bool,
    avx2: bool,
}

impl<T: Sample> Context<'_, '_, T> {
    fn patch(&self, k: usize, grad: Option<&mut [f32]>, scratch: &mut Scratch) -> ShiftGradient {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: `avx2` is only true when `Simd::uses_avx2` found AVX2 and FMA on this CPU
            // with `is_x86_feature_detected!`.
            return unsafe { self.patch_avx2(k, grad, scratch) };
        }
        self.patch_portable(k, grad, scratch)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn patch_avx2(
        &self,
        k: usize,
        grad: Option<&mut [f32]>,
        scratch: &mut Scratch,
    ) -> ShiftGradient {
        self.patch_body(k, grad, scratch)
    }

    fn patch_portable(
        &self,
        k: usize,
        grad: Option<&mut [f32]>,
        scratch: &mut Scratch,
    ) -> ShiftGradient {
        self.patch_body(k, grad, scratch)
    }

    #[inline(always)]
    fn patch_body(&self, k: usize, grad: Option<&mut [f32]>, s: &mut Scratch) -> ShiftGradient {
        let g = self.g;
        let l = T::LANES;
        let (pad, m, side) = (g.pad(), g.kept(), g.side());
        let fp = g.footprints()[k];
        let [ax, ay] = g.shifts()[k];
        let mut sum = ShiftGradient::default();
        if fp.rows.is_empty() || fp.cols.is_empty() {
            return sum;
        }
        s.cols.fill(fp.cols, ax, pad, m);
        s.rows.fill(fp.rows, ay, pad, m);
        let ncols = fp.cols.len();
        s.u_lanes.clear();
        s.w_lanes.clear();
        for j in 0..ncols {
            for _ in 0..l {
                s.u_lanes.push(s.cols.u[j]);
                s.w_lanes.push(s.cols.w[j]);
            }
        }

        if let Some(grad) = grad {
            self.patch_cotangent(fp.rows, fp.cols, grad, s);
        }
        if !self.want_offsets {
            return sum;
        }

        // The zero-bordered kept patch (bordered index i holds kept index i - 1), as the
        // forward copies it; the ones of the weight canvas are there from the start.
        let width = m + 2;
        let row_lanes = width * l;
        if let Source::Patches(stack) = self.source {
            copy_kept_rows(g, stack, stack.as_slice(), k, 1, m, &mut s.bordered);
        }

        let len = ncols * l;
        let base = (fp.cols.start * l) % SHIFT_SLOTS;
        // Consecutive neighbours (the common case): flat loops over lanes that vectorise.
        let consecutive = s.cols.consecutive;
        for (jy, y) in (fp.rows.start..fp.rows.end).enumerate() {
            let (r, uy, wy) = (s.rows.neighbour[jy], s.rows.u[jy], s.rows.w[jy]);
            let top = &s.bordered[r * row_lanes..(r + 1) * row_lanes];
            let bottom = &s.bordered[(r + 1) * row_lanes..(r + 2) * row_lanes];
            if let Some(first) = consecutive {
                let (t0, t1) = (&top[first * l..][..len], &top[(first + 1) * l..][..len]);
                let (b0, b1) = (
                    &bottom[first * l..][..len],
                    &bottom[(first + 1) * l..][..len],
                );
                let (ux, wx) = (&s.u_lanes[..len], &s.w_lanes[..len]);
                let (dwx, dwy) = (&mut s.dwx[..len], &mut s.dwy[..len]);
                for t in 0..len {
                    dwx[t] = d_dwx(uy, wy, t0[t], t1[t], b0[t], b1[t]);
                    dwy[t] = d_dwy(ux[t], wx[t], t0[t], t1[t], b0[t], b1[t]);
                }
            } else {
                for j in 0..ncols {
                    let c = s.cols.neighbour[j];
                    let (ux, wx) = (s.cols.u[j], s.cols.w[j]);
                    for lane in 0..l {
                        let (i00, i01) = (top[c * l + lane], top[(c + 1) * l + lane]);
                        let (i10, i11) = (bottom[c * l + lane], bottom[(c + 1) * l + lane]);
                        s.dwx[j * l + lane] = d_dwx(uy, wy, i00, i01, i10, i11);
                        s.dwy[j * l + lane] = d_dwy(ux, wx, i00, i01, i10, i11);
                    }
                }
            }
            let at = (y * side + fp.cols.start) * l;
            sum.add_run(base, &self.cot[at..at + len], &s.dwx[..len], &s.dwy[..len]);
        }
        sum
    }

    /// The patch's cotangent: every kept pixel gathers `(f_x·f_y)·G` from the canvas pixels that
    /// read it, row-major (fact 1 of the module documentation).
    #[inline(always)]
    fn patch_cotangent(&self, rows: Span, cols: Span, grad: &mut [f32], s: &mut Scratch) {
        let g = self.g;
        let l = T::LANES;
        let (m, side, n, c0) = (g.kept(), g.side(), g.patch_size(), g.crop_start());
        let ncols = cols.len();
        let regular = s.cols.regular(m);
        for qr in 0..m {
            s.acc.fill(0.0);
            for (jy, fy) in s.rows.readers(qr) {
                let y = rows.start + jy;
                let at = (y * side + cols.start) * l;
                if regular {
                    // Footprint column j reads kept columns j - 1 (factor w) and j (factor 1 - w).
                    let (acc, gr) = (&mut s.acc[..m * l], &self.cot[at..at + (m + 1) * l]);
                    let (w, u) = (&s.w_lanes[..m * l], &s.u_lanes[l..(m + 1) * l]);
                    let (g_lo, g_hi) = (&gr[..m * l], &gr[l..(m + 1) * l]);
                    for t in 0..m * l {
                        acc[t] += (w[t] * fy) * g_lo[t];
                        acc[t] += (u[t] * fy) * g_hi[t];
                    }
                } else {
                    let row = &self.cot[at..at + ncols * l];
                    for qc in 0..m {
                        for (jx, fx) in s.cols.readers(qc) {
                            let weight = fx * fy;
                            for lane in 0..l {
                                s.acc[qc * l + lane] += weight * row[jx * l + lane];
                            }
                        }
                    }
                }
            }
            let dst = ((c0 + qr) * n + c0) * l;
            grad[dst..dst + m * l].copy_from_slice(&s.acc[..m * l]);
        }
    }
}
