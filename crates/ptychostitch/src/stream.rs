//! Streaming: patch stacks larger than memory, added chunk by chunk in index order.
//!
//! An [`Accumulator`] holds the image canvas (and, for `reassemble_position`, uses the plan's
//! weight canvas) and takes chunks of consecutive patches. Every pixel still receives its
//! patches in index order — chunk after chunk, and inside a chunk band by band as the one-shot
//! path does — so the result is bit-identical to [`Plan::shift_and_sum`] /
//! [`Plan::reassemble_position`] for every chunking and thread count. Memory: the canvas, the
//! weights and `O(threads·m²)`, whatever `n` is.

use crate::error::{Error, Result};
use crate::parallel::{self, Job, Region, Selection, WeightCanvas};
use crate::plan::{Operation, Plan};
use crate::sample::Sample;
use ndarray::{Array2, ArrayView, Dimension};

/// Adds patch chunks, in index order, into one canvas. Made by [`Plan::accumulator`].
///
/// ```
/// use ndarray::{Array2, Array3, s};
/// use ptychostitch::{Complex32, Operation, Plan};
///
/// let offsets = Array2::from_shape_fn((10, 2), |(k, a)| (k * (a + 1)) as f64 * 1.3);
/// let patches = Array3::from_elem((10, 32, 32), Complex32::new(1.0, 0.5));
/// let plan = Plan::new(offsets.view(), 32, 16).unwrap();
/// let mut acc = plan.accumulator::<Complex32>(Operation::ReassemblePosition).unwrap();
/// acc.add(0, patches.slice(s![..4, .., ..])).unwrap();
/// acc.add(4, patches.slice(s![4.., .., ..])).unwrap();
/// let image = acc.finish().unwrap();
/// assert_eq!(image, plan.reassemble_position(patches.view()).unwrap());
/// ```
#[derive(Debug)]
pub struct Accumulator<'p, T> {
    plan: &'p Plan,
    operation: Operation,
    image: Array2<T>,
    added: usize,
}

impl Plan {
    /// An accumulator for `operation` on this plan's canvas (allocated here, zeroed).
    pub fn accumulator<T: Sample>(&self, operation: Operation) -> Result<Accumulator<'_, T>> {
        if operation == Operation::ReassemblePosition {
            self.weights()?;
        }
        Ok(Accumulator {
            plan: self,
            operation,
            image: crate::plan::zeroed_canvas(self.geometry().side())?,
            added: 0,
        })
    }
}

impl<T: Sample> Accumulator<'_, T> {
    /// Adds the chunk `patches` (`(k, N, N)` or `(k, N, N, 1)`), which holds patches
    /// `start..start + k`. Chunks must come in order without gaps: `start` is the number of
    /// patches added so far.
    pub fn add<D: Dimension>(&mut self, start: usize, patches: ArrayView<'_, T, D>) -> Result<()> {
        let n = self.plan.len();
        if start != self.added {
            return Err(Error::ChunkOrder {
                expected: self.added,
                found: start,
            });
        }
        let stack = self.plan.geometry().check_chunk(patches)?;
        let len = stack.dim().0;
        if start + len > n {
            return Err(Error::ChunkTooLong { start, len, n });
        }
        let side = self.plan.geometry().side();
        parallel::run(
            self.plan.geometry(),
            Job {
                patches: Some(stack),
                selection: Selection::Range(start, start + len),
                region: Region::whole(self.plan.geometry()),
                image: Some(as_slice(&mut self.image, side)),
                clear: false,
                weights: WeightCanvas::Skip,
                normalise: false,
            },
            self.plan.schedule(),
        )?;
        self.added += len;
        Ok(())
    }

    /// Patches added so far (the `start` of the next chunk).
    pub fn added(&self) -> usize {
        self.added
    }

    /// The finished canvas: the sum, or the sum divided by the weights. Every patch must have
    /// been added.
    pub fn finish(mut self) -> Result<Array2<T>> {
        let expected = self.plan.len();
        if self.added != expected {
            return Err(Error::Incomplete {
                added: self.added,
                expected,
            });
        }
        if self.operation == Operation::ReassemblePosition {
            let side = self.plan.geometry().side();
            let weights = self.plan.weights()?;
            parallel::run(
                self.plan.geometry(),
                Job {
                    patches: None,
                    selection: Selection::Range(0, 0),
                    region: Region::whole(self.plan.geometry()),
                    image: Some(as_slice(&mut self.image, side)),
                    clear: false,
                    weights: WeightCanvas::Given(weights.as_slice().unwrap_or_default()),
                    normalise: true,
                },
                self.plan.schedule(),
            )?;
        }
        Ok(self.image)
    }
}

fn as_slice<T>(a: &mut Array2<T>, side: usize) -> &mut [T] {
    debug_assert_eq!(a.dim(), (side, side));
    a.as_slice_mut().unwrap_or_default()
}
