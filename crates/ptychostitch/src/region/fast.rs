//! The fast region reassembly and its adjoint: only each patch's footprint, samples in
//! parallel.
//!
//! A translated patch changes only the region pixels whose bilinear corners touch it: a
//! footprint of about `(N+1)²` pixels, found per axis from the sample positions (`O(P)` per
//! patch). Each worker takes whole samples: their regions, and their patches' cotangents, are
//! disjoint, so no sum crosses a worker and the bits never depend on the thread count. Within a
//! sample, channels are added in order and pixels visited in row-major order, as the reference
//! does, with [`crate::kernel`]'s arithmetic.

use super::{Inputs, Normalisation, RawGradients, Region, RegionWrt, WeightLanes, max_cotangent};
use crate::error::Result;
use crate::kernel::{
    Convention, Denominator, ShiftGradient, ShiftRun, Weights, corner_slices, d_dwx, d_dwy,
    lane_factors, region_cotangent, region_normalise, support_factor,
};
use crate::memory::try_zeroed_vec;
use crate::parallel::{for_each_piece, workers_for};
use crate::region::Numerator;
use crate::sample::{Sample, lanes_mut};

/// Whether the hot loops may run their AVX2 + FMA instances (every `mul_add` one instruction
/// instead of a call to `fmaf`; the same correctly rounded result either way).
fn fma_available(plan: &Region) -> bool {
    cfg!(target_arch = "x86_64") && plan.schedule.simd.uses_avx2()
}

/// `$name` compiled for AVX2 + FMA: the same body as `$body` (inlined), so the same bits.
macro_rules! fma_instance {
    ($name:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn $name<const L: usize, const TORCH: bool>($($arg: $ty),*) {
            $body::<L, TORCH>($($arg),*)
        }
    };
}

/// Runs `$body::<L, TORCH>` (or its FMA instance `$fma` where the CPU has AVX2 and FMA).
macro_rules! dispatch {
    ($body:ident, $fma:ident, $plan:expr, $l:expr, $conv:expr, ($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        if fma_available($plan) {
            // SAFETY: `fma_available` is true only where `is_x86_feature_detected!` found AVX2
            // and FMA on this CPU (`Simd::uses_avx2`).
            unsafe {
                match ($l, $conv) {
                    (1, Convention::TensorFlow) => $fma::<1, false>($($arg),*),
                    (1, Convention::Torch) => $fma::<1, true>($($arg),*),
                    (_, Convention::TensorFlow) => $fma::<2, false>($($arg),*),
                    (_, Convention::Torch) => $fma::<2, true>($($arg),*),
                }
            }
            return;
        }
        match ($l, $conv) {
            (1, Convention::TensorFlow) => $body::<1, false>($($arg),*),
            (1, Convention::Torch) => $body::<1, true>($($arg),*),
            (_, Convention::TensorFlow) => $body::<2, false>($($arg),*),
            (_, Convention::Torch) => $body::<2, true>($($arg),*),
        }
    }};
}

/// `$body` with `$form` bound to `g` as a value whose variant is known when compiling: its
/// common forms (`Add`, `Clamp`) get instances whose loops the compiler vectorises (the
/// `match` in `Denominator::apply` and `slope` folds away); the others run as they are.
macro_rules! with_denominator {
    ($g:expr, |$form:ident| $body:expr) => {{
        match $g {
            Denominator::Add(eps) => {
                let $form = Denominator::Add(eps);
                $body
            }
            Denominator::Clamp(eps) => {
                let $form = Denominator::Clamp(eps);
                $body
            }
            $form => $body,
        }
    }};
}

/// `$body` with the const `$L` = the run-time lane count `$l` (1 or 2).
macro_rules! for_lanes {
    ($l:expr, |$L:ident| $body:expr) => {{
        if $l == 1 {
            const $L: usize = 1;
            $body
        } else {
            const $L: usize = 2;
            $body
        }
    }};
}

/// One footprint coordinate: `(region coordinate, first patch index, fraction)`.
type Tap = (usize, i64, f32);

/// The region coordinates of one axis whose sample touches the patch, in increasing order:
/// `(coordinate, first patch index, fraction)`; the patch index is `floor(s) − origin`, in
/// `−1 ..= N − 1`.
fn footprint(conv: Convention, shift: f32, side: usize, origin: usize, n: usize) -> Vec<Tap> {
    let mut out = Vec::with_capacity(n + 2);
    for coord in 0..side {
        let (s0, frac) = conv.sample_axis(coord, shift, side);
        let k = s0 - origin as i64;
        if (-1..n as i64).contains(&k) {
            out.push((coord, k, frac));
        }
    }
    out
}

/// The four corners `(k, k+1) × (m, m+1)` of lane `lane` of an `n×n` patch, zero outside.
#[inline(always)]
fn corners(patch: &[f32], n: usize, l: usize, ky: i64, kx: i64, lane: usize) -> [f32; 4] {
    if ky >= 0 && kx >= 0 && (ky as usize) + 1 < n && (kx as usize) + 1 < n {
        // Inside: the four corners without a bounds test each.
        let at = (ky as usize * n + kx as usize) * l + lane;
        let below = at + n * l;
        return [patch[at], patch[at + l], patch[below], patch[below + l]];
    }
    let at = |y: i64, x: i64| {
        if (0..n as i64).contains(&y) && (0..n as i64).contains(&x) {
            patch[(y as usize * n + x as usize) * l + lane]
        } else {
            0.0
        }
    };
    [
        at(ky, kx),
        at(ky, kx + 1),
        at(ky + 1, kx),
        at(ky + 1, kx + 1),
    ]
}

/// Adds `w·value` to the four corners of lane `lane` that lie in the `n×n` patch.
#[inline(always)]
fn scatter(
    patch: &mut [f32],
    n: usize,
    l: usize,
    (ky, kx): (i64, i64),
    lane: usize,
    w: Weights,
    value: f32,
) {
    if ky >= 0 && kx >= 0 && (ky as usize) + 1 < n && (kx as usize) + 1 < n {
        let at = (ky as usize * n + kx as usize) * l + lane;
        let below = at + n * l;
        patch[at] += w.a * value;
        patch[at + l] += w.b * value;
        patch[below] += w.c * value;
        patch[below + l] += w.d * value;
        return;
    }
    let mut add = |y: i64, x: i64, v: f32| {
        if (0..n as i64).contains(&y) && (0..n as i64).contains(&x) {
            patch[(y as usize * n + x as usize) * l + lane] += v;
        }
    };
    add(ky, kx, w.a * value);
    add(ky, kx + 1, w.b * value);
    add(ky + 1, kx, w.c * value);
    add(ky + 1, kx + 1, w.d * value);
}

/// Adds sample `b`'s channels onto its numerator (`P²·l` lanes) and denominator (`P²`).
fn accumulate(
    plan: &Region,
    inputs: &Inputs<'_>,
    l: usize,
    b: usize,
    num: Option<&mut [f32]>,
    den: &mut [f32],
) {
    // One instance per lane count and convention, so the lane loop unrolls and the
    // convention's branch leaves the inner loop.
    dispatch!(
        accumulate_in,
        accumulate_fma,
        plan,
        l,
        plan.options.convention,
        (plan, inputs, b, num, den)
    )
}

fma_instance!(accumulate_fma, accumulate_in, (plan: &Region, inputs: &Inputs<'_>, b: usize, num: Option<&mut [f32]>, den: &mut [f32]));
fma_instance!(sample_vjp_fma, sample_vjp, (plan: &Region, inputs: &Inputs<'_>, piece: Piece<'_>, dnum: &[f32], dden: &[f32], wrt: RegionWrt));

/// [`Convention::apply`] with the convention known when compiling.
#[inline(always)]
fn combine<const TORCH: bool>(w: Weights, [a, b, c, d]: [f32; 4]) -> f32 {
    if TORCH {
        w.apply_torch(a, b, c, d)
    } else {
        w.apply(a, b, c, d)
    }
}

#[inline(always)]
fn accumulate_in<const L: usize, const TORCH: bool>(
    plan: &Region,
    inputs: &Inputs<'_>,
    b: usize,
    mut num: Option<&mut [f32]>,
    den: &mut [f32],
) {
    let (cs, n, p, q) = (plan.channels, plan.patch, plan.side, plan.origin);
    let conv = plan.options.convention;
    let weighted = plan.options.numerator == Numerator::Weighted;
    let m = n + 2;
    let (mut bp, mut bw) = (vec![0.0_f32; m * m * L], vec![0.0_f32; m * m * L]);
    let mut factors = (Vec::with_capacity(m * L), Vec::with_capacity(m * L));
    // Which weight `bw` holds.
    let mut copied: Option<usize> = None;
    for c in 0..cs {
        let j = b * cs + c;
        let [tx, ty] = plan.shifts[j];
        // No patches are read for the denominators alone.
        let patch = inputs
            .patches
            .get(j * n * n * L..(j + 1) * n * n * L)
            .unwrap_or(&[]);
        let k = inputs.weights.index(b, c, cs);
        let weight = &inputs.weights.values[k * n * n..(k + 1) * n * n];
        let cols = footprint(conv, tx, p, q, n);
        let rows = footprint(conv, ty, p, q, n);
        if regular(&rows) && regular(&cols) {
            if num.is_some() {
                bordered_patch::<L>(patch, n, &mut bp);
            }
            // The weight's copy serves every channel that shares it.
            if copied != Some(k) {
                bordered_weight::<L>(weight, n, &mut bw);
                copied = Some(k);
            }
            accumulate_rows::<L, TORCH>(
                weighted,
                p,
                n,
                (&rows, &cols),
                (&bp, &bw),
                num.as_deref_mut(),
                den,
                &mut factors,
            );
            continue;
        }
        for (y, ky, wy) in rows {
            let row = y * p;
            for &(x, kx, wx) in &cols {
                let w = Weights::new(wx, wy);
                let v = combine::<TORCH>(w, corners(weight, n, 1, ky, kx, 0));
                let at = row + x;
                if let Some(num) = num.as_deref_mut() {
                    let dst = &mut num[at * L..at * L + L];
                    for (lane, o) in dst.iter_mut().enumerate() {
                        let u = combine::<TORCH>(w, corners(patch, n, L, ky, kx, lane));
                        *o += if weighted { u * v } else { u };
                    }
                }
                den[at] += v;
            }
        }
    }
}

fn workers(plan: &Region) -> usize {
    let n1 = plan.patch + 1;
    workers_for(
        plan.schedule.threads,
        plan.schedule.min_pixels_per_worker,
        plan.samples * plan.channels * n1 * n1,
    )
}

/// Every region's denominator `Σ_c v_c`, `(B, P, P)`.
pub(crate) fn denominators(plan: &Region, weights: &WeightLanes<'_>) -> Result<Vec<f32>> {
    let p2 = plan.side * plan.side;
    let mut den = try_zeroed_vec::<f32>(plan.samples * p2, || "the regions' weights".into())?;
    let inputs = Inputs {
        patches: std::borrow::Cow::Borrowed(&[]),
        weights: WeightLanes {
            values: std::borrow::Cow::Borrowed(&weights.values),
            per_sample: weights.per_sample,
            per_channel: weights.per_channel,
        },
    };
    let pieces: Vec<_> = den.chunks_mut(p2).enumerate().collect();
    for_each_piece(
        workers(plan),
        pieces,
        || (),
        |(b, den), _| {
            accumulate(plan, &inputs, 1, b, None, den);
        },
    );
    Ok(den)
}

/// The numerators into `out` and the denominators, `(B, P, P)`.
fn sums<T: Sample>(plan: &Region, inputs: &Inputs<'_>) -> Result<(Vec<T>, Vec<f32>)> {
    let (l, p2) = (T::LANES, plan.side * plan.side);
    let mut out = try_zeroed_vec::<T>(plan.samples * p2, || "the regions".into())?;
    let mut den = try_zeroed_vec::<f32>(plan.samples * p2, || "the regions' weights".into())?;
    let pieces: Vec<_> = lanes_mut(&mut out)
        .chunks_mut(p2 * l)
        .zip(den.chunks_mut(p2))
        .enumerate()
        .collect();
    for_each_piece(
        workers(plan),
        pieces,
        || (),
        |(b, (num, den)), _| {
            accumulate(plan, inputs, l, b, Some(num), den);
        },
    );
    Ok((out, den))
}

/// Divides the numerators in `values` by the denominators, in place.
fn normalise(plan: &Region, values: &mut [f32], den: &[f32], l: usize, limit: f32, g: Denominator) {
    let support = plan.options.support.is_some();
    with_denominator!(g, |form| {
        for_lanes!(l, |L| normalise_in::<L>(values, den, support, limit, form))
    });
}

/// [`region_normalise`] for every pixel, with the lane count and (through
/// `with_denominator!`) the denominator's form known when compiling: a loop the compiler
/// vectorises.
#[inline(always)]
fn normalise_in<const L: usize>(
    values: &mut [f32],
    den: &[f32],
    support: bool,
    limit: f32,
    g: Denominator,
) {
    for (px, &d) in values.chunks_exact_mut(L).zip(den) {
        let mut num = [0.0_f32; L];
        num.copy_from_slice(px);
        region_normalise(&num, d, support_factor(support, d, limit), g, px);
    }
}

/// [`region_cotangent`] for every pixel of a sample (`cot`, `out`: its lanes; `den`: its
/// denominators), into `dnum` and `dden`, with the lane count and the denominator's form known
/// when compiling.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn quotient_in<const L: usize>(
    cot: &[f32],
    out: &[f32],
    den: &[f32],
    support: bool,
    limit: f32,
    g: Denominator,
    dnum: &mut [f32],
    dden: &mut [f32],
) {
    for ((((dn, dd), &d), c), o) in dnum
        .chunks_exact_mut(L)
        .zip(dden.iter_mut())
        .zip(den)
        .zip(cot.chunks_exact(L))
        .zip(out.chunks_exact(L))
    {
        *dd = region_cotangent(c, o, d, support_factor(support, d, limit), g, dn);
    }
}

pub(crate) fn reassemble<T: Sample>(plan: &Region, inputs: &Inputs<'_>) -> Result<Vec<T>> {
    let (mut out, den) = sums::<T>(plan, inputs)?;
    let Normalisation { limit, g, .. } = Normalisation::of(plan, &den)?;
    normalise(plan, lanes_mut(&mut out), &den, T::LANES, limit, g);
    Ok(out)
}

/// One sample's share of the cotangents.
struct Piece<'a> {
    b: usize,
    dpatches: Option<&'a mut [f32]>,
    dweights: Option<&'a mut [f32]>,
    sums: &'a mut [ShiftGradient],
}

/// `output`: the forward's regions for these inputs (their lanes), which spare recomputing the
/// numerators; only the denominators are summed again.
pub(crate) fn vjp<T: Sample>(
    plan: &Region,
    inputs: &Inputs<'_>,
    output: Option<&[f32]>,
    cot: &[f32],
    wrt: RegionWrt,
) -> Result<RawGradients<T>> {
    let (cs, n, p, l) = (plan.channels, plan.patch, plan.side, T::LANES);
    let conv = plan.options.convention;
    let mut recomputed: Vec<T> = Vec::new();
    let (den, normalisation) = match output {
        Some(_) => {
            let den = denominators(plan, &inputs.weights)?;
            let normalisation = Normalisation::of(plan, &den)?;
            (den, normalisation)
        }
        None => {
            let (mut regions, den) = sums::<T>(plan, inputs)?;
            let normalisation = Normalisation::of(plan, &den)?;
            let (limit, g) = (normalisation.limit, normalisation.g);
            normalise(plan, lanes_mut(&mut regions), &den, l, limit, g);
            recomputed = regions;
            (den, normalisation)
        }
    };
    let Normalisation { limit, g, argmax } = normalisation;
    let r: &[f32] = output.unwrap_or_else(|| crate::sample::lanes(&recomputed));
    // What the maximum's own change adds at its pixel (the regularised form only).
    let at_max = argmax.map(|i| (i, max_cotangent(plan, g, cot, r, &den, l)));

    let nn = n * n;
    let RawGradients {
        patches: mut dpatches,
        mut sums,
        weights: mut dweights,
    } = RawGradients::<T>::zeroed(plan, wrt)?;
    let mut dp_chunks = dpatches
        .as_deref_mut()
        .map(|d| lanes_mut(d).chunks_mut(cs * nn * l));
    let mut dw_chunks = dweights.as_deref_mut().map(|d| d.chunks_mut(cs * nn));
    let pieces: Vec<Piece<'_>> = sums
        .chunks_mut(cs)
        .enumerate()
        .map(|(b, sums)| Piece {
            b,
            dpatches: dp_chunks.as_mut().and_then(|it| it.next()),
            dweights: dw_chunks.as_mut().and_then(|it| it.next()),
            sums,
        })
        .collect();
    let scratch = || (vec![0.0_f32; p * p * l], vec![0.0_f32; p * p]);
    for_each_piece(workers(plan), pieces, scratch, |piece, (dnum, dden)| {
        let b = piece.b;
        let base = b * p * p;
        // The quotient rule for every pixel of this sample's region.
        let support = plan.options.support.is_some();
        let (cot, out, den) = (
            &cot[base * l..(base + p * p) * l],
            &r[base * l..(base + p * p) * l],
            &den[base..base + p * p],
        );
        with_denominator!(g, |form| {
            for_lanes!(l, |L| quotient_in::<L>(
                cot, out, den, support, limit, form, dnum, dden
            ))
        });
        if let Some((i, extra)) = at_max.filter(|&(i, _)| (base..base + p * p).contains(&i)) {
            dden[i - base] += extra;
        }
        let (dnum, dden) = (&dnum[..], &dden[..]);
        sample_vjp_dispatch(l, conv, (plan, inputs, piece, dnum, dden, wrt));
    });
    Ok(RawGradients {
        patches: dpatches,
        sums,
        weights: dweights,
    })
}

/// Whether a footprint is regular: consecutive region coordinates sample consecutive patch
/// indices (one coordinate per index), as they do unless rounding makes an index repeat or
/// skip.
fn regular(footprint: &[Tap]) -> bool {
    footprint
        .windows(2)
        .all(|w| w[1].0 == w[0].0 + 1 && w[1].1 == w[0].1 + 1)
}

/// One channel of a sample: its patch (`N²·L` lanes), its weight (`N²`) and its footprints.
struct Channel<'a> {
    patch: &'a [f32],
    weight: &'a [f32],
    /// Which weight it is (`WeightLanes::index`).
    weight_index: usize,
    rows: &'a [Tap],
    cols: &'a [Tap],
}

/// A zero-bordered copy into `out`: `N+2` rows of `(N+2)·L` lanes, row `r` holding source row
/// `r − 1` from lane `L` on (`interior(row, lanes)` fills those `N·L` lanes). It holds what
/// `corners` reads, zero outside.
fn bordered<const L: usize>(n: usize, out: &mut [f32], interior: impl Fn(usize, &mut [f32])) {
    let row_lanes = (n + 2) * L;
    out[..row_lanes].fill(0.0);
    out[(n + 1) * row_lanes..].fill(0.0);
    for r in 0..n {
        let row = &mut out[(r + 1) * row_lanes..(r + 2) * row_lanes];
        row[..L].fill(0.0);
        row[(n + 1) * L..].fill(0.0);
        interior(r, &mut row[L..(n + 1) * L]);
    }
}

/// [`bordered`] of a patch (`N²·L` lanes, interleaved as it is).
fn bordered_patch<const L: usize>(patch: &[f32], n: usize, out: &mut [f32]) {
    bordered::<L>(n, out, |r, dst| {
        dst.copy_from_slice(&patch[r * n * L..(r + 1) * n * L])
    });
}

/// [`bordered`] of a weight (`N²`), each value repeated for the `L` lanes.
fn bordered_weight<const L: usize>(weight: &[f32], n: usize, out: &mut [f32]) {
    bordered::<L>(n, out, |r, dst| {
        for (lanes, &v) in dst.chunks_exact_mut(L).zip(&weight[r * n..(r + 1) * n]) {
            lanes.fill(v);
        }
    });
}

/// [`accumulate_in`] for one channel whose footprints are [`regular`]: per footprint row, the
/// interpolated weight and patch as arrays over the row's lanes (contiguous corner slices of
/// the zero-bordered copies), added to the row's numerator and denominator. Each pixel takes
/// the same values in the same channel order: the same bits.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn accumulate_rows<const L: usize, const TORCH: bool>(
    weighted: bool,
    p: usize,
    n: usize,
    (rows, cols): (&[Tap], &[Tap]),
    (bp, bw): (&[f32], &[f32]),
    num: Option<&mut [f32]>,
    den: &mut [f32],
    factors: &mut (Vec<f32>, Vec<f32>),
) {
    let (Some(&(x_first, kx_first, _)), Some(_)) = (cols.first(), rows.first()) else {
        return;
    };
    let (width, row_lanes) = (cols.len(), (n + 2) * L);
    let lanes = width * L;
    let (fx, gx) = factors;
    lane_factors(cols.iter().map(|&(_, _, wx)| wx), L, (&mut *fx, &mut *gx));
    let (fx, gx) = (&fx[..lanes], &gx[..lanes]);
    let c0 = (kx_first + 1) as usize;
    let mut num = num;
    for &(y, ky, wy) in rows {
        let uy = 1.0 - wy;
        let top = (ky + 1) as usize * row_lanes + c0 * L;
        let at0 = y * p + x_first;
        let [q00, q01, q10, q11] = corner_slices(bw, top, row_lanes, L, lanes);
        if let Some(num) = num.as_deref_mut() {
            let [p00, p01, p10, p11] = corner_slices(bp, top, row_lanes, L, lanes);
            let out = &mut num[at0 * L..at0 * L + lanes];
            for e in 0..lanes {
                let w = Weights::from_factors(gx[e], fx[e], uy, wy);
                let u = combine::<TORCH>(w, [p00[e], p01[e], p10[e], p11[e]]);
                out[e] += if weighted {
                    u * combine::<TORCH>(w, [q00[e], q01[e], q10[e], q11[e]])
                } else {
                    u
                };
            }
        }
        let out = &mut den[at0..at0 + width];
        for (t, o) in out.iter_mut().enumerate() {
            let e = t * L;
            let w = Weights::from_factors(gx[e], fx[e], uy, wy);
            *o += combine::<TORCH>(w, [q00[e], q01[e], q10[e], q11[e]]);
        }
    }
}

/// Per-worker buffers of [`channel_rows`].
struct RowScratch {
    /// The patch, zero-bordered: `N+2` rows of `(N+2)·L` lanes (interleaved as the patch is).
    patch: Vec<f32>,
    /// The weight, zero-bordered, each value repeated for the `L` lanes: the same shape.
    weight: Vec<f32>,
    /// The weight, zero-bordered, one lane: `(N+2)²`.
    weight1: Vec<f32>,
    /// Which weight (`WeightLanes::index`) `weight` and `weight1` hold.
    weight_of: Option<usize>,
    /// `∂L/∂u` per footprint pixel, at `((ky+1)·(N+1) + kx+1)·L + lane`; zero elsewhere.
    du: Vec<f32>,
    /// Per patch column index `kx + 1` (`0 ..= N`), each repeated for the `L` lanes: `wx` and
    /// `1 − wx` of the footprint column that samples it (zero where none does).
    wx: Vec<f32>,
    ux: Vec<f32>,
    /// The same, once per column index.
    wx1: Vec<f32>,
    ux1: Vec<f32>,
    /// Per patch row index `ky + 1`: `wy`, `1 − wy`.
    wy: Vec<f32>,
    uy: Vec<f32>,
    /// One row's offset derivatives (`∂/∂wx`, `∂/∂wy`) of the patch per lane (their
    /// cotangents are the row of `du`), then the weight's per pixel (`cot`, `∂/∂wx`, `∂/∂wy`);
    /// and the lanes' `∂num·u` products.
    terms_u: [Vec<f32>; 2],
    terms_v: [Vec<f32>; 3],
    products: Vec<f32>,
}

impl RowScratch {
    fn new(n: usize, l: usize) -> Self {
        let m = n + 2;
        let row = |len: usize| [vec![0.0; len], vec![0.0; len], vec![0.0; len]];
        Self {
            patch: vec![0.0; m * m * l],
            weight: vec![0.0; m * m * l],
            weight1: vec![0.0; m * m],
            weight_of: None,
            du: vec![0.0; (n + 1) * (n + 1) * l],
            wx: vec![0.0; (n + 1) * l],
            ux: vec![0.0; (n + 1) * l],
            wx1: vec![0.0; n + 1],
            ux1: vec![0.0; n + 1],
            wy: vec![0.0; n + 1],
            uy: vec![0.0; n + 1],
            terms_u: [vec![0.0; m * l], vec![0.0; m * l]],
            terms_v: row(m),
            products: vec![0.0; m * l],
        }
    }
}

/// The per-pixel loop of [`sample_vjp`] for one channel whose footprints are [`regular`] and
/// whose weight needs no cotangent, restructured so that the compiler vectorises it; the same
/// bits:
/// 1. per footprint row, every term as an array over the row's lanes: the patch's and the
///    weight's corners read from zero-bordered copies (the values `corners` reads, zero
///    outside), at consecutive addresses along a regular row; the offset terms added as one
///    run per row (`ShiftGradient::add_run`: slots `x·L + lane` are consecutive);
/// 2. the patch's cotangent **gathered**: patch pixel `(i, j)` receives `d·∂u` of the pixel
///    sampling `(i−1, j−1)`, `c·∂u` of `(i−1, j)`, `b·∂u` of `(i, j−1)` and `a·∂u` of `(i, j)`,
///    in that order (the order the row-major scatter adds them), from `+0.0`. A neighbour the
///    footprint lacks reads `∂u = 0` and weight `0`: a `±0` term, which leaves a sum that
///    started at `+0.0` unchanged, as the scatter's missing term does.
#[inline(always)]
fn channel_rows<const L: usize, const TORCH: bool>(
    plan: &Region,
    ch: &Channel<'_>,
    (dnum, dden): (&[f32], &[f32]),
    dp: Option<&mut [f32]>,
    sums: Option<(&mut ShiftGradient, &mut ShiftGradient)>,
    sc: &mut RowScratch,
) {
    let (n, p) = (plan.patch, plan.side);
    let (m, w1) = (n + 2, n + 1);
    let row_lanes = m * L;
    let weighted = plan.options.numerator == Numerator::Weighted;
    let (Some(&(x_first, kx_first, _)), Some(_)) = (ch.cols.first(), ch.rows.first()) else {
        return;
    };
    let width = ch.cols.len();
    bordered_patch::<L>(ch.patch, n, &mut sc.patch);
    if sc.weight_of != Some(ch.weight_index) {
        bordered_weight::<L>(ch.weight, n, &mut sc.weight);
        bordered_weight::<1>(ch.weight, n, &mut sc.weight1);
        sc.weight_of = Some(ch.weight_index);
    }
    sc.du.fill(0.0);
    sc.wx.fill(0.0);
    sc.ux.fill(0.0);
    sc.wy.fill(0.0);
    sc.uy.fill(0.0);
    sc.wx1.fill(0.0);
    sc.ux1.fill(0.0);
    for &(_, kx, wx) in ch.cols {
        let at = (kx + 1) as usize * L;
        sc.wx[at..at + L].fill(wx);
        sc.ux[at..at + L].fill(1.0 - wx);
        sc.wx1[(kx + 1) as usize] = wx;
        sc.ux1[(kx + 1) as usize] = 1.0 - wx;
    }
    for &(_, ky, wy) in ch.rows {
        sc.wy[(ky + 1) as usize] = wy;
        sc.uy[(ky + 1) as usize] = 1.0 - wy;
    }
    let c0 = (kx_first + 1) as usize; // bordered column of the first footprint column's corner
    let lanes = width * L;
    let fx = &sc.wx[c0 * L..c0 * L + lanes];
    let gx = &sc.ux[c0 * L..c0 * L + lanes];
    let mut sums = sums;
    for &(y, ky, wy) in ch.rows {
        let uy = 1.0 - wy;
        let r0 = (ky + 1) as usize;
        let at0 = y * p + x_first;
        let dn = &dnum[at0 * L..at0 * L + lanes];
        let dd = &dden[at0..at0 + width];
        // The four corners of every lane of the row, as slices.
        let top = r0 * row_lanes + c0 * L;
        let [p00, p01, p10, p11] = corner_slices(&sc.patch, top, row_lanes, L, lanes);
        let [q00, q01, q10, q11] = corner_slices(&sc.weight, top, row_lanes, L, lanes);
        let du = &mut sc.du[(r0 * w1 + c0) * L..(r0 * w1 + c0) * L + lanes];
        let [tu_x, tu_y] = &mut sc.terms_u;
        let (tu_x, tu_y) = (&mut tu_x[..lanes], &mut tu_y[..lanes]);
        let products = &mut sc.products[..lanes];
        for e in 0..lanes {
            let w = Weights::from_factors(gx[e], fx[e], uy, wy);
            let v = combine::<TORCH>(w, [q00[e], q01[e], q10[e], q11[e]]);
            let corners = [p00[e], p01[e], p10[e], p11[e]];
            products[e] = dn[e] * combine::<TORCH>(w, corners);
            let d = if weighted { dn[e] * v } else { dn[e] };
            du[e] = d;
            tu_x[e] = d_dwx(uy, wy, p00[e], p01[e], p10[e], p11[e]);
            tu_y[e] = d_dwy(gx[e], fx[e], p00[e], p01[e], p10[e], p11[e]);
        }
        let Some((su, sv)) = sums.as_mut() else {
            continue;
        };
        let [tv_c, tv_x, tv_y] = &mut sc.terms_v;
        let (tv_c, tv_x, tv_y) = (&mut tv_c[..width], &mut tv_x[..width], &mut tv_y[..width]);
        for (t, (c, products)) in tv_c.iter_mut().zip(products.chunks_exact(L)).enumerate() {
            *c = if weighted {
                // `0.0 + Σ_lanes ∂num·u`, in lane order, then added to the denominator's.
                let mut s = 0.0_f32;
                for &v in products {
                    s += v;
                }
                dd[t] + s
            } else {
                dd[t]
            };
        }
        // The weight's terms per pixel, from its one-lane copy and factors (contiguous).
        let [v00, v01, v10, v11] = corner_slices(&sc.weight1, r0 * m + c0, m, 1, width);
        let (fx1, gx1) = (&sc.wx1[c0..c0 + width], &sc.ux1[c0..c0 + width]);
        for t in 0..width {
            tv_x[t] = d_dwx(uy, wy, v00[t], v01[t], v10[t], v11[t]);
            tv_y[t] = d_dwy(gx1[t], fx1[t], v00[t], v01[t], v10[t], v11[t]);
        }
        // The patch's terms: `∂u` (the row of `du` just written) with its derivatives.
        su.add_run(x_first * L, du, tu_x, tu_y);
        sv.add_run(x_first, tv_c, tv_x, tv_y);
    }
    let Some(dp) = dp else {
        return;
    };
    let row = n * L;
    // Slices of exactly one patch row's lanes, so that the loop has no bounds tests.
    let (wx, ux) = (&sc.wx[..row], &sc.ux[L..L + row]);
    for i in 0..n {
        let (wy, uy) = (sc.wy[i], sc.uy[i + 1]);
        let above = &sc.du[i * w1 * L..(i * w1 + w1) * L];
        let below = &sc.du[(i + 1) * w1 * L..((i + 1) * w1 + w1) * L];
        let (d, c) = (&above[..row], &above[L..L + row]);
        let (b, a) = (&below[..row], &below[L..L + row]);
        let out = &mut dp[i * row..(i + 1) * row];
        for (k, o) in out.iter_mut().enumerate() {
            *o = 0.0_f32
                + (wx[k] * wy) * d[k]
                + (ux[k] * wy) * c[k]
                + (wx[k] * uy) * b[k]
                + (ux[k] * uy) * a[k];
        }
    }
}

fn sample_vjp_dispatch(
    l: usize,
    conv: Convention,
    (plan, inputs, piece, dnum, dden, wrt): (
        &Region,
        &Inputs<'_>,
        Piece<'_>,
        &[f32],
        &[f32],
        RegionWrt,
    ),
) {
    dispatch!(
        sample_vjp,
        sample_vjp_fma,
        plan,
        l,
        conv,
        (plan, inputs, piece, dnum, dden, wrt)
    )
}

/// One sample's cotangents from its numerator's (`dnum`, `P²·L` lanes) and denominator's
/// (`dden`): per channel, the footprint in row-major order.
#[inline(always)]
fn sample_vjp<const L: usize, const TORCH: bool>(
    plan: &Region,
    inputs: &Inputs<'_>,
    piece: Piece<'_>,
    dnum: &[f32],
    dden: &[f32],
    wrt: RegionWrt,
) {
    let (cs, n, p, q) = (plan.channels, plan.patch, plan.side, plan.origin);
    let nn = n * n;
    let conv = plan.options.convention;
    let weighted = plan.options.numerator == Numerator::Weighted;
    let b = piece.b;
    // The offset terms go through runs of consecutive slots (`ShiftRun`): the same sums as one
    // `add` per term, in a loop the compiler vectorises.
    let (mut run_u, mut run_v) = (ShiftRun::new(p * L), ShiftRun::new(p));
    let mut rows_scratch = RowScratch::new(n, L);
    let mut dpatches = piece.dpatches;
    let mut dweights = piece.dweights;
    for c in 0..cs {
        let j = b * cs + c;
        let [tx, ty] = plan.shifts[j];
        let patch = &inputs.patches[j * nn * L..(j + 1) * nn * L];
        let k = inputs.weights.index(b, c, cs);
        let weight = &inputs.weights.values[k * nn..(k + 1) * nn];
        let (mut su, mut sv) = (ShiftGradient::default(), ShiftGradient::default());
        let mut dp = dpatches
            .as_deref_mut()
            .map(|d| &mut d[c * nn * L..(c + 1) * nn * L]);
        let mut dw = dweights
            .as_deref_mut()
            .map(|d| &mut d[c * nn..(c + 1) * nn]);
        let cols = footprint(conv, tx, p, q, n);
        let rows = footprint(conv, ty, p, q, n);
        if dw.is_none() && regular(&rows) && regular(&cols) {
            let channel = Channel {
                patch,
                weight,
                weight_index: k,
                rows: &rows,
                cols: &cols,
            };
            channel_rows::<L, TORCH>(
                plan,
                &channel,
                (dnum, dden),
                dp.as_deref_mut(),
                wrt.positions.then_some((&mut su, &mut sv)),
                &mut rows_scratch,
            );
            piece.sums[c] = su.merged(&sv);
            continue;
        }
        for &(y, ky, wy) in &rows {
            for &(x, kx, wx) in &cols {
                let at = y * p + x;
                let w = Weights::new(wx, wy);
                let wc = corners(weight, n, 1, ky, kx, 0);
                let v = combine::<TORCH>(w, wc);
                let dn = &dnum[at * L..at * L + L];
                let mut ic = [[0.0_f32; 4]; L];
                for (lane, corner) in ic.iter_mut().enumerate() {
                    *corner = corners(patch, n, L, ky, kx, lane);
                }
                let mut dv = dden[at];
                if weighted {
                    let mut s = 0.0_f32;
                    for (lane, &d) in dn.iter().enumerate() {
                        s += d * combine::<TORCH>(w, ic[lane]);
                    }
                    dv = dden[at] + s;
                }
                for (lane, &d) in dn.iter().enumerate() {
                    let du = if weighted { d * v } else { d };
                    if let Some(dp) = dp.as_deref_mut() {
                        scatter(dp, n, L, (ky, kx), lane, w, du);
                    }
                    if wrt.positions {
                        let [i00, i01, i10, i11] = ic[lane];
                        run_u.push(
                            &mut su,
                            x * L + lane,
                            du,
                            d_dwx(1.0 - wy, wy, i00, i01, i10, i11),
                            d_dwy(1.0 - wx, wx, i00, i01, i10, i11),
                        );
                    }
                }
                if let Some(dw) = dw.as_deref_mut() {
                    scatter(dw, n, 1, (ky, kx), 0, w, dv);
                }
                if wrt.positions {
                    let [i00, i01, i10, i11] = wc;
                    run_v.push(
                        &mut sv,
                        x,
                        dv,
                        d_dwx(1.0 - wy, wy, i00, i01, i10, i11),
                        d_dwy(1.0 - wx, wx, i00, i01, i10, i11),
                    );
                }
            }
        }
        run_u.flush(&mut su);
        run_v.flush(&mut sv);
        piece.sums[c] = su.merged(&sv);
    }
}
