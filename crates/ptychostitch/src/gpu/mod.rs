//! The GPU path: one CUDA kernel (`kernel.cu`), deterministic and bit-identical to the
//! reference, and what it needs from the host.
//!
//! The kernel gives each canvas pixel a thread and each 8×8 tile of pixels a block; a block
//! walks the patches whose footprint meets its tile ([`tiles::TileLists`]), in index order, so
//! every pixel receives its patches in index order, as on the CPU. The arithmetic is
//! `docs/semantics.md` §2 with correctly rounded intrinsics.
//!
//! What is here is always compiled and tested, GPU or not: the kernel source, its launch
//! arguments ([`launch::Args`], the same bytes on a GPU and in the CPU emulation), the tile
//! lists, where NVRTC is looked for ([`libraries`]) and how streams are ordered ([`ordering`]). The `ptychostitch-kernel-emu` crate compiles the *same* kernel source as C++ and runs
//! it on the CPU in the normal test suite. The driver that loads CUDA at run time is behind the
//! `cuda` feature ([`cuda`]).

pub mod compose;
pub mod launch;
pub mod libraries;
pub mod ordering;
pub mod staging;
pub mod tiles;

#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "cuda")]
mod nvrtc;

/// The CUDA source of the kernel.
pub const KERNEL_SOURCE: &str = include_str!("kernel.cu");

/// The options every NVRTC compile of [`KERNEL_SOURCE`] takes (the architecture is added per
/// device): the arithmetic of `docs/semantics.md` §2 — no contraction of a multiply and an add
/// into an FMA, no flush of subnormals, IEEE division and square root. The one list: the CUDA
/// driver compiles with it, and the CI test that compiles the kernel with pip's NVRTC reads it
/// from the Python module (`_native.NVRTC_OPTIONS`), so dropping one fails CI.
pub const NVRTC_OPTIONS: &[&str] = &[
    "--fmad=false",
    "--ftz=false",
    "--prec-div=true",
    "--prec-sqrt=true",
];

/// The header that lets `kernel.cu` compile as plain C++ on a CPU.
pub const EMULATION_HEADER: &str = include_str!("emulation.h");

/// The backward kernels of [`KERNEL_SOURCE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VjpKernel {
    /// The patches' cotangent: one thread per patch pixel, gathering from the canvas pixels
    /// that read it.
    Patches = 0,
    /// The offsets' partial sums: one block per patch, [`SHIFT_SUMS_PER_PATCH`] `f64` each.
    Shifts = 1,
    /// The quotient rule of `reassemble_position`: one thread per canvas pixel.
    Quotient = 2,
}

/// Partial sums of the offsets' cotangent per patch that the shift kernel writes: eight for x,
/// then eight for y (the lanes of [`crate::kernel::ShiftGradient`]).
pub const SHIFT_SUMS_PER_PATCH: usize = 2 * crate::kernel::SHIFT_SLOTS;

/// Side of the square pixel tile one block computes (`PTYCHOSTITCH_TILE` in `kernel.cu`).
/// Measured on an H200 with a prototype of this kernel: 8 beat 16 (0.36 vs 0.48 ms at
/// n = 100,000) and 32 (0.73 ms).
pub const TILE: usize = 8;
