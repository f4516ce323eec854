//! The fast extraction and its adjoint.
//!
//! - Forward: only the kept `N×N` window of each translated image is computed, one patch per
//!   task, with the reference's per-pixel function: the same bits.
//! - Images' cotangent: each image is split into row bands; a band walks its image's patches
//!   in order and, inside each, the window's pixels in row-major order, adding each weight times
//!   the cotangent to the image pixels of the band. Every image pixel therefore receives the
//!   reference's terms in the reference's order; the reference's other terms (outside the
//!   window, where the cotangent is zero) are `+0`, which leave a sum that started at `+0.0`
//!   unchanged.
//! - Offsets' cotangent: per patch, the reference's terms in the reference's order.

use super::{Extraction, image_lanes};
use crate::adjoint::Wrt;
use crate::error::Result;
use crate::kernel::{Convention, ShiftGradient, Weights};
use crate::kernel::{ShiftRun, d_dwx, d_dwy, image_corners, pixel};
use crate::memory::try_zeroed_vec;
use crate::parallel::{Schedule, Simd, for_each_piece, workers_for};
use crate::sample::{Sample, lanes_mut};
use ndarray::ArrayView3;

pub(crate) fn extract<T: Sample>(
    plan: &Extraction,
    images: ArrayView3<'_, T>,
    schedule: Schedule,
) -> Result<Vec<T>> {
    let (l, s, n, c) = (T::LANES, plan.side, plan.patch, plan.per_image);
    let count = plan.shifts.len();
    let per_patch = n * n * l;
    let mut out = try_zeroed_vec::<T>(count * n * n, || "the extracted patches".into())?;
    let workers = workers_for(
        schedule.threads,
        schedule.min_pixels_per_worker,
        count * n * n,
    );
    let all = image_lanes(images)?;
    let image = |b: usize| &all[b * s * s * l..(b + 1) * s * s * l];
    let pieces: Vec<(usize, &mut [f32])> = lanes_mut(&mut out)
        .chunks_mut(per_patch)
        .enumerate()
        .collect();
    for_each_piece(
        workers,
        pieces,
        || (),
        |(j, dst), _| {
            with_fma(schedule.simd, |fma| {
                patch_forward(plan, image(j / c), j, dst, fma)
            })
        },
    );
    Ok(out)
}

pub(crate) fn extract_vjp<T: Sample>(
    plan: &Extraction,
    images: ArrayView3<'_, T>,
    cot: &[f32],
    wrt: Wrt,
    schedule: Schedule,
) -> Result<(Option<Vec<T>>, Vec<ShiftGradient>)> {
    let (l, s, n, t, c) = (T::LANES, plan.side, plan.patch, plan.trim, plan.per_image);
    let count = plan.shifts.len();
    let b_count = plan.images();
    let workers = workers_for(
        schedule.threads,
        schedule.min_pixels_per_worker,
        count * n * n,
    );
    let mut grads = if wrt.patches {
        Some(try_zeroed_vec::<T>(b_count * s * s, || {
            "the images' cotangent".into()
        })?)
    } else {
        None
    };
    if let Some(grads) = grads.as_mut() {
        // Bands: enough pieces for every worker, none thinner than one row.
        let bands = (workers * 4).div_ceil(b_count).clamp(1, s);
        let mut pieces = Vec::new();
        for (b, image) in lanes_mut(grads).chunks_mut(s * s * l).enumerate() {
            let mut rest = image;
            let mut start = 0;
            for i in 0..bands {
                let end = s * (i + 1) / bands;
                let (head, tail) = rest.split_at_mut((end - start) * s * l);
                rest = tail;
                pieces.push((b, start, end, head));
                start = end;
            }
        }
        for_each_piece(
            workers,
            pieces,
            || (),
            |(b, top, bottom, band), _| {
                let in_band = |y: i64| (top as i64..bottom as i64).contains(&y);
                let mut cols = Vec::with_capacity(n);
                let mut rows = Vec::with_capacity(n);
                let mut factors = (Vec::with_capacity(n * l), Vec::with_capacity(n * l));
                for j in b * c..(b + 1) * c {
                    let [ax, ay] = plan.shifts[j];
                    // Each row's and column's sample once per patch (`kernel::corners` takes
                    // them per pixel).
                    cols.clear();
                    cols.extend((0..n).map(|q| plan.convention.sample_axis(t + q, ax, s)));
                    rows.clear();
                    rows.extend((0..n).map(|r| plan.convention.sample_axis(t + r, ay, s)));
                    let patch_cot = &cot[j * n * n * l..(j + 1) * n * n * l];
                    if consecutive(&rows) && consecutive(&cols) {
                        gather_patch(
                            band,
                            (top, bottom),
                            s,
                            l,
                            patch_cot,
                            (&rows, &cols),
                            &mut factors,
                        );
                        continue;
                    }
                    for (r, &(y0, wy)) in rows.iter().enumerate() {
                        if !(in_band(y0) || in_band(y0 + 1)) {
                            continue;
                        }
                        for (q, &(x0, wx)) in cols.iter().enumerate() {
                            let g = &patch_cot[(r * n + q) * l..][..l];
                            let w = Weights::new(wx, wy);
                            let four = [
                                (y0, x0, w.a),
                                (y0, x0 + 1, w.b),
                                (y0 + 1, x0, w.c),
                                (y0 + 1, x0 + 1, w.d),
                            ];
                            for (cy, cx, weight) in four {
                                if in_band(cy) && (0..s as i64).contains(&cx) {
                                    let dst = ((cy as usize - top) * s + cx as usize) * l;
                                    for (lane, v) in g.iter().enumerate() {
                                        band[dst + lane] += weight * v;
                                    }
                                }
                            }
                        }
                    }
                }
            },
        );
    }
    let mut sums = crate::memory::try_filled_vec(count, ShiftGradient::default(), || {
        "the offsets' gradients".into()
    })?;
    if wrt.offsets {
        let all = image_lanes(images)?;
        let pieces: Vec<(usize, &mut ShiftGradient)> = sums.iter_mut().enumerate().collect();
        for_each_piece(
            workers,
            pieces,
            || (),
            |(j, sum), _| {
                let image = &all[(j / c) * s * s * l..(j / c + 1) * s * s * l];
                with_fma(schedule.simd, |fma| {
                    patch_offsets(
                        plan,
                        image,
                        j,
                        &cot[j * n * n * l..(j + 1) * n * n * l],
                        sum,
                        fma,
                    )
                });
            },
        );
    }
    Ok((grads, sums))
}

/// A patch row's or column's sample: the first source pixel and the fraction.
type Sampled = (i64, f32);

/// A patch whose columns sample consecutive image columns, all with both corners inside the
/// image: each column's `wx` and `1 − wx` repeated per lane, and its first image column.
struct WholeRows {
    wx: Vec<f32>,
    ux: Vec<f32>,
    first: usize,
    side: usize,
    lanes: usize,
}

impl WholeRows {
    fn new(cols: &[Sampled], side: usize, l: usize) -> Option<Self> {
        let (&(first, _), &(last, _)) = (cols.first()?, cols.last()?);
        if !(consecutive(cols) && first >= 0 && (last as usize) + 1 < side) {
            return None;
        }
        let (mut wx, mut ux) = (
            Vec::with_capacity(cols.len() * l),
            Vec::with_capacity(cols.len() * l),
        );
        for &(_, f) in cols {
            for _ in 0..l {
                wx.push(f);
                ux.push(1.0 - f);
            }
        }
        Some(Self {
            wx,
            ux,
            first: first as usize,
            side,
            lanes: l,
        })
    }

    /// For image row `y0` (when it and the next lie in the image): the row's four corners as
    /// contiguous slices `i00, i01, i10, i11` over its lanes, and the columns' `(wx, 1 − wx)`.
    #[allow(clippy::type_complexity)]
    fn row<'a>(
        &'a self,
        image: &'a [f32],
        y0: i64,
    ) -> Option<([&'a [f32]; 4], (&'a [f32], &'a [f32]))> {
        if y0 < 0 || (y0 as usize) + 1 >= self.side {
            return None;
        }
        let (s, l, len) = (self.side, self.lanes, self.wx.len());
        let start = (y0 as usize * s + self.first) * l;
        let (top, bottom) = (&image[start..], &image[start + s * l..]);
        Some((
            [
                &top[..len],
                &top[l..l + len],
                &bottom[..len],
                &bottom[l..l + len],
            ],
            (&self.wx, &self.ux),
        ))
    }
}

/// Whether consecutive patch indices sample consecutive source pixels (one per index), as they
/// do unless rounding makes a sample repeat or skip one.
fn consecutive(samples: &[Sampled]) -> bool {
    samples.windows(2).all(|w| w[1].0 == w[0].0 + 1)
}

/// One patch's image-cotangent terms in the band `top..bottom` of its image, **gathered**: for
/// a patch whose rows and columns sample consecutive pixels ([`consecutive`]), image pixel
/// `(y, x)` receives `d·g` from the patch pixel whose corner `(y0, x0)` is `(y−1, x−1)`, then
/// `c·g` from `(y−1, x)`, `b·g` from `(y, x−1)` and `a·g` from `(y, x)`: the order in which the
/// row-major scatter of the reference adds them. Done as four passes along each image row
/// (each pixel still takes its four terms in that order), contiguous loops the compiler
/// vectorises; the same products, so the same bits.
fn gather_patch(
    band: &mut [f32],
    (top, bottom): (usize, usize),
    s: usize,
    l: usize,
    cot: &[f32],
    (rows, cols): (&[Sampled], &[Sampled]),
    (wx, ux): &mut (Vec<f32>, Vec<f32>),
) {
    let n = cols.len();
    let (Some(&(y_first, _)), Some(&(x_first, _))) = (rows.first(), cols.first()) else {
        return;
    };
    // Each column's `wx` and `1 − wx`, once per lane.
    wx.clear();
    ux.clear();
    for &(_, f) in cols {
        for _ in 0..l {
            wx.push(f);
            ux.push(1.0 - f);
        }
    }
    // Adds `(factor·w)·g` of patch columns `q` to image columns `start + q`, inside the image.
    let pass = |out: &mut [f32], start: i64, factor: &[f32], w: f32, g: &[f32]| {
        let (lo, hi) = (start.max(0), (start + n as i64).min(s as i64));
        if lo >= hi {
            return;
        }
        let (q0, len) = ((lo - start) as usize, (hi - lo) as usize);
        let out = &mut out[lo as usize * l..(lo as usize + len) * l];
        let factor = &factor[q0 * l..(q0 + len) * l];
        let g = &g[q0 * l..(q0 + len) * l];
        for ((o, &f), &v) in out.iter_mut().zip(factor).zip(g) {
            *o += (f * w) * v;
        }
    };
    for y in top..bottom {
        let out = &mut band[(y - top) * s * l..(y - top + 1) * s * l];
        // The patch row whose corner row is `y − 1` (its `c`, `d` terms), then `y` (`a`, `b`).
        let above = y as i64 - 1 - y_first;
        if (0..n as i64).contains(&above) {
            let (_, fy) = rows[above as usize];
            let g = &cot[above as usize * n * l..(above as usize + 1) * n * l];
            pass(out, x_first + 1, wx, fy, g);
            pass(out, x_first, ux, fy, g);
        }
        let at = y as i64 - y_first;
        if (0..n as i64).contains(&at) {
            let (_, fy) = rows[at as usize];
            let g = &cot[at as usize * n * l..(at as usize + 1) * n * l];
            pass(out, x_first + 1, wx, 1.0 - fy, g);
            pass(out, x_first, ux, 1.0 - fy, g);
        }
    }
}

/// Whether to run the AVX2 + FMA instances: every `mul_add` one instruction instead of a call to
/// `fmaf`, the same correctly rounded result.
fn with_fma<R>(simd: Simd, work: impl FnOnce(bool) -> R) -> R {
    work(cfg!(target_arch = "x86_64") && simd.uses_avx2())
}

/// Patch `j` of the image `img`: the kept window of the translated image.
fn patch_forward(plan: &Extraction, img: &[f32], j: usize, dst: &mut [f32], fma: bool) {
    #[cfg(target_arch = "x86_64")]
    if fma {
        // SAFETY: `fma` is true only where `Simd::uses_avx2` found AVX2 and FMA on this CPU with
        // `is_x86_feature_detected!`.
        return unsafe { patch_forward_fma(plan, img, j, dst) };
    }
    let _ = fma;
    patch_forward_body(plan, img, j, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn patch_forward_fma(plan: &Extraction, img: &[f32], j: usize, dst: &mut [f32]) {
    patch_forward_body(plan, img, j, dst)
}

#[inline(always)]
fn patch_forward_body(plan: &Extraction, img: &[f32], j: usize, dst: &mut [f32]) {
    let (s, n, t, l) = (
        plan.side,
        plan.patch,
        plan.trim,
        dst.len() / (plan.patch * plan.patch),
    );
    let conv = plan.convention;
    let [ax, ay] = plan.shifts[j];
    // The sample of each kept row and column, once per patch (the reference computes them per
    // pixel with the same function: the same values).
    let cols: Vec<(i64, f32)> = (0..n).map(|q| conv.sample_axis(t + q, ax, s)).collect();
    // Rows whose every pixel reads four corners inside the image: computed as arrays over the
    // row's lanes; the same products, so the same bits.
    let whole = WholeRows::new(&cols, s, l);
    for r in 0..n {
        let (y0, wy) = conv.sample_axis(t + r, ay, s);
        if let Some(([i00, i01, i10, i11], (wx, ux))) = whole.as_ref().and_then(|w| w.row(img, y0))
        {
            let lanes = n * l;
            let out = &mut dst[r * lanes..(r + 1) * lanes];
            // The convention's combination chosen once a row: an instance each, so that the
            // loop has neither a branch nor a call.
            let corners = [i00, i01, i10, i11];
            match conv {
                Convention::TensorFlow => {
                    interpolate_row(out, corners, (wx, ux), wy, Weights::apply)
                }
                Convention::Torch => {
                    interpolate_row(out, corners, (wx, ux), wy, Weights::apply_torch)
                }
            }
            continue;
        }
        for (q, &(x0, wx)) in cols.iter().enumerate() {
            let w = Weights::new(wx, wy);
            let at = (r * n + q) * l;
            for (lane, o) in dst[at..at + l].iter_mut().enumerate() {
                let px = |cy: i64, cx: i64| pixel(img, s, l, cy, cx, lane);
                *o = conv.apply(
                    w,
                    px(y0, x0),
                    px(y0, x0 + 1),
                    px(y0 + 1, x0),
                    px(y0 + 1, x0 + 1),
                );
            }
        }
    }
}

/// One row of interpolated values: `out[e] = apply(w, corners…)` with `w` from the lane's
/// column factors and the row's `wy`.
#[inline(always)]
fn interpolate_row(
    out: &mut [f32],
    [i00, i01, i10, i11]: [&[f32]; 4],
    (wx, ux): (&[f32], &[f32]),
    wy: f32,
    apply: impl Fn(Weights, f32, f32, f32, f32) -> f32,
) {
    let uy = 1.0 - wy;
    for (e, o) in out.iter_mut().enumerate() {
        let w = Weights::from_factors(ux[e], wx[e], uy, wy);
        *o = apply(w, i00[e], i01[e], i10[e], i11[e]);
    }
}

/// Patch `j`'s offset terms over its kept window, in the reference's order.
fn patch_offsets(
    plan: &Extraction,
    image: &[f32],
    j: usize,
    cot: &[f32],
    sum: &mut ShiftGradient,
    fma: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if fma {
        // SAFETY: as in `patch_forward`.
        return unsafe { patch_offsets_fma(plan, image, j, cot, sum) };
    }
    let _ = fma;
    patch_offsets_body(plan, image, j, cot, sum)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn patch_offsets_fma(
    plan: &Extraction,
    image: &[f32],
    j: usize,
    cot: &[f32],
    sum: &mut ShiftGradient,
) {
    patch_offsets_body(plan, image, j, cot, sum)
}

#[inline(always)]
fn patch_offsets_body(
    plan: &Extraction,
    image: &[f32],
    j: usize,
    cot: &[f32],
    sum: &mut ShiftGradient,
) {
    let (s, n, t) = (plan.side, plan.patch, plan.trim);
    let l = cot.len() / (n * n);
    let [ax, ay] = plan.shifts[j];
    // Each column's and row's sample once per patch, not once per pixel.
    let cols: Vec<(i64, f32)> = (0..n)
        .map(|q| plan.convention.sample_axis(t + q, ax, s))
        .collect();
    // One row's terms, whose slots `(x·L + lane) mod 8` are consecutive along a row: added as
    // runs (`ShiftGradient::add_run`), the same sums in the same order as one `add` per term.
    let mut run = ShiftRun::new(n * l);
    let on = |v: i64| (-1..s as i64).contains(&v);
    // Rows whose every pixel reads four corners inside the image: the terms as arrays over the
    // row's lanes, added as one run. The same products in the same order.
    let whole = WholeRows::new(&cols, s, l);
    let mut terms = [vec![0.0_f32; n * l], vec![0.0_f32; n * l]];
    for r in 0..n {
        let (y0, wy) = plan.convention.sample_axis(t + r, ay, s);
        if !on(y0) {
            continue;
        }
        if let Some(([i00, i01, i10, i11], (wx, ux))) =
            whole.as_ref().and_then(|w| w.row(image, y0))
        {
            run.flush(sum);
            let lanes = n * l;
            let uy = 1.0 - wy;
            let [dx, dy] = &mut terms;
            let (dx, dy) = (&mut dx[..lanes], &mut dy[..lanes]);
            for e in 0..lanes {
                dx[e] = d_dwx(uy, wy, i00[e], i01[e], i10[e], i11[e]);
                dy[e] = d_dwy(ux[e], wx[e], i00[e], i01[e], i10[e], i11[e]);
            }
            sum.add_run(t * l, &cot[r * lanes..(r + 1) * lanes], dx, dy);
            continue;
        }
        for (q, &(x0, wx)) in cols.iter().enumerate() {
            if !on(x0) {
                continue;
            }
            let inside = y0 >= 0 && x0 >= 0 && (y0 as usize) + 1 < s && (x0 as usize) + 1 < s;
            let g = &cot[(r * n + q) * l..][..l];
            for (lane, &g) in g.iter().enumerate() {
                let [i00, i01, i10, i11] = image_corners(image, (s, l), (y0, x0), lane, inside);
                run.push(
                    sum,
                    (t + q) * l + lane,
                    g,
                    d_dwx(1.0 - wy, wy, i00, i01, i10, i11),
                    d_dwy(1.0 - wx, wx, i00, i01, i10, i11),
                );
            }
        }
    }
    run.flush(sum);
}
