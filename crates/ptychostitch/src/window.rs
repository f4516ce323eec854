//! Canvas windows: any rectangle of the canvas, computed from just the patches that touch it.
//!
//! The window's geometry is the whole scan's (centring and padding use every offset), so windows
//! computed anywhere — another thread, process or machine — tile the canvas exactly: each window
//! equals the same rectangle of the one-shot canvas bit for bit. This is what the Dask front end
//! maps over tiles.

use crate::error::{Error, Result};
use crate::geometry::Span;
use crate::parallel::{self, Job, Region, Selection, WeightCanvas};
use crate::plan::{Operation, Plan};
use crate::sample::Sample;
use ndarray::{Array2, ArrayView, Dimension};
use std::ops::Range;

impl Plan {
    /// The patches whose footprint touches the window `rows × cols` (canvas rows are y,
    /// columns x), in increasing order. Patches outside it change none of its pixels.
    pub fn window_patches(&self, rows: Range<usize>, cols: Range<usize>) -> Result<Vec<usize>> {
        let region = self.region(rows, cols)?;
        Ok(self
            .geometry()
            .footprints()
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                !f.rows.intersect(region.rows).is_empty()
                    && !f.cols.intersect(region.cols).is_empty()
            })
            .map(|(k, _)| k)
            .collect())
    }

    /// The window `rows × cols` of `operation`'s canvas, from a stack holding the patches
    /// `indices` (strictly increasing; `patches` holds `indices[i]` at index `i`). `indices` must
    /// include every patch that touches the window ([`Plan::window_patches`]); others may be
    /// included and change nothing. Equal, bit for bit, to the same rectangle of the full canvas.
    pub fn window<T: Sample, D: Dimension>(
        &self,
        operation: Operation,
        rows: Range<usize>,
        cols: Range<usize>,
        patches: ArrayView<'_, T, D>,
        indices: &[usize],
    ) -> Result<Array2<T>> {
        let region = self.region(rows.clone(), cols.clone())?;
        let stack = self.geometry().check_chunk(patches)?;
        if stack.dim().0 != indices.len() {
            return Err(Error::WindowIndices {
                reason: format!(
                    "{} indices for a stack of {} patches",
                    indices.len(),
                    stack.dim().0
                ),
            });
        }
        self.check_window_indices(indices, rows, cols)?;
        let shape = (region.rows.len(), region.cols.len());
        let mut image = crate::plan::zeroed_array::<T>(shape)?;
        let normalise = operation == Operation::ReassemblePosition;
        let mut weights = match operation {
            Operation::ShiftAndSum => None,
            Operation::ReassemblePosition => Some(crate::plan::zeroed_array::<f32>(shape)?),
        };
        parallel::run(
            self.geometry(),
            Job {
                patches: Some(stack),
                selection: Selection::Indices(indices),
                region,
                image: Some(image.as_slice_mut().unwrap_or_default()),
                clear: true,
                weights: match weights.as_mut() {
                    Some(w) => WeightCanvas::Compute(w.as_slice_mut().unwrap_or_default()),
                    None => WeightCanvas::Skip,
                },
                normalise,
            },
            self.schedule(),
        )?;
        Ok(image)
    }

    /// [`Plan::window`] from patches given as runs of consecutive scan indices, read where they
    /// lie: `runs[i] = (start, stack)` holds patches `start..start + len` (`len` = the stack's
    /// first axis). Runs are in scan order and do not overlap; together they must hold every
    /// patch that touches the window ([`Plan::window_patches`]), and may hold others. No patch
    /// is copied to gather the touching ones (the Dask front end passes its chunks as they are).
    /// Equal, bit for bit, to the same rectangle of the full canvas: the runs are added in scan
    /// order, the image and the weights in one pass per run.
    pub fn window_runs<T: Sample, D: Dimension>(
        &self,
        operation: Operation,
        rows: Range<usize>,
        cols: Range<usize>,
        runs: &[(usize, ArrayView<'_, T, D>)],
    ) -> Result<Array2<T>> {
        let region = self.region(rows.clone(), cols.clone())?;
        let n = self.len();
        let mut stacks = Vec::with_capacity(runs.len());
        let mut end = 0;
        for (i, (start, patches)) in runs.iter().enumerate() {
            let stack = self.geometry().check_chunk(patches.view())?;
            let len = stack.dim().0;
            if i > 0 && *start < end {
                return Err(Error::WindowIndices {
                    reason: format!(
                        "runs must be in scan order without overlap; run {i} starts at {start}, \
                         before the previous one ends ({end})"
                    ),
                });
            }
            if start + len > n {
                return Err(Error::WindowIndices {
                    reason: format!(
                        "run {i} holds patches {start}..{}; the plan has {n} patches",
                        start + len
                    ),
                });
            }
            end = start + len;
            stacks.push((*start, stack));
        }
        let needed = self.window_patches(rows, cols)?;
        let mut run = stacks.iter().peekable();
        for &k in &needed {
            while run.next_if(|(start, s)| start + s.dim().0 <= k).is_some() {}
            if run.peek().is_none_or(|(start, _)| *start > k) {
                return Err(Error::WindowIndices {
                    reason: format!("patch {k} touches the window but is in no run"),
                });
            }
        }
        let shape = (region.rows.len(), region.cols.len());
        let mut image = crate::plan::zeroed_array::<T>(shape)?;
        let pixels = image.as_slice_mut().unwrap_or_default();
        let normalise = operation == Operation::ReassemblePosition;
        let mut weight_canvas = match normalise {
            true => Some(crate::plan::zeroed_array::<f32>(shape)?),
            false => None,
        };
        let mut weights = weight_canvas.as_mut().and_then(|w| w.as_slice_mut());
        // The runs in scan order, each adding its patches to the image and (in the same pass)
        // their weights; the last run also normalises. Patches that miss the window change
        // nothing, so the sums are the one-shot canvas's, added in the same order.
        let last = stacks.len().saturating_sub(1);
        for (i, (start, stack)) in stacks.iter().enumerate() {
            parallel::run(
                self.geometry(),
                Job {
                    patches: Some(*stack),
                    selection: Selection::Range(*start, start + stack.dim().0),
                    region,
                    image: Some(&mut *pixels),
                    clear: false,
                    weights: match weights.as_deref_mut() {
                        Some(w) => WeightCanvas::Compute(w),
                        None => WeightCanvas::Skip,
                    },
                    normalise: normalise && i == last,
                },
                self.schedule(),
            )?;
        }
        // No run at all: the window is zeros, which normalising leaves exactly as they are.
        Ok(image)
    }

    fn region(&self, rows: Range<usize>, cols: Range<usize>) -> Result<Region> {
        let side = self.geometry().side();
        if rows.start >= rows.end || cols.start >= cols.end || rows.end > side || cols.end > side {
            return Err(Error::WindowOutOfRange { rows, cols, side });
        }
        Ok(Region {
            rows: Span {
                start: rows.start,
                end: rows.end,
            },
            cols: Span {
                start: cols.start,
                end: cols.end,
            },
        })
    }

    fn check_window_indices(
        &self,
        indices: &[usize],
        rows: Range<usize>,
        cols: Range<usize>,
    ) -> Result<()> {
        let n = self.len();
        if let Some(w) = indices.windows(2).find(|w| w[0] >= w[1]) {
            return Err(Error::WindowIndices {
                reason: format!(
                    "must be strictly increasing; {} is followed by {}",
                    w[0], w[1]
                ),
            });
        }
        if let Some(&last) = indices.last().filter(|&&k| k >= n) {
            return Err(Error::WindowIndices {
                reason: format!("patch {last} does not exist; the plan has {n} patches"),
            });
        }
        let needed = self.window_patches(rows, cols)?;
        let mut given = indices.iter().peekable();
        for k in needed {
            while given.next_if(|&&g| g < k).is_some() {}
            if given.next_if(|&&g| g == k).is_none() {
                return Err(Error::WindowIndices {
                    reason: format!(
                        "patch {k} touches the window but is not given (see window_patches)"
                    ),
                });
            }
        }
        Ok(())
    }
}
