//! The splat's oracle: torch's four `scatter_add_` calls written out, one term at a time.

use super::{Corner, SHIFTS, term};
use ndarray::{ArrayView2, ArrayView3, ArrayViewMut2};
use num_complex::Complex32;

pub(crate) fn splat(
    mut canvas: ArrayViewMut2<'_, Complex32>,
    mut weights: ArrayViewMut2<'_, f32>,
    patches: ArrayView3<'_, Complex32>,
    corners: &[Corner],
    patch_weight: Option<ArrayView2<'_, f32>>,
) {
    let (h, w) = canvas.dim();
    let size = patches.dim().1;
    for (k, (dy, dx)) in SHIFTS.into_iter().enumerate() {
        for (n, c) in corners.iter().enumerate() {
            if !c.placed {
                continue;
            }
            for i in 0..size {
                for j in 0..size {
                    let (r, col) = (c.row + dy + i as i64, c.col + dx + j as i64);
                    if r < 0 || col < 0 || r >= h as i64 || col >= w as i64 {
                        continue;
                    }
                    let p = patch_weight.as_ref().map(|pw| pw[[i, j]]);
                    let (value, weight) = term(patches[[n, i, j]], p, c.weights[k]);
                    canvas[[r as usize, col as usize]] += value;
                    weights[[r as usize, col as usize]] += weight;
                }
            }
        }
    }
}
