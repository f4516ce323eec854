//! The reference extraction and its adjoint: the oracle.
//!
//! Forward: every image translated whole (every `S×S` pixel evaluated), then trimmed to its
//! centre. Adjoint: the cotangent zero-padded back to `S×S`, and for every pixel of every
//! translated image, in patch order and row-major order, each bilinear weight times the
//! cotangent added to the image pixel it read. `O(B·C·S²)`, one thread, slow on purpose. It
//! shares only [`crate::kernel`] with the fast path.

use super::{Extraction, image_lanes};
use crate::adjoint::Wrt;
use crate::error::Result;
use crate::kernel::ShiftGradient;
use crate::kernel::{add_offset_terms, corners, sample_pixel};
use crate::memory::try_zeroed_vec;
use crate::sample::{Sample, lanes_mut};
use ndarray::ArrayView3;

pub(crate) fn extract<T: Sample>(plan: &Extraction, images: ArrayView3<'_, T>) -> Result<Vec<T>> {
    let (l, s, n, t, c) = (T::LANES, plan.side, plan.patch, plan.trim, plan.per_image);
    let mut patches =
        try_zeroed_vec::<T>(plan.shifts.len() * n * n, || "the extracted patches".into())?;
    let out = lanes_mut(&mut patches);
    let all = image_lanes(images)?;
    let mut whole = try_zeroed_vec::<f32>(s * s * l, || format!("a {s}×{s} translated image"))?;
    for (j, &shift) in plan.shifts.iter().enumerate() {
        let b = j / c;
        let image = &all[b * s * s * l..(b + 1) * s * s * l];
        for y in 0..s {
            for x in 0..s {
                let at = (y * s + x) * l;
                sample_pixel(
                    plan.convention,
                    image,
                    s,
                    l,
                    y,
                    x,
                    shift,
                    &mut whole[at..at + l],
                );
            }
        }
        for r in 0..n {
            let src = ((t + r) * s + t) * l;
            let dst = (j * n + r) * n * l;
            out[dst..dst + n * l].copy_from_slice(&whole[src..src + n * l]);
        }
    }
    Ok(patches)
}

pub(crate) fn extract_vjp<T: Sample>(
    plan: &Extraction,
    images: ArrayView3<'_, T>,
    cot: &[f32],
    wrt: Wrt,
) -> Result<(Option<Vec<T>>, Vec<ShiftGradient>)> {
    let (l, s, n, t, c) = (T::LANES, plan.side, plan.patch, plan.trim, plan.per_image);
    let mut grads = if wrt.patches {
        Some(try_zeroed_vec::<T>(plan.images() * s * s, || {
            "the images' cotangent".into()
        })?)
    } else {
        None
    };
    let all = image_lanes(images)?;
    let mut sums =
        crate::memory::try_filled_vec(plan.shifts.len(), ShiftGradient::default(), || {
            "the offsets' gradients".into()
        })?;
    let mut padded = try_zeroed_vec::<f32>(s * s * l, || format!("a {s}×{s} cotangent"))?;
    for (j, &shift) in plan.shifts.iter().enumerate() {
        let b = j / c;
        padded.fill(0.0);
        for r in 0..n {
            let dst = ((t + r) * s + t) * l;
            let src = (j * n + r) * n * l;
            padded[dst..dst + n * l].copy_from_slice(&cot[src..src + n * l]);
        }
        if let Some(grads) = grads.as_deref_mut() {
            let image = &mut lanes_mut(grads)[b * s * s * l..(b + 1) * s * s * l];
            for y in 0..s {
                for x in 0..s {
                    let g = &padded[(y * s + x) * l..(y * s + x + 1) * l];
                    for (cy, cx, weight) in corners(plan.convention, s, y, x, shift) {
                        if (0..s as i64).contains(&cy) && (0..s as i64).contains(&cx) {
                            let dst = (cy as usize * s + cx as usize) * l;
                            for (lane, v) in g.iter().enumerate() {
                                image[dst + lane] += weight * v;
                            }
                        }
                    }
                }
            }
        }
        if wrt.offsets {
            let image = &all[b * s * s * l..(b + 1) * s * s * l];
            for y in 0..s {
                for x in 0..s {
                    // Only the kept window has a cotangent; the trimmed pixels have none.
                    if (t..t + n).contains(&y) && (t..t + n).contains(&x) {
                        let g = &padded[(y * s + x) * l..(y * s + x + 1) * l];
                        add_offset_terms(
                            plan.convention,
                            &mut sums[j],
                            image,
                            s,
                            l,
                            (y, x),
                            shift,
                            g,
                        );
                    }
                }
            }
        }
    }
    Ok((grads, sums))
}
