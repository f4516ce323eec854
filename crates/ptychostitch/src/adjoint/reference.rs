//! The reference vector–Jacobian product: the oracle of every gradient.
//!
//! The literal adjoint of [`crate::reference`]'s forward: every cropped patch is zero-padded to
//! the whole `S×S` canvas, and for every canvas pixel `(y, x)` in row-major order the product of
//! each of its four bilinear weights with the cotangent is added to the padded source pixel it
//! read (when that lies on the canvas), as TensorFlow's gradient of a gather scatters it. The
//! kept centre of the padded gradient is the patch's cotangent. The offset terms of every pixel
//! that reads the kept patch go, per lane, into [`ShiftGradient`] with the slot of their canvas
//! column. `O(n·S²)`, one thread, slow on purpose: never optimise it.

use crate::error::Result;
use crate::geometry::Geometry;
use crate::interrupt::Interrupt;
use crate::kernel::{ShiftGradient, Weights, d_dwx, d_dwy, sample_axis};
use crate::memory::try_zeroed_vec;
use crate::reference::pad_patch;
use crate::sample::{Sample, lanes, lanes_mut};
use ndarray::ArrayView3;

/// The adjoint of one translated patch per index: the `(n, N, N)` lanes of the patches'
/// cotangent (when `want_patches`) and each patch's [`ShiftGradient`] (empty sums unless
/// `want_offsets`). `cot` holds the `S×S` canvas cotangent's lanes.
pub(crate) fn translate_vjp<T: Sample>(
    g: &Geometry,
    patches: ArrayView3<'_, T>,
    cot: &[f32],
    want_patches: bool,
    want_offsets: bool,
    interrupt: &Interrupt,
) -> Result<(Option<Vec<T>>, Vec<ShiftGradient>)> {
    let l = T::LANES;
    let side = g.side();
    let (p, m, c0) = (g.pad(), g.kept(), g.crop_start());
    let n = g.patch_size();
    let mut grads = if want_patches {
        Some(try_zeroed_vec::<T>(g.len() * n * n, || {
            "the patches' cotangent".into()
        })?)
    } else {
        None
    };
    let mut sums = crate::memory::try_filled_vec(g.len(), ShiftGradient::default(), || {
        "the offsets' gradients".into()
    })?;
    let mut padded = try_zeroed_vec::<T>(side * side, || {
        format!("a {side}×{side} canvas of the reference gradient")
    })?;
    let mut scattered = try_zeroed_vec::<f32>(side * side * l, || {
        format!("a {side}×{side} canvas of the reference gradient")
    })?;
    let in_canvas = |y: i64, x: i64| (0..side as i64).contains(&y) && (0..side as i64).contains(&x);
    let in_crop = |v: i64| (p as i64..(p + m) as i64).contains(&v);

    for (k, &[ax, ay]) in g.shifts().iter().enumerate() {
        // The patch, cropped and zero-padded to the canvas, as the forward translates it.
        pad_patch(g, patches, k, &mut padded);
        let padded_lanes = lanes(&padded);
        scattered.fill(0.0);
        let image = |y: i64, x: i64, lane: usize| -> f32 {
            if in_canvas(y, x) {
                padded_lanes[(y as usize * side + x as usize) * l + lane]
            } else {
                0.0
            }
        };
        let sum = &mut sums[k];
        for y in 0..side {
            interrupt.check()?;
            let (y0, wy) = sample_axis(y, ay);
            for x in 0..side {
                let (x0, wx) = sample_axis(x, ax);
                let w = Weights::new(wx, wy);
                let at = (y * side + x) * l;
                if want_patches {
                    let corners = [
                        (y0, x0, w.a),
                        (y0, x0 + 1, w.b),
                        (y0 + 1, x0, w.c),
                        (y0 + 1, x0 + 1, w.d),
                    ];
                    for (cy, cx, weight) in corners {
                        if in_canvas(cy, cx) {
                            let dst = (cy as usize * side + cx as usize) * l;
                            for lane in 0..l {
                                scattered[dst + lane] += weight * cot[at + lane];
                            }
                        }
                    }
                }
                // The pixels that read the kept patch: the derivative is zero elsewhere.
                let reaches = (in_crop(y0) || in_crop(y0 + 1)) && (in_crop(x0) || in_crop(x0 + 1));
                if want_offsets && reaches {
                    for lane in 0..l {
                        let (i00, i01) = (image(y0, x0, lane), image(y0, x0 + 1, lane));
                        let (i10, i11) = (image(y0 + 1, x0, lane), image(y0 + 1, x0 + 1, lane));
                        sum.add(
                            x * l + lane,
                            cot[at + lane],
                            d_dwx(1.0 - wy, wy, i00, i01, i10, i11),
                            d_dwy(1.0 - wx, wx, i00, i01, i10, i11),
                        );
                    }
                }
            }
        }
        if let Some(grads) = grads.as_deref_mut().map(lanes_mut) {
            for r in 0..m {
                let src = ((p + r) * side + p) * l;
                let dst = ((k * n + c0 + r) * n + c0) * l;
                grads[dst..dst + m * l].copy_from_slice(&scattered[src..src + m * l]);
            }
        }
    }
    Ok((grads, sums))
}
