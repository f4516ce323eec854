//! Splitting the canvas into row bands of equal work, and how many workers a job gets.

#[allow(unused_imports)]
use super::*;

/// Default footprint pixels a worker must have before another worker is worth waking
/// (measured with `ptychostitch bench`: at 100 patches of 21² one thread is fastest).
pub const DEFAULT_MIN_PIXELS_PER_WORKER: usize = 128 * 1024;

/// How a run is scheduled. None of it changes the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Schedule {
    /// Worker threads (0 = all cores of rayon's global pool).
    pub threads: usize,
    /// Instruction set.
    pub simd: Simd,
    /// Footprint pixels per worker below which fewer workers are used (0 = always all).
    pub min_pixels_per_worker: usize,
}

impl Default for Schedule {
    /// All cores, the best instruction set the CPU has, [`DEFAULT_MIN_PIXELS_PER_WORKER`].
    fn default() -> Self {
        Self {
            threads: 0,
            simd: Simd::Auto,
            min_pixels_per_worker: DEFAULT_MIN_PIXELS_PER_WORKER,
        }
    }
}

/// How much a run has to do, from the selected footprints clipped to the region.
pub(super) struct Work {
    /// Footprint pixels to compute.
    pub(super) pixels: usize,
    /// Rows from the first to the last that some selected patch changes.
    pub(super) rows: usize,
}

pub(super) fn work(geometry: &Geometry, selection: Selection<'_>, region: Region) -> Work {
    let (mut pixels, mut lo, mut hi) = (0, usize::MAX, 0);
    for i in 0..selection.len() {
        let (rows, cols) = clipped(geometry.footprints()[selection.get(i)], region);
        if !rows.is_empty() && !cols.is_empty() {
            pixels += rows.len() * cols.len();
            lo = lo.min(rows.start);
            hi = hi.max(rows.end);
        }
    }
    Work {
        pixels,
        rows: hi.saturating_sub(lo),
    }
}

/// A footprint clipped to a region: the rows and columns of the region it changes.
#[inline(always)]
pub(super) fn clipped(fp: crate::geometry::Footprint, region: Region) -> (Span, Span) {
    (
        fp.rows.intersect(region.rows),
        fp.cols.intersect(region.cols),
    )
}

/// Row boundaries `r0 = b0 < b1 < … = r1` of the region's rows `r0..r1` that give `pieces`
/// bands of about equal work (footprint pixels, plus a little per row for clearing and
/// normalising).
pub(super) fn band_bounds(
    geometry: &Geometry,
    selection: Selection<'_>,
    region: Region,
    pieces: usize,
) -> Vec<usize> {
    let (top, height) = (region.rows.start, region.rows.len());
    let pieces = pieces.clamp(1, height.max(1));
    if pieces == 1 {
        return vec![top, region.rows.end];
    }
    let mut delta = vec![0_i64; height + 1];
    for i in 0..selection.len() {
        let (rows, cols) = clipped(geometry.footprints()[selection.get(i)], region);
        if rows.is_empty() || cols.is_empty() {
            continue;
        }
        delta[rows.start - top] += cols.len() as i64;
        delta[rows.end - top] -= cols.len() as i64;
    }
    let per_row_base = (region.cols.len() / 8).max(1) as i64;
    let mut row_work = Vec::with_capacity(height);
    let mut covering = 0_i64;
    for d in &delta[..height] {
        covering += d;
        row_work.push(covering + per_row_base);
    }
    let total: i64 = row_work.iter().sum();
    let mut bounds = vec![top];
    let mut acc = 0_i64;
    for (y, w) in row_work.iter().enumerate() {
        acc += w;
        let next_cut = total * bounds.len() as i64 / pieces as i64;
        if acc >= next_cut && bounds.len() < pieces && y + 1 < height {
            bounds.push(top + y + 1);
        }
    }
    bounds.push(region.rows.end);
    bounds
}

/// One band of canvas rows and the slices of the outputs it owns.
pub(super) struct Band<'a, T> {
    pub(super) rows: Span,
    pub(super) image: Option<&'a mut [T]>,
    pub(super) weights: WeightCanvas<'a>,
}

pub(super) fn split_bands<'a, T>(
    width: usize,
    bounds: &[usize],
    mut image: Option<&'a mut [T]>,
    mut weights: WeightCanvas<'a>,
) -> Vec<Band<'a, T>> {
    let mut bands = Vec::with_capacity(bounds.len().saturating_sub(1));
    for pair in bounds.windows(2) {
        let len = (pair[1] - pair[0]) * width;
        let band_image = image.take().map(|rest| {
            let (head, tail) = rest.split_at_mut(len);
            image = Some(tail);
            head
        });
        let band_weights = match std::mem::replace(&mut weights, WeightCanvas::Skip) {
            WeightCanvas::Skip => WeightCanvas::Skip,
            WeightCanvas::Compute(rest) => {
                let (head, tail) = rest.split_at_mut(len);
                weights = WeightCanvas::Compute(tail);
                WeightCanvas::Compute(head)
            }
            WeightCanvas::Given(rest) => {
                let (head, tail) = rest.split_at(len);
                weights = WeightCanvas::Given(tail);
                WeightCanvas::Given(head)
            }
        };
        bands.push(Band {
            rows: Span {
                start: pair[0],
                end: pair[1],
            },
            image: band_image,
            weights: band_weights,
        });
    }
    bands
}
