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
    Convention, Denominator, ShiftGradient, ShiftRun, Weights, d_dwx, d_dwy, region_cotangent,
    region_normalise, support_factor,
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

/// The region coordinates of one axis whose sample touches the patch, in increasing order:
/// `(coordinate, first patch index, fraction)`; the patch index is `floor(s) − origin`, in
/// `−1 ..= N − 1`.
fn footprint(
    conv: Convention,
    shift: f32,
    side: usize,
    origin: usize,
    n: usize,
) -> Vec<(usize, i64, f32)> {
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
        for (y, ky, wy) in footprint(conv, ty, p, q, n) {
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
    let mut num = [0.0_f32; 2];
    for (px, &d) in values.chunks_exact_mut(l).zip(den) {
        num[..l].copy_from_slice(px);
        region_normalise(
            &num[..l],
            d,
            support_factor(plan.options.support.is_some(), d, limit),
            g,
            px,
        );
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
        for at in 0..p * p {
            let i = base + at;
            dden[at] = region_cotangent(
                &cot[i * l..(i + 1) * l],
                &r[i * l..(i + 1) * l],
                den[i],
                support_factor(plan.options.support.is_some(), den[i], limit),
                g,
                &mut dnum[at * l..(at + 1) * l],
            );
        }
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
        for (y, ky, wy) in footprint(conv, ty, p, q, n) {
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
