//! The reference region reassembly and its adjoint: the oracle.
//!
//! Literally what PtychoPINN's layers do: every patch (and its weight) zero-padded to the whole
//! `P×P` region, every region pixel of it translated, the channels summed, the sums divided.
//! The adjoint scatters every region pixel's cotangent back over the whole padded patch, then
//! crops it. `O(B·C·P²)`, one thread, slow on purpose; it shares only [`crate::kernel`] with
//! the fast path.

use super::{Inputs, Normalisation, RawGradients, Region, RegionWrt, max_cotangent};
use crate::error::Result;
use crate::kernel::{
    Convention, ShiftGradient, Weights, d_dwx, d_dwy, region_cotangent, region_normalise,
    support_factor,
};
use crate::memory::try_zeroed_vec;
use crate::region::Numerator;
use crate::sample::{Sample, lanes_mut};

/// One patch (or weight) zero-padded to `P×P`, `l` lanes a pixel.
struct Padded {
    values: Vec<f32>,
    side: usize,
    lanes: usize,
}

impl Padded {
    fn new(side: usize, lanes: usize) -> Result<Self> {
        Ok(Self {
            values: try_zeroed_vec(side * side * lanes, || {
                format!("a {side}×{side} padded patch")
            })?,
            side,
            lanes,
        })
    }

    /// Puts the `n×n` patch `src` at `(origin, origin)`, zeros elsewhere.
    fn fill(&mut self, src: &[f32], n: usize, origin: usize) {
        self.values.fill(0.0);
        let (p, l) = (self.side, self.lanes);
        for r in 0..n {
            let dst = ((origin + r) * p + origin) * l;
            self.values[dst..dst + n * l].copy_from_slice(&src[r * n * l..(r + 1) * n * l]);
        }
    }

    /// Lane `lane` of pixel `(y, x)`, zero outside the padded image.
    fn at(&self, y: i64, x: i64, lane: usize) -> f32 {
        let p = self.side as i64;
        if (0..p).contains(&y) && (0..p).contains(&x) {
            self.values[((y * p + x) as usize) * self.lanes + lane]
        } else {
            0.0
        }
    }

    fn corners(&self, y0: i64, x0: i64, lane: usize) -> [f32; 4] {
        [
            self.at(y0, x0, lane),
            self.at(y0, x0 + 1, lane),
            self.at(y0 + 1, x0, lane),
            self.at(y0 + 1, x0 + 1, lane),
        ]
    }

    /// Adds `weight·value` to lane `lane` of pixel `(y, x)` when it is inside.
    fn add(&mut self, y: i64, x: i64, lane: usize, value: f32) {
        let p = self.side as i64;
        if (0..p).contains(&y) && (0..p).contains(&x) {
            self.values[((y * p + x) as usize) * self.lanes + lane] += value;
        }
    }

    /// The `n×n` window at `(origin, origin)`, into `dst`.
    fn crop(&self, dst: &mut [f32], n: usize, origin: usize) {
        let (p, l) = (self.side, self.lanes);
        for r in 0..n {
            let src = ((origin + r) * p + origin) * l;
            dst[r * n * l..(r + 1) * n * l].copy_from_slice(&self.values[src..src + n * l]);
        }
    }
}

/// A translated padded patch's sample at region pixel `(y, x)`: corner, weights.
fn sample(
    conv: Convention,
    y: usize,
    x: usize,
    [tx, ty]: [f32; 2],
    p: usize,
) -> (i64, i64, f32, f32) {
    let (y0, wy) = conv.sample_axis(y, ty, p);
    let (x0, wx) = conv.sample_axis(x, tx, p);
    (y0, x0, wx, wy)
}

/// Every region's numerator (lanes) and denominator, `(B, P, P)`.
fn sums<T: Sample>(plan: &Region, inputs: &Inputs<'_>) -> Result<(Vec<T>, Vec<f32>)> {
    let (bs, cs, n, p, q, l) = (
        plan.samples,
        plan.channels,
        plan.patch,
        plan.side,
        plan.origin,
        T::LANES,
    );
    let conv = plan.options.convention;
    let mut num = try_zeroed_vec::<T>(bs * p * p, || "the regions".into())?;
    let mut den = try_zeroed_vec::<f32>(bs * p * p, || "the regions' weights".into())?;
    let mut image = Padded::new(p, l)?;
    let mut weight = Padded::new(p, 1)?;
    let numl = lanes_mut(&mut num);
    for b in 0..bs {
        for c in 0..cs {
            let j = b * cs + c;
            image.fill(&inputs.patches[j * n * n * l..(j + 1) * n * n * l], n, q);
            let k = inputs.weights.index(b, c, cs);
            weight.fill(&inputs.weights.values[k * n * n..(k + 1) * n * n], n, q);
            for y in 0..p {
                for x in 0..p {
                    let (y0, x0, wx, wy) = sample(conv, y, x, plan.shifts[j], p);
                    let w = Weights::new(wx, wy);
                    let [a, bb, cc, d] = weight.corners(y0, x0, 0);
                    let v = conv.apply(w, a, bb, cc, d);
                    let at = b * p * p + y * p + x;
                    for lane in 0..l {
                        let [a, bb, cc, d] = image.corners(y0, x0, lane);
                        let u = conv.apply(w, a, bb, cc, d);
                        numl[at * l + lane] += match plan.options.numerator {
                            Numerator::Sum => u,
                            Numerator::Weighted => u * v,
                        };
                    }
                    den[at] += v;
                }
            }
        }
    }
    Ok((num, den))
}

/// The regions (numerators divided as the options say), the denominators, and the
/// normalisation's whole-batch facts.
fn normalised<T: Sample>(
    plan: &Region,
    inputs: &Inputs<'_>,
) -> Result<(Vec<T>, Vec<f32>, Normalisation)> {
    let (mut out, den) = sums::<T>(plan, inputs)?;
    let norm = Normalisation::of(plan, &den)?;
    let l = T::LANES;
    let values = lanes_mut(&mut out);
    for (at, &d) in den.iter().enumerate() {
        let num: Vec<f32> = values[at * l..(at + 1) * l].to_vec();
        region_normalise(
            &num,
            d,
            support_factor(plan.options.support.is_some(), d, norm.limit),
            norm.g,
            &mut values[at * l..(at + 1) * l],
        );
    }
    Ok((out, den, norm))
}

pub(crate) fn reassemble<T: Sample>(plan: &Region, inputs: &Inputs<'_>) -> Result<Vec<T>> {
    Ok(normalised::<T>(plan, inputs)?.0)
}

pub(crate) fn vjp<T: Sample>(
    plan: &Region,
    inputs: &Inputs<'_>,
    cot: &[f32],
    wrt: RegionWrt,
) -> Result<RawGradients<T>> {
    let (bs, cs, n, p, q, l) = (
        plan.samples,
        plan.channels,
        plan.patch,
        plan.side,
        plan.origin,
        T::LANES,
    );
    let conv = plan.options.convention;
    let (mut regions, den, Normalisation { limit, g, argmax }) = normalised::<T>(plan, inputs)?;
    let r = lanes_mut(&mut regions);
    // What the maximum's own change adds at its pixel (the regularised form only).
    let at_max = argmax.map(|i| (i, max_cotangent(plan, g, cot, r, &den, l)));

    let RawGradients {
        patches: mut dpatches,
        sums: mut sums_out,
        weights: mut dweights,
    } = RawGradients::<T>::zeroed(plan, wrt)?;
    let mut image = Padded::new(p, l)?;
    let mut weight = Padded::new(p, 1)?;
    let mut gimage = Padded::new(p, l)?;
    let mut gweight = Padded::new(p, 1)?;
    let mut dnum = vec![0.0_f32; l];
    let inside = |v: i64| (q as i64 - 1..(q + n) as i64).contains(&v);
    for b in 0..bs {
        for c in 0..cs {
            let j = b * cs + c;
            image.fill(&inputs.patches[j * n * n * l..(j + 1) * n * n * l], n, q);
            let k = inputs.weights.index(b, c, cs);
            weight.fill(&inputs.weights.values[k * n * n..(k + 1) * n * n], n, q);
            gimage.values.fill(0.0);
            gweight.values.fill(0.0);
            let (mut su, mut sv) = (ShiftGradient::default(), ShiftGradient::default());
            for y in 0..p {
                for x in 0..p {
                    let at = b * p * p + y * p + x;
                    let (y0, x0, wx, wy) = sample(conv, y, x, plan.shifts[j], p);
                    let w = Weights::new(wx, wy);
                    let wc = weight.corners(y0, x0, 0);
                    let v = conv.apply(w, wc[0], wc[1], wc[2], wc[3]);
                    let mut dden = region_cotangent(
                        &cot[at * l..(at + 1) * l],
                        &r[at * l..(at + 1) * l],
                        den[at],
                        support_factor(plan.options.support.is_some(), den[at], limit),
                        g,
                        &mut dnum,
                    );
                    if let Some((_, extra)) = at_max.filter(|&(i, _)| i == at) {
                        dden += extra;
                    }
                    let mut dv = dden;
                    if plan.options.numerator == Numerator::Weighted {
                        let mut s = 0.0_f32;
                        for (lane, &dn) in dnum.iter().enumerate() {
                            let ic = image.corners(y0, x0, lane);
                            s += dn * conv.apply(w, ic[0], ic[1], ic[2], ic[3]);
                        }
                        dv = dden + s;
                    }
                    let touches = inside(y0) && inside(x0);
                    for (lane, &dn) in dnum.iter().enumerate() {
                        let du = match plan.options.numerator {
                            Numerator::Sum => dn,
                            Numerator::Weighted => dn * v,
                        };
                        gimage.add(y0, x0, lane, w.a * du);
                        gimage.add(y0, x0 + 1, lane, w.b * du);
                        gimage.add(y0 + 1, x0, lane, w.c * du);
                        gimage.add(y0 + 1, x0 + 1, lane, w.d * du);
                        if touches {
                            let [i00, i01, i10, i11] = image.corners(y0, x0, lane);
                            su.add(
                                x * l + lane,
                                du,
                                d_dwx(1.0 - wy, wy, i00, i01, i10, i11),
                                d_dwy(1.0 - wx, wx, i00, i01, i10, i11),
                            );
                        }
                    }
                    gweight.add(y0, x0, 0, w.a * dv);
                    gweight.add(y0, x0 + 1, 0, w.b * dv);
                    gweight.add(y0 + 1, x0, 0, w.c * dv);
                    gweight.add(y0 + 1, x0 + 1, 0, w.d * dv);
                    if touches {
                        let [i00, i01, i10, i11] = wc;
                        sv.add(
                            x,
                            dv,
                            d_dwx(1.0 - wy, wy, i00, i01, i10, i11),
                            d_dwy(1.0 - wx, wx, i00, i01, i10, i11),
                        );
                    }
                }
            }
            if let Some(dp) = dpatches.as_deref_mut() {
                gimage.crop(&mut lanes_mut(dp)[j * n * n * l..(j + 1) * n * n * l], n, q);
            }
            if let Some(dw) = dweights.as_deref_mut() {
                gweight.crop(&mut dw[j * n * n..(j + 1) * n * n], n, q);
            }
            sums_out[j] = su.merged(&sv);
        }
    }
    Ok(RawGradients {
        patches: dpatches,
        sums: sums_out,
        weights: dweights,
    })
}
