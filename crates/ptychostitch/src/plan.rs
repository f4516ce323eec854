//! [`Plan`]: the geometry of a scan, built once, executed on many patch stacks.

use crate::Implementation;
use crate::error::{Error, Result};
use crate::geometry::{Geometry, ScanWarning, offset_pairs};
use crate::interrupt::Interrupt;
use crate::memory::try_zeroed_vec;
use crate::parallel::{self, Job, Region, Schedule, Selection, Simd, WeightCanvas};
use crate::reference;
use crate::sample::Sample;
use ndarray::{Array2, ArrayView, ArrayViewMut2, Dimension};
use std::sync::OnceLock;

/// Which of PtychoPINN's two operations to compute (for streams and windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// The sum of the translated patches (`shift_and_sum`).
    ShiftAndSum,
    /// The sum divided by `1e-9 +` the weight canvas (`reassemble_position`).
    ReassemblePosition,
}

/// A reassembly plan: offsets, patch size `N` and crop `M`, validated and turned into a canvas
/// geometry once, then executed on any number of patch stacks.
///
/// This is the training-loop case: scan positions never change while patches change every
/// step. The plan caches the weight canvas (it depends on positions only).
///
/// Positions are `[x, y]` in pixels: x is the column (second array axis), y the row (first
/// array axis). They are re-centred on their mean, so adding a constant to every offset changes
/// nothing; a positive x offset moves patch content to larger column indices.
///
/// ```
/// use ndarray::{Array2, Array3};
/// use num_complex::Complex32;
/// use ptychostitch::Plan;
///
/// let offsets = Array2::from_shape_vec((2, 2), vec![0.0, 0.0, 3.5, 1.25]).unwrap();
/// let plan = Plan::new(offsets.view(), 32, 16).unwrap();
/// assert_eq!(plan.canvas_shape(), (20, 20));
/// let patches = Array3::from_elem((2, 32, 32), Complex32::new(1.0, 0.5));
/// let image = plan.reassemble_position(patches.view()).unwrap();
/// assert_eq!(image.dim(), (20, 20));
/// ```
#[derive(Debug, Clone)]
pub struct Plan {
    geometry: Geometry,
    schedule: Schedule,
    interrupt: Interrupt,
    implementation: Implementation,
    weights: OnceLock<Array2<f32>>,
}

impl Plan {
    /// Plans from offsets with `n` leading and two values `[x, y]` (pixels) after it — `(n, 2)`,
    /// `(n, 1, 1, 2)`, `(n, 1, 2, 1)`, … — the patch side `N` and the crop `M` (`2 <= M <= N`).
    pub fn new<D: Dimension>(
        offsets: ArrayView<'_, f64, D>,
        patch_size: usize,
        crop: i64,
    ) -> Result<Self> {
        Self::from_positions(&offset_pairs(offsets)?, patch_size, crop)
    }

    /// Plans from `[x, y]` positions in pixels, the patch side `N` and the crop `M`.
    pub fn from_positions(positions: &[[f64; 2]], patch_size: usize, crop: i64) -> Result<Self> {
        Ok(Self {
            geometry: Geometry::new(positions, patch_size, crop)?,
            schedule: Schedule::default(),
            interrupt: Interrupt::default(),
            implementation: Implementation::Fast,
            weights: OnceLock::new(),
        })
    }

    /// Splits the work for `threads` workers (0, the default, means all cores) and runs at most
    /// that many at once on the current rayon pool (the global one: one thread per core, created
    /// once per process). The result does not depend on it.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.schedule.threads = threads;
        self
    }

    /// Runs `implementation` in [`Plan::run`] and [`Plan::vjp`]: the fast path (the default)
    /// or the reference, the oracle (same bits). The named methods (`shift_and_sum`,
    /// `shift_and_sum_reference`, …) ignore it.
    pub fn with_implementation(mut self, implementation: Implementation) -> Self {
        self.implementation = implementation;
        self
    }

    /// The implementation [`Plan::run`] and [`Plan::vjp`] run.
    pub fn implementation(&self) -> Implementation {
        self.implementation
    }

    /// Chooses the kernel's instruction set. The result does not depend on it.
    pub fn with_simd(mut self, simd: Simd) -> Self {
        self.schedule.simd = simd;
        self
    }

    /// Uses fewer workers when each would get fewer than `pixels` footprint pixels (default
    /// 131,072: smaller scans run on the calling thread). 0 always uses every worker, which the
    /// tests do to exercise the band split on small inputs. The result does not depend on it.
    pub fn with_min_pixels_per_worker(mut self, pixels: usize) -> Self {
        self.schedule.min_pixels_per_worker = pixels;
        self
    }

    /// Lets the reference path stop early when `interrupt` says so ([`Error::Interrupted`]).
    pub fn with_interrupt(mut self, interrupt: Interrupt) -> Self {
        self.interrupt = interrupt;
        self
    }

    /// Warnings about the scan (an outlier that inflates the canvas, positions that span less
    /// than a pixel). The plan computes as asked; front ends show these.
    pub fn warnings(&self) -> Vec<ScanWarning> {
        self.geometry.warnings()
    }

    /// The thread setting (0 = all cores).
    pub fn threads(&self) -> usize {
        self.schedule.threads
    }

    /// The kernel that runs: `"avx512"`, `"avx2+fma"` or `"portable"`.
    pub fn kernel(&self) -> &'static str {
        self.schedule.simd.resolved()
    }

    /// The geometry: crop, pad, centre, per-patch shifts and footprints.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Number of patches the plan expects.
    pub fn len(&self) -> usize {
        self.geometry.len()
    }

    /// Always false: a plan has at least one patch.
    pub fn is_empty(&self) -> bool {
        self.geometry.is_empty()
    }

    /// Patch side `N`.
    pub fn patch_size(&self) -> usize {
        self.geometry.patch_size()
    }

    /// Padding `p` added on each side of the kept patch centre (always even).
    pub fn pad(&self) -> usize {
        self.geometry.pad()
    }

    /// Mean offset `[x, y]` (float32) that was subtracted from every offset.
    pub fn center(&self) -> [f32; 2] {
        self.geometry.center()
    }

    /// Output shape `(S, S)`, `S = m + 2p`.
    pub fn canvas_shape(&self) -> (usize, usize) {
        (self.geometry.side(), self.geometry.side())
    }

    /// The weight canvas `shift_and_sum(ones)`: how much patch weight lands on each pixel.
    /// Computed on first use (fast path) and cached.
    pub fn weights(&self) -> Result<&Array2<f32>> {
        if let Some(w) = self.weights.get() {
            return Ok(w);
        }
        let mut w = zeroed_canvas::<f32>(self.geometry.side())?;
        parallel::run::<f32>(
            &self.geometry,
            Job {
                patches: None,
                selection: self.everything(),
                region: Region::whole(&self.geometry),
                image: None,
                clear: true,
                weights: WeightCanvas::Compute(as_slice(&mut w)),
                normalise: false,
            },
            self.schedule,
        )?;
        Ok(self.weights.get_or_init(|| w))
    }

    /// Sum of the translated patches (`(n, N, N)` or `(n, N, N, 1)`), accumulated in patch order.
    pub fn shift_and_sum<T: Sample, D: Dimension>(
        &self,
        patches: ArrayView<'_, T, D>,
    ) -> Result<Array2<T>> {
        let mut out = zeroed_canvas::<T>(self.geometry.side())?;
        self.shift_and_sum_into(patches, out.view_mut())?;
        Ok(out)
    }

    /// [`Plan::shift_and_sum`] into a C-contiguous `(S, S)` buffer; every pixel is overwritten.
    pub fn shift_and_sum_into<T: Sample, D: Dimension>(
        &self,
        patches: ArrayView<'_, T, D>,
        mut out: ArrayViewMut2<'_, T>,
    ) -> Result<()> {
        let patches = self.geometry.check_patches(patches)?;
        let image = self.output_slice(&mut out)?;
        parallel::run(
            &self.geometry,
            Job {
                patches: Some(patches),
                selection: self.everything(),
                region: Region::whole(&self.geometry),
                image: Some(image),
                clear: true,
                weights: WeightCanvas::Skip,
                normalise: false,
            },
            self.schedule,
        )
    }

    /// `shift_and_sum(patches) / (1e-9 + weights)`: PtychoPINN's `reassemble_position`.
    /// Pixels no patch reaches are exactly 0.
    pub fn reassemble_position<T: Sample, D: Dimension>(
        &self,
        patches: ArrayView<'_, T, D>,
    ) -> Result<Array2<T>> {
        let mut out = zeroed_canvas::<T>(self.geometry.side())?;
        self.reassemble_position_into(patches, out.view_mut())?;
        Ok(out)
    }

    /// [`Plan::reassemble_position`] into a C-contiguous `(S, S)` buffer.
    ///
    /// The first call computes the weight canvas in the same pass and caches it.
    pub fn reassemble_position_into<T: Sample, D: Dimension>(
        &self,
        patches: ArrayView<'_, T, D>,
        mut out: ArrayViewMut2<'_, T>,
    ) -> Result<()> {
        let patches = self.geometry.check_patches(patches)?;
        let image = self.output_slice(&mut out)?;
        let mut fresh = None;
        let weights = match self.weights.get() {
            Some(w) => WeightCanvas::Given(w.as_slice().unwrap_or_default()),
            None => WeightCanvas::Compute(as_slice(
                fresh.insert(zeroed_canvas::<f32>(self.geometry.side())?),
            )),
        };
        parallel::run(
            &self.geometry,
            Job {
                patches: Some(patches),
                selection: self.everything(),
                region: Region::whole(&self.geometry),
                image: Some(image),
                clear: true,
                weights,
                normalise: true,
            },
            self.schedule,
        )?;
        if let Some(w) = fresh {
            let _ = self.weights.set(w);
        }
        Ok(())
    }

    /// The reference (oracle) shift-and-sum: the literal algorithm, `O(n·S²)`, one thread.
    pub fn shift_and_sum_reference<T: Sample, D: Dimension>(
        &self,
        patches: ArrayView<'_, T, D>,
    ) -> Result<Array2<T>> {
        let patches = self.geometry.check_patches(patches)?;
        reference::shift_and_sum(&self.geometry, patches, &self.interrupt)
    }

    /// The reference (oracle) `reassemble_position`.
    pub fn reassemble_position_reference<T: Sample, D: Dimension>(
        &self,
        patches: ArrayView<'_, T, D>,
    ) -> Result<Array2<T>> {
        let patches = self.geometry.check_patches(patches)?;
        reference::reassemble_position(&self.geometry, patches, &self.interrupt)
    }

    /// `op` by this plan's implementation ([`Plan::with_implementation`]): the one entry the
    /// front ends dispatch through (the named methods are this with fixed arguments).
    pub fn run<T: Sample, D: Dimension>(
        &self,
        op: Operation,
        patches: ArrayView<'_, T, D>,
    ) -> Result<Array2<T>> {
        match (op, self.implementation) {
            (Operation::ShiftAndSum, Implementation::Fast) => self.shift_and_sum(patches),
            (Operation::ReassemblePosition, Implementation::Fast) => {
                self.reassemble_position(patches)
            }
            (Operation::ShiftAndSum, Implementation::Reference) => {
                self.shift_and_sum_reference(patches)
            }
            (Operation::ReassemblePosition, Implementation::Reference) => {
                self.reassemble_position_reference(patches)
            }
        }
    }

    /// The reference (oracle) weight canvas.
    pub fn weights_reference(&self) -> Result<Array2<f32>> {
        reference::weights(&self.geometry, &self.interrupt)
    }

    pub(crate) fn schedule(&self) -> Schedule {
        self.schedule
    }

    pub(crate) fn interrupt(&self) -> &Interrupt {
        &self.interrupt
    }

    fn everything(&self) -> Selection<'static> {
        Selection::Range(0, self.geometry.len())
    }

    fn output_slice<'o, T: Sample>(
        &self,
        out: &'o mut ArrayViewMut2<'_, T>,
    ) -> Result<&'o mut [T]> {
        let side = self.geometry.side();
        let found = out.shape().to_vec();
        if found != [side, side] {
            return Err(Error::OutputShape {
                expected: side,
                found,
            });
        }
        out.as_slice_mut().ok_or(Error::OutputShape {
            expected: side,
            found,
        })
    }
}

/// An `S×S` canvas of zeros, or an error (not an abort) when memory runs out.
///
/// Zeroed by the allocator (fresh pages from the OS are already zero), not by a memset: every
/// band clears its own rows again before accumulating, as it must for caller-supplied buffers.
pub(crate) fn zeroed_canvas<T: Sample>(side: usize) -> Result<Array2<T>> {
    zeroed_array((side, side))
}

/// A `rows×cols` array of zeros, or an out-of-memory error.
pub(crate) fn zeroed_array<T: bytemuck::Zeroable>(shape: (usize, usize)) -> Result<Array2<T>> {
    let (rows, cols) = shape;
    let data = try_zeroed_vec::<T>(rows * cols, || format!("a {rows}×{cols} canvas"))?;
    Array2::from_shape_vec(shape, data).map_err(|_| Error::OutputShape {
        expected: rows,
        found: vec![rows * cols],
    })
}

fn as_slice<T>(a: &mut Array2<T>) -> &mut [T] {
    a.as_slice_mut().unwrap_or_default()
}
