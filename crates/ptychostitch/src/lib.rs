//! # ptychostitch
//!
//! PtychoPINN-exact patch reassembly ("shift-and-sum", stitching) for ptychography.
//!
//! A reconstruction gives one small complex image (a *patch*) per scan position. Reassembly
//! crops the centre `M×M` of every patch, translates it by its sub-pixel scan position with
//! bilinear interpolation, adds everything onto one canvas in patch order and (for
//! [`reassemble_position`]) divides by the weight that landed on each pixel. The arithmetic is
//! PtychoPINN's (`ptycho/tf_helper.py`) to the bit; `docs/semantics.md` in the repository
//! spells it out.
//!
//! Two implementations give one answer:
//! - the **reference** ([`shift_and_sum_reference`], [`reassemble_position_reference`]): the
//!   literal algorithm, every patch padded to the whole canvas; slow on purpose, the oracle;
//! - the **fast path** (default everywhere): only each patch's `(m+1)²` footprint is touched,
//!   the canvas is split into row bands across threads, and the output is bit-identical to the
//!   reference for every input and every thread count.
//!
//! ## Conventions
//! - Offsets are `[x, y]` in pixels: **x is the column** (second array axis), **y the row**
//!   (first array axis). A positive x offset moves patch content to larger column indices.
//! - Offsets are cast to `f32` first (as PtychoPINN does) and re-centred on their mean, so a
//!   common offset changes nothing *up to that rounding*: positions near 10⁵ px keep only about
//!   0.01 px of resolution.
//! - Patches are `(n, N, N)` or `(n, N, N, 1)`; offsets have `n` leading and two values `[x, y]`
//!   after it: `(n, 2)`, `(n, 1, 1, 2)`, `(n, 1, 2, 1)`, …
//! - [`reassemble_position`] divides complex pixels as TensorFlow's complex division does: for
//!   finite values that is each part divided by `weight + 1e-9`; a NaN or infinite part turns
//!   the other part NaN ([`kernel::normalise_complex`]).
//! - `M` keeps `2·(M/2)` pixels: an odd `M` keeps `M - 1` (PtychoPINN's behaviour).
//! - No patch is ever skipped for lying near an edge: the canvas grows to hold them all.
//!
//! ```
//! use ndarray::{Array2, Array4};
//! use num_complex::Complex32;
//!
//! let patches = Array4::from_elem((3, 64, 64, 1), Complex32::new(2.0, -1.0));
//! let offsets = Array2::from_shape_vec((3, 2), vec![0.0, 0.0, 4.5, 0.0, 0.0, 4.5]).unwrap();
//! let image = ptychostitch::reassemble_position(patches.view(), offsets.view(), 20).unwrap();
//! // Where patches overlap, the average of equal patches is the patch value.
//! let centre = image[[image.nrows() / 2, image.ncols() / 2]];
//! assert!((centre - Complex32::new(2.0, -1.0)).norm() < 1e-6);
//! ```

#![warn(missing_docs)]

mod adjoint;
#[cfg(feature = "npy")]
pub mod atomic;
mod direct;
pub mod error;
mod extract;
pub mod geometry;
pub mod gpu;
mod interrupt;
pub mod kernel;
pub mod memory;
#[cfg(feature = "npy")]
pub mod npy;
mod parallel;
mod plan;
mod reference;
pub mod region;
mod sample;
pub mod splat;
mod stream;
pub mod synthetic;
mod window;

pub use adjoint::{Gradients, Wrt};
pub use error::{Error, Result};
pub use extract::Extraction;
pub use geometry::{Footprint, Geometry, ScanWarning, Span};
pub use interrupt::Interrupt;
pub use num_complex::Complex32;
pub use parallel::{Simd, parallel_runs};
pub use plan::{Operation, Plan};
pub use sample::Sample;
pub use stream::Accumulator;

use geometry::{offset_pairs, patch_stack};

/// Which of an operation's two implementations runs (RustFFT keeps its naive DFT behind the
/// same trait as its fast algorithms; this is our one selector). They give the same bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Implementation {
    /// The fast path (parallel, footprints only).
    #[default]
    Fast,
    /// The reference: literal, one thread, slow on purpose; the oracle.
    Reference,
}
use ndarray::{Array2, ArrayView, Dimension};

fn plan_for<T, D1: Dimension, D2: Dimension>(
    patches: &ArrayView<'_, T, D1>,
    offsets: ArrayView<'_, f64, D2>,
    crop: i64,
) -> Result<Plan> {
    let (n, size, _) = patch_stack(patches.view())?.dim();
    let positions = offset_pairs(offsets)?;
    if n != positions.len() {
        return Err(Error::CountMismatch {
            patches: n,
            offsets: positions.len(),
        });
    }
    Plan::from_positions(&positions, size, crop)
}

/// PtychoPINN's `shift_and_sum`: crop each patch to its centre `M×M`, translate it by its
/// re-centred `[x, y]` offset and sum in patch order. Fast path, all cores.
pub fn shift_and_sum<T: Sample, D1: Dimension, D2: Dimension>(
    patches: ArrayView<'_, T, D1>,
    offsets: ArrayView<'_, f64, D2>,
    crop: i64,
) -> Result<Array2<T>> {
    plan_for(&patches, offsets, crop)?.shift_and_sum(patches)
}

/// PtychoPINN's `reassemble_position`: [`shift_and_sum`] divided by `1e-9 +` the weight canvas.
pub fn reassemble_position<T: Sample, D1: Dimension, D2: Dimension>(
    patches: ArrayView<'_, T, D1>,
    offsets: ArrayView<'_, f64, D2>,
    crop: i64,
) -> Result<Array2<T>> {
    plan_for(&patches, offsets, crop)?.reassemble_position(patches)
}

/// The reference [`shift_and_sum`] (PtychoPINN's `shift_and_sum_old`): the oracle.
pub fn shift_and_sum_reference<T: Sample, D1: Dimension, D2: Dimension>(
    patches: ArrayView<'_, T, D1>,
    offsets: ArrayView<'_, f64, D2>,
    crop: i64,
) -> Result<Array2<T>> {
    plan_for(&patches, offsets, crop)?.shift_and_sum_reference(patches)
}

/// The reference [`reassemble_position`] (PtychoPINN's `reassemble_position_old`): the oracle.
pub fn reassemble_position_reference<T: Sample, D1: Dimension, D2: Dimension>(
    patches: ArrayView<'_, T, D1>,
    offsets: ArrayView<'_, f64, D2>,
    crop: i64,
) -> Result<Array2<T>> {
    plan_for(&patches, offsets, crop)?.reassemble_position_reference(patches)
}
