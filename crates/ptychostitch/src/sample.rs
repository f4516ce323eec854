//! Pixel types the reassembly works on: complex (`Complex32`) and real (`f32`) patches.
//!
//! Both are handled as flat `f32` lanes: a complex pixel is two lanes (real, imaginary) that
//! share the same interpolation weights, exactly as PtychoPINN translates real and imaginary
//! parts with one set of weights.

use crate::kernel;
use num_complex::Complex32;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for num_complex::Complex32 {}
}

/// A pixel type: `f32` (one lane) or [`Complex32`] (two lanes, real then imaginary).
pub trait Sample:
    bytemuck::Pod + Send + Sync + PartialEq + std::fmt::Debug + sealed::Sealed
{
    /// Number of `f32` lanes in one pixel.
    const LANES: usize;
    /// The value `1` (`1 + 0i` for complex), used for the weight canvas.
    const ONE: Self;

    /// Divides one pixel (its `LANES` lanes) by `weight + 1e-9` as PtychoPINN's TensorFlow
    /// does: per lane for real pixels, [`crate::kernel::normalise_complex`] for complex ones.
    fn normalise(pixel: &mut [f32], weight: f32);
}

impl Sample for f32 {
    const LANES: usize = 1;
    const ONE: Self = 1.0;

    #[inline(always)]
    fn normalise(pixel: &mut [f32], weight: f32) {
        pixel[0] = kernel::normalise(pixel[0], weight);
    }
}

impl Sample for Complex32 {
    const LANES: usize = 2;
    const ONE: Self = Complex32::new(1.0, 0.0);

    #[inline(always)]
    fn normalise(pixel: &mut [f32], weight: f32) {
        (pixel[0], pixel[1]) = kernel::normalise_complex(pixel[0], pixel[1], weight);
    }
}

/// Views a slice of pixels as their `f32` lanes.
#[inline]
pub(crate) fn lanes<T: Sample>(pixels: &[T]) -> &[f32] {
    bytemuck::cast_slice(pixels)
}

/// Views a mutable slice of pixels as their `f32` lanes.
#[inline]
pub(crate) fn lanes_mut<T: Sample>(pixels: &mut [T]) -> &mut [f32] {
    bytemuck::cast_slice_mut(pixels)
}

/// The lanes of an array view in C order: borrowed where the view is C-contiguous, copied into
/// a fallibly allocated buffer otherwise (`what` names it in an out-of-memory error).
pub(crate) fn c_order_lanes<'v, T: Sample, D: ndarray::Dimension>(
    view: ndarray::ArrayView<'v, T, D>,
    what: impl FnOnce() -> String,
) -> crate::Result<std::borrow::Cow<'v, [f32]>> {
    if let Some(values) = view.to_slice() {
        return Ok(std::borrow::Cow::Borrowed(lanes(values)));
    }
    let mut out = crate::memory::try_zeroed_vec::<f32>(view.len() * T::LANES, what)?;
    for (dst, v) in out.chunks_exact_mut(T::LANES).zip(view.iter()) {
        dst.copy_from_slice(lanes(std::slice::from_ref(v)));
    }
    Ok(std::borrow::Cow::Owned(out))
}
