//! Geometry of a reassembly: crop, centring, padding, canvas size and each patch's footprint.
//!
//! Everything here depends only on the offsets, the patch side `N` and the crop `M`
//! (`docs/semantics.md` §2 steps 1–3), so a [`crate::Plan`] computes it once and reuses it for every
//! patch stack. Positions are `[x, y]` in pixels: x is the column (second array axis), y the
//! row (first array axis).

use crate::error::{Error, Result};
use crate::kernel::sample_axis;
use crate::memory;
use ndarray::{ArrayView, ArrayView3, Axis, Dimension, Ix3};

/// A half-open range `start..end` of canvas rows or columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First index in the range.
    pub start: usize,
    /// One past the last index.
    pub end: usize,
}

impl Span {
    /// Number of indices in the range.
    pub fn len(self) -> usize {
        self.end - self.start
    }

    /// True when the range holds no index.
    pub fn is_empty(self) -> bool {
        self.end <= self.start
    }

    /// The indices in both `self` and `other`.
    pub fn intersect(self, other: Span) -> Span {
        let start = self.start.max(other.start);
        Span {
            start,
            end: self.end.min(other.end).max(start),
        }
    }
}

/// The canvas pixels one translated patch can change: every pixel outside it samples only
/// zero padding and receives exactly `+0.0` from that patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Canvas rows (y) that sample a patch row.
    pub rows: Span,
    /// Canvas columns (x) that sample a patch column.
    pub cols: Span,
}

/// The fixed numbers of one reassembly: see `docs/semantics.md` §2.
#[derive(Debug, Clone, PartialEq)]
pub struct Geometry {
    patch_size: usize,
    crop: usize,
    kept: usize,
    crop_start: usize,
    pad: usize,
    side: usize,
    center: [f32; 2],
    shifts: Vec<[f32; 2]>,
    footprints: Vec<Footprint>,
}

impl Geometry {
    /// Validates the inputs and computes the geometry.
    ///
    /// `positions` are `[x, y]` pixel offsets, one per patch; `patch_size` is `N`; `crop` is `M`.
    pub fn new(positions: &[[f64; 2]], patch_size: usize, crop: i64) -> Result<Self> {
        if positions.is_empty() {
            return Err(Error::NoPatches);
        }
        if crop < 2 || crop as u128 > patch_size as u128 {
            return Err(Error::CropOutOfRange {
                m: crop,
                n: patch_size,
            });
        }
        let crop = crop as usize;
        let half = crop / 2;
        let kept = 2 * half;
        let crop_start = patch_size / 2 - half;

        let (single, center) = centre_of_mass(positions)?;

        let mut shifts: Vec<[f32; 2]> =
            memory::try_with_capacity(single.len(), || "the patches' shifts".into())?;
        shifts.extend(single.iter().map(|p| [p[0] - center[0], p[1] - center[1]]));
        let max_abs = shifts
            .iter()
            .flat_map(|s| [s[0].abs(), s[1].abs()])
            .fold(0.0_f32, |m, v| if v > m || v.is_nan() { v } else { m });

        let pad = checked_pad(max_abs, kept)?;
        let side = kept + 2 * pad;
        let mut footprints =
            memory::try_with_capacity(shifts.len(), || "the patches' footprints".into())?;
        fill_footprints(&shifts, pad, kept, side, &mut footprints);
        Ok(Self {
            patch_size,
            crop,
            kept,
            crop_start,
            pad,
            side,
            center,
            shifts,
            footprints,
        })
    }

    /// Number of patches.
    pub fn len(&self) -> usize {
        self.shifts.len()
    }

    /// Always false: a geometry has at least one patch.
    pub fn is_empty(&self) -> bool {
        self.shifts.is_empty()
    }

    /// Patch side `N`.
    pub fn patch_size(&self) -> usize {
        self.patch_size
    }

    /// The crop parameter `M` as given.
    pub fn crop(&self) -> usize {
        self.crop
    }

    /// Side of the kept centre, `m = 2·(M/2)` (an odd `M` keeps `M - 1` pixels).
    pub fn kept(&self) -> usize {
        self.kept
    }

    /// First kept row and column of a patch, `N/2 - M/2`.
    pub fn crop_start(&self) -> usize {
        self.crop_start
    }

    /// Padding `p` on each side (always even).
    pub fn pad(&self) -> usize {
        self.pad
    }

    /// Canvas side `S = m + 2p`.
    pub fn side(&self) -> usize {
        self.side
    }

    /// Mean offset `[x, y]` in `f32`, subtracted from every offset.
    pub fn center(&self) -> [f32; 2] {
        self.center
    }

    /// Centred offsets `a_k = offset_k - center`, `[x, y]` in `f32`.
    pub fn shifts(&self) -> &[[f32; 2]] {
        &self.shifts
    }

    /// Per-patch footprints on the canvas.
    pub fn footprints(&self) -> &[Footprint] {
        &self.footprints
    }

    /// Checks that a patch stack matches this geometry and returns it as `(n, N, N)`.
    pub fn check_patches<'a, T, D: Dimension>(
        &self,
        patches: ArrayView<'a, T, D>,
    ) -> Result<ArrayView3<'a, T>> {
        let stack = patch_stack(patches)?;
        let n = stack.dim().0;
        if n != self.len() {
            return Err(Error::CountMismatch {
                patches: n,
                offsets: self.len(),
            });
        }
        self.check_chunk(stack)
    }

    /// Checks that a chunk of patches (any count, none included) has this geometry's patch
    /// side and returns it as `(k, N, N)`.
    pub fn check_chunk<'a, T, D: Dimension>(
        &self,
        patches: ArrayView<'a, T, D>,
    ) -> Result<ArrayView3<'a, T>> {
        let stack = stack_view(patches)?;
        let size = stack.dim().1;
        if size != self.patch_size {
            return Err(Error::PatchSize {
                expected: self.patch_size,
                found: size,
            });
        }
        Ok(stack)
    }
}

/// Something about a scan that is legal but probably not what the caller meant.
///
/// The result is computed as asked; front ends show these as warnings (stderr in the CLI,
/// `warnings.warn` in Python).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ScanWarning {
    /// One patch lies so far from the rest that it alone makes the canvas far larger.
    Outlier {
        /// Index of the patch.
        index: usize,
        /// Its `[x, y]` position (after the `f32` cast).
        position: [f32; 2],
        /// Canvas side with it.
        side: usize,
        /// About the canvas side without it.
        side_without: usize,
    },
    /// The positions differ, but all lie within less than one pixel of each other: probably
    /// positions in metres or micrometres rather than pixels.
    SubPixelSpan {
        /// Number of patches.
        n: usize,
        /// The larger of the x and y spans, in pixels.
        span: f32,
    },
}

impl std::fmt::Display for ScanWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanWarning::Outlier {
                index,
                position: [x, y],
                side,
                side_without,
            } => write!(
                f,
                "patch {index} at [x, y] = [{x}, {y}] lies far from the rest of the scan: it alone makes the canvas {side}×{side} pixels instead of about {side_without}×{side_without}"
            ),
            ScanWarning::SubPixelSpan { n, span } => write!(
                f,
                "all {n} positions lie within {span} pixels of each other; offsets are [x, y] in pixels (divide positions in metres by the pixel size first)"
            ),
        }
    }
}

impl Geometry {
    /// Warnings about this scan (see [`ScanWarning`]); empty for an ordinary scan.
    pub fn warnings(&self) -> Vec<ScanWarning> {
        let n = self.len();
        let mut out = Vec::new();
        if n < 2 {
            return out;
        }
        // Per axis: the indices of the two smallest and two largest shifts.
        let mut ext = [[0_usize; 4]; 2];
        for (axis, e) in ext.iter_mut().enumerate() {
            let at = |k: usize| self.shifts[k][axis];
            let (lo, hi) = (extremes(n, &at, false), extremes(n, &at, true));
            *e = [lo.0, lo.1, hi.0, hi.1];
        }
        let span = |axis: usize, skip: Option<usize>| {
            let [lo1, lo2, hi1, hi2] = ext[axis];
            let lo = if Some(lo1) == skip { lo2 } else { lo1 };
            let hi = if Some(hi1) == skip { hi2 } else { hi1 };
            self.shifts[hi][axis] - self.shifts[lo][axis]
        };
        let full = span(0, None).max(span(1, None));
        // All positions equal is a deliberate test set-up more often than a unit mistake.
        if full > 0.0 && full < 1.0 {
            out.push(ScanWarning::SubPixelSpan { n, span: full });
            return out;
        }
        if n < 3 {
            return out;
        }
        let mut candidates: Vec<usize> = ext.iter().flat_map(|e| [e[0], e[2]]).collect();
        candidates.sort_unstable();
        candidates.dedup();
        for k in candidates {
            let without = span(0, Some(k)).max(span(1, Some(k)));
            let side_without = self.kept + without.ceil() as usize + 2;
            if self.side >= 4 * side_without {
                let [ax, ay] = self.shifts[k];
                out.push(ScanWarning::Outlier {
                    index: k,
                    position: [ax + self.center[0], ay + self.center[1]],
                    side: self.side,
                    side_without,
                });
            }
        }
        out
    }
}

/// The indices of the two smallest (or largest) values of `at` (n ≥ 2).
fn extremes(n: usize, at: &impl Fn(usize) -> f32, largest: bool) -> (usize, usize) {
    let key = |k: usize| if largest { -at(k) } else { at(k) };
    let (mut first, mut second) = (0, 1);
    if key(second) < key(first) {
        std::mem::swap(&mut first, &mut second);
    }
    for k in 2..n {
        if key(k) < key(first) {
            second = first;
            first = k;
        } else if key(k) < key(second) {
            second = k;
        }
    }
    (first, second)
}

/// Accepts `(n, N, N)` or `(n, N, N, 1)` patches, `n ≥ 1`, and returns the `(n, N, N)` view.
pub fn patch_stack<'a, T, D: Dimension>(patches: ArrayView<'a, T, D>) -> Result<ArrayView3<'a, T>> {
    let stack = stack_view(patches)?;
    if stack.dim().0 == 0 {
        return Err(Error::NoPatches);
    }
    Ok(stack)
}

/// `(n, N)` of a patch stack of `shape` `(n, N, N)` or `(n, N, N, 1)`, `n ≥ 1`: the check
/// [`patch_stack`] makes, for arrays not yet in memory.
pub fn stack_shape(shape: &[usize]) -> Result<(usize, usize)> {
    let square = match shape {
        [n, r, c] | [n, r, c, 1] if r == c && *r > 0 => Some((*n, *r)),
        _ => None,
    };
    match square {
        Some((0, _)) => Err(Error::NoPatches),
        Some(dims) => Ok(dims),
        None => Err(Error::PatchShape {
            shape: shape.to_vec(),
        }),
    }
}

/// `(n, N, N)` or `(n, N, N, 1)` patches, any `n`, as the `(n, N, N)` view.
fn stack_view<'a, T, D: Dimension>(patches: ArrayView<'a, T, D>) -> Result<ArrayView3<'a, T>> {
    let shape = patches.shape().to_vec();
    let bad = || Error::PatchShape {
        shape: shape.clone(),
    };
    let view = match shape.len() {
        3 => patches.into_dyn(),
        4 if shape[3] == 1 => patches.into_dyn().index_axis_move(Axis(3), 0),
        _ => return Err(bad()),
    };
    let stack = view.into_dimensionality::<Ix3>().map_err(|_| bad())?;
    let (_, rows, cols) = stack.dim();
    if rows != cols || rows == 0 {
        return Err(bad());
    }
    Ok(stack)
}

/// Accepts offsets with `n` leading and exactly two values `[x, y]` after it, in C order of the
/// trailing axes: `(n, 2)`, PtychoPINN's `(n, 1, 1, 2)` and its data container's `(n, 1, 2, 1)`,
/// or any `(n, ...)` whose trailing axes multiply to 2. Returns them as pairs.
pub fn offset_pairs<D: Dimension>(offsets: ArrayView<'_, f64, D>) -> Result<Vec<[f64; 2]>> {
    let shape = offsets.shape().to_vec();
    if shape.len() < 2 || shape[1..].iter().product::<usize>() != 2 {
        return Err(Error::OffsetShape { shape });
    }
    let mut pairs = memory::try_with_capacity(shape[0], || "the offsets".into())?;
    if let Some(flat) = offsets.as_slice() {
        pairs.extend(flat.chunks_exact(2).map(|p| [p[0], p[1]]));
        return Ok(pairs);
    }
    let flat = offsets.into_dyn();
    for row in flat.outer_iter() {
        let mut it = row.iter();
        // The shape check above guarantees exactly two values per row.
        if let (Some(&x), Some(&y)) = (it.next(), it.next()) {
            pairs.push([x, y]);
        }
    }
    Ok(pairs)
}

/// The positions as finite `f32` and their centre of mass as PtychoPINN's TensorFlow computes
/// it on CPU (`tf.reduce_mean` of the `f32` positions): a sequential `f32` sum in patch order,
/// then one `f32` division. Errors name the first non-finite position or the first partial
/// sum that overflows.
pub(crate) fn centre_of_mass(positions: &[[f64; 2]]) -> Result<(Vec<[f32; 2]>, [f32; 2])> {
    const AXES: [&str; 2] = ["x", "y"];
    let mut single = memory::try_with_capacity(positions.len(), || "the offsets as f32".into())?;
    for (index, &[x, y]) in positions.iter().enumerate() {
        single.push([to_finite_f32(x, index, "x")?, to_finite_f32(y, index, "y")?]);
    }
    let n = single.len() as f32;
    let mut sum = [0.0_f32; 2];
    for (index, p) in single.iter().enumerate() {
        for axis in 0..2 {
            sum[axis] += p[axis];
            if !sum[axis].is_finite() {
                return Err(Error::CenterOverflow {
                    index,
                    axis: AXES[axis],
                    value: positions[index][axis],
                });
            }
        }
    }
    Ok((single, [sum[0] / n, sum[1] / n]))
}

pub(crate) fn to_finite_f32(value: f64, index: usize, axis: &'static str) -> Result<f32> {
    let single = value as f32;
    if single.is_finite() {
        Ok(single)
    } else {
        Err(Error::NonFiniteOffset { index, axis, value })
    }
}

/// `p = ceil(max |a|)`, rounded up to even, with the canvas checked against the memory limit.
fn checked_pad(max_abs: f32, kept: usize) -> Result<usize> {
    let mut pad = (max_abs as f64).ceil();
    pad += pad % 2.0;
    let side = kept as f64 + 2.0 * pad;
    memory::check(side * side * BYTES_PER_CANVAS_PIXEL, side)?;
    Ok(pad as usize)
}

/// A complex64 image pixel plus its f32 weight.
pub const BYTES_PER_CANVAS_PIXEL: f64 = 12.0;

/// Every patch's footprint. Dispatches once to an SSE4.1 build where the CPU has it, so that
/// `floor` is one instruction instead of a call into libm; the results are the same either way.
/// (With the contiguous-offsets fast path and the memory limit read once, plan building at
/// n = 10,000 went from 0.75 ms to 0.25 ms.)
fn fill_footprints(
    shifts: &[[f32; 2]],
    pad: usize,
    kept: usize,
    side: usize,
    out: &mut Vec<Footprint>,
) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("sse4.1") {
        // SAFETY: the CPU supports SSE4.1, checked on the line above.
        return unsafe { footprints_sse41(shifts, pad, kept, side, out) };
    }
    footprints_portable(shifts, pad, kept, side, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.1")]
fn footprints_sse41(
    shifts: &[[f32; 2]],
    pad: usize,
    kept: usize,
    side: usize,
    out: &mut Vec<Footprint>,
) {
    footprints_portable(shifts, pad, kept, side, out)
}

/// A plain loop, not an iterator chain: closures would be compiled outside the SSE4.1 context.
#[inline(always)]
fn footprints_portable(
    shifts: &[[f32; 2]],
    pad: usize,
    kept: usize,
    side: usize,
    out: &mut Vec<Footprint>,
) {
    // `out` has room for every shift (reserved fallibly by the caller): no allocation here.
    for &[ax, ay] in shifts {
        out.push(Footprint {
            rows: axis_span(ay, pad, kept, side),
            cols: axis_span(ax, pad, kept, side),
        });
    }
}

/// Canvas coordinates along one axis whose sample `floor(c - shift)` lies in `p-1 ..= p+m-1`,
/// i.e. that read at least one pixel of the kept patch. `floor(c as f32 - shift)` is monotone in
/// `c`, so this is one contiguous range; it is found with the exact `f32` arithmetic.
#[inline(always)]
fn axis_span(shift: f32, pad: usize, kept: usize, side: usize) -> Span {
    let lo = pad as i64 - 1;
    let hi = (pad + kept) as i64 - 1;
    Span {
        start: first_at_least(lo, shift, side),
        end: first_at_least(hi + 1, shift, side),
    }
}

/// The smallest canvas coordinate in `0..=side` whose sample `floor(c - shift)` is at least
/// `target` (`side` if none is): a guess, then exact `f32` steps.
#[inline(always)]
fn first_at_least(target: i64, shift: f32, side: usize) -> usize {
    let guess = (target as f64 + shift as f64)
        .ceil()
        .clamp(0.0, side as f64) as usize;
    let mut c = guess;
    while c > 0 && sample_axis(c - 1, shift).0 >= target {
        c -= 1;
    }
    while c < side && sample_axis(c, shift).0 < target {
        c += 1;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Array3, Array4};

    #[test]
    fn even_pad_and_canvas_side() {
        let g = Geometry::new(&[[0.0, 0.0], [3.2, -1.0]], 32, 16).unwrap();
        // centre 1.6, shifts ±1.6 → p = 2, S = 16 + 4
        assert_eq!(g.center(), [1.6, -0.5]);
        assert_eq!(g.pad(), 2);
        assert_eq!(g.side(), 20);
        let g = Geometry::new(&[[0.0, 0.0], [5.0, 0.0]], 32, 16).unwrap();
        // shifts ±2.5 → ceil 3 → even 4
        assert_eq!(g.pad(), 4);
        assert_eq!(g.side(), 24);
    }

    #[test]
    fn odd_crop_keeps_one_less() {
        let g = Geometry::new(&[[0.0, 0.0]], 32, 11).unwrap();
        assert_eq!(g.kept(), 10);
        assert_eq!(g.crop_start(), 11);
        assert_eq!(g.side(), 10);
    }

    #[test]
    fn footprint_spans_m_plus_one_for_fractional_shifts() {
        let g = Geometry::new(&[[0.0, 0.0], [7.3, 2.6]], 64, 20).unwrap();
        for f in g.footprints() {
            assert_eq!(f.cols.len(), 21);
            assert_eq!(f.rows.len(), 21);
            assert!(f.cols.end <= g.side() && f.rows.end <= g.side());
        }
    }

    #[test]
    fn footprint_is_clipped_at_canvas_edge_for_zero_shift() {
        let g = Geometry::new(&[[4.0, 4.0]], 16, 8).unwrap();
        assert_eq!(g.pad(), 0);
        let f = g.footprints()[0];
        assert_eq!(f.cols, Span { start: 0, end: 8 });
        assert_eq!(f.rows, Span { start: 0, end: 8 });
    }

    #[test]
    fn patch_and_offset_shapes() {
        let p3 = Array3::<f32>::zeros((2, 8, 8));
        assert_eq!(patch_stack(p3.view()).unwrap().dim(), (2, 8, 8));
        let p4 = Array4::<f32>::zeros((2, 8, 8, 1));
        assert_eq!(patch_stack(p4.view()).unwrap().dim(), (2, 8, 8));
        let bad = Array4::<f32>::zeros((2, 8, 8, 3));
        assert!(matches!(
            patch_stack(bad.view()),
            Err(Error::PatchShape { .. })
        ));
        let rect = Array3::<f32>::zeros((2, 8, 9));
        assert!(matches!(
            patch_stack(rect.view()),
            Err(Error::PatchShape { .. })
        ));
        let o = Array2::from_shape_vec((2, 2), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(
            offset_pairs(o.view()).unwrap(),
            vec![[1.0, 2.0], [3.0, 4.0]]
        );
        let o4 = Array4::from_shape_vec((2, 1, 1, 2), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(
            offset_pairs(o4.view()).unwrap(),
            vec![[1.0, 2.0], [3.0, 4.0]]
        );
        let bad = Array2::<f64>::zeros((2, 3));
        assert!(matches!(
            offset_pairs(bad.view()),
            Err(Error::OffsetShape { .. })
        ));
    }
}
