//! The reference implementation: the oracle every fast path is tested against.
//!
//! It is `docs/semantics.md` §2 written out literally, as PtychoPINN's `shift_and_sum_old` does it:
//! every cropped patch is zero-padded to the whole `S×S` canvas, the whole canvas is
//! translated (every pixel evaluated, zero fill outside the image), and the translated canvas
//! is added to the sum, patch after patch in index order. Its cost is `n·S²`. It is slow on
//! purpose and must stay that way: do not optimise it, and never let it share code with the
//! fast path beyond [`crate::kernel`], which holds the per-pixel arithmetic both must perform.

use crate::error::Result;
use crate::geometry::Geometry;
use crate::interrupt::Interrupt;
use crate::kernel::{Weights, sample_axis};
use crate::memory::try_zeroed_vec;
use crate::sample::{Sample, lanes, lanes_mut};
use ndarray::{Array2, ArrayView3};

/// An `S×S` canvas of zeros for the reference, or an out-of-memory error.
fn canvas<T: Sample>(side: usize) -> Result<Vec<T>> {
    try_zeroed_vec(side * side, || {
        format!("a {side}×{side} canvas of the reference path")
    })
}

/// Steps 1 and 3: patch `k` cropped and zero-padded by `p` on every side to the `S×S` canvas
/// `padded` (every pixel written). Shared with the reference gradient.
pub(crate) fn pad_patch<T: Sample>(
    geometry: &Geometry,
    patches: ArrayView3<'_, T>,
    k: usize,
    padded: &mut [T],
) {
    let (side, p, m, c0) = (
        geometry.side(),
        geometry.pad(),
        geometry.kept(),
        geometry.crop_start(),
    );
    padded.fill(T::zeroed());
    for r in 0..m {
        for c in 0..m {
            padded[(p + r) * side + (p + c)] = patches[[k, c0 + r, c0 + c]];
        }
    }
}

/// Literal shift-and-sum of `(n, N, N)` patches on the geometry's canvas.
pub(crate) fn shift_and_sum<T: Sample>(
    geometry: &Geometry,
    patches: ArrayView3<'_, T>,
    interrupt: &Interrupt,
) -> Result<Array2<T>> {
    let side = geometry.side();
    let lanes_per_pixel = T::LANES;
    let mut sum = canvas::<T>(side)?;
    let mut padded = canvas::<T>(side)?;
    let mut translated = canvas::<T>(side)?;

    for (k, &[ax, ay]) in geometry.shifts().iter().enumerate() {
        pad_patch(geometry, patches, k, &mut padded);
        // 4. translate the whole canvas by (ax, ay), bilinear, zero fill.
        let image = lanes(&padded);
        let at = |y: i64, x: i64, lane: usize| -> f32 {
            if (0..side as i64).contains(&y) && (0..side as i64).contains(&x) {
                image[(y as usize * side + x as usize) * lanes_per_pixel + lane]
            } else {
                0.0
            }
        };
        let out = lanes_mut(&mut translated);
        for y in 0..side {
            interrupt.check()?;
            let (y0, wy) = sample_axis(y, ay);
            for x in 0..side {
                let (x0, wx) = sample_axis(x, ax);
                let w = Weights::new(wx, wy);
                for lane in 0..lanes_per_pixel {
                    out[(y * side + x) * lanes_per_pixel + lane] = w.apply(
                        at(y0, x0, lane),
                        at(y0, x0 + 1, lane),
                        at(y0 + 1, x0, lane),
                        at(y0 + 1, x0 + 1, lane),
                    );
                }
            }
        }
        // 5. add to the sum, in patch order.
        for (acc, v) in lanes_mut(&mut sum).iter_mut().zip(lanes(&translated)) {
            *acc += v;
        }
    }
    Ok(Array2::from_shape_vec((side, side), sum).expect("S×S values for an S×S canvas"))
}

/// Literal weight canvas: the shift-and-sum of patches that are all ones.
pub(crate) fn weights(geometry: &Geometry, interrupt: &Interrupt) -> Result<Array2<f32>> {
    let n = geometry.patch_size();
    let len = geometry.len() * n * n;
    let mut ones = try_zeroed_vec::<f32>(len, || format!("{len} ones of the reference weights"))?;
    ones.fill(1.0);
    let ones = ArrayView3::from_shape((geometry.len(), n, n), &ones)
        .expect("n·N·N values for an (n, N, N) stack");
    shift_and_sum(geometry, ones, interrupt)
}

/// Literal `reassemble_position`: `shift_and_sum(patches) / (1e-9 + shift_and_sum(ones))`.
pub(crate) fn reassemble_position<T: Sample>(
    geometry: &Geometry,
    patches: ArrayView3<'_, T>,
    interrupt: &Interrupt,
) -> Result<Array2<T>> {
    let mut image = shift_and_sum(geometry, patches, interrupt)?;
    let weights = weights(geometry, interrupt)?;
    let lanes_per_pixel = T::LANES;
    let values = lanes_mut(image.as_slice_mut().expect("fresh array is contiguous"));
    for (pixel, &w) in values.chunks_exact_mut(lanes_per_pixel).zip(weights.iter()) {
        T::normalise(pixel, w);
    }
    Ok(image)
}
