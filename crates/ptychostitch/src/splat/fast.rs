//! The splat's fast path: the canvas split into row bands, one worker per band at a time.
//!
//! Bit-identity with [`super::reference`]: a canvas pixel lies in exactly one band, and the
//! band's worker adds that pixel's terms in the reference's order (the four corners in turn,
//! each over the patches in index order; a patch adds at most one term per pixel and corner),
//! each term computed by the same [`term`]. Terms outside the canvas are skipped by both.

use super::{Corner, SHIFTS, term};
use crate::parallel::{Schedule, for_each_piece, workers_for};
use ndarray::{ArrayView2, ArrayView3, ArrayViewMut2, Axis, Zip, s};
use num_complex::Complex32;

/// Bands per worker: enough to even out patches that crowd some rows.
const BANDS_PER_WORKER: usize = 4;

pub(crate) fn splat(
    canvas: ArrayViewMut2<'_, Complex32>,
    weights: ArrayViewMut2<'_, f32>,
    patches: ArrayView3<'_, Complex32>,
    corners: &[Corner],
    patch_weight: Option<ArrayView2<'_, f32>>,
    threads: usize,
) {
    let (h, w) = canvas.dim();
    let size = patches.dim().1;
    let placed: Vec<usize> = (0..corners.len()).filter(|&n| corners[n].placed).collect();
    if placed.is_empty() || h == 0 || w == 0 {
        return;
    }
    let terms = 4 * placed.len() * size * size;
    let min_pixels = Schedule::default().min_pixels_per_worker;
    let workers = workers_for(threads, min_pixels, terms);
    let bands = if workers == 1 {
        1
    } else {
        (workers * BANDS_PER_WORKER).min(h)
    };
    let mut pieces = Vec::with_capacity(bands);
    let (mut canvas, mut weights, mut top) = (canvas, weights, 0);
    for b in 1..=bands {
        let end = h * b / bands;
        let (c_band, c_rest) = canvas.split_at(Axis(0), end - top);
        let (w_band, w_rest) = weights.split_at(Axis(0), end - top);
        pieces.push((top, c_band, w_band));
        (canvas, weights, top) = (c_rest, w_rest, end);
    }
    for_each_piece(
        workers,
        pieces,
        || (),
        |(top, c_band, w_band), _| {
            band(top, c_band, w_band, patches, corners, &placed, patch_weight)
        },
    );
}

/// Every term that lands in the rows `top..top + band height`, in the reference's order.
fn band(
    top: usize,
    mut canvas: ArrayViewMut2<'_, Complex32>,
    mut weights: ArrayViewMut2<'_, f32>,
    patches: ArrayView3<'_, Complex32>,
    corners: &[Corner],
    placed: &[usize],
    patch_weight: Option<ArrayView2<'_, f32>>,
) {
    let (rows, w) = canvas.dim();
    let (top, bottom, w) = (top as i64, (top + rows) as i64, w as i64);
    let size = patches.dim().1 as i64;
    for (k, (dy, dx)) in SHIFTS.into_iter().enumerate() {
        for &n in placed {
            let c = &corners[n];
            let (r0, c0) = (c.row + dy, c.col + dx);
            let (first, last) = (r0.max(top), (r0 + size).min(bottom));
            let (left, right) = (c0.max(0), (c0 + size).min(w));
            if first >= last || left >= right {
                continue;
            }
            let cols = (left - c0) as usize..(right - c0) as usize;
            let out = left as usize..right as usize;
            let wk = c.weights[k];
            for r in first..last {
                let i = (r - r0) as usize;
                let local = (r - top) as usize;
                let values = patches.slice(s![n, i, cols.clone()]);
                let out_c = canvas.slice_mut(s![local, out.clone()]);
                let out_w = weights.slice_mut(s![local, out.clone()]);
                match &patch_weight {
                    Some(pw) => Zip::from(out_c)
                        .and(out_w)
                        .and(values)
                        .and(pw.slice(s![i, cols.clone()]))
                        .for_each(|oc, ow, &z, &p| {
                            let (value, weight) = term(z, Some(p), wk);
                            *oc += value;
                            *ow += weight;
                        }),
                    None => Zip::from(out_c)
                        .and(out_w)
                        .and(values)
                        .for_each(|oc, ow, &z| {
                            let (value, weight) = term(z, None, wk);
                            *oc += value;
                            *ow += weight;
                        }),
                }
            }
        }
    }
}
