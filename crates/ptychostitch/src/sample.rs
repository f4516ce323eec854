//! Pixel types the reassembly works on: complex (`Complex32`) and real (`f32`) patches.
//!
//! Both are handled as flat `f32` lanes: a complex pixel is two lanes (real, imaginary) that
//! share the same interpolation weights, exactly as PtychoPINN translates real and imaginary
//! parts with one set of weights.

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
}

impl Sample for f32 {
    const LANES: usize = 1;
    const ONE: Self = 1.0;
}

impl Sample for Complex32 {
    const LANES: usize = 2;
    const ONE: Self = Complex32::new(1.0, 0.0);
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
