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

/// The header that lets `kernel.cu` compile as plain C++ on a CPU.
pub const EMULATION_HEADER: &str = include_str!("emulation.h");

/// Name of the kernel's entry point.
pub const KERNEL_NAME: &str = "ptychostitch_stitch";

/// The backward kernels' names in [`KERNEL_SOURCE`]: patch pixels, offset sums, quotient rule.
pub const VJP_KERNEL_NAMES: [&str; 3] = [
    "ptychostitch_patch_vjp",
    "ptychostitch_shift_vjp",
    "ptychostitch_quotient_vjp",
];

/// Side of the square pixel tile one block computes (`PTYCHOSTITCH_TILE` in `kernel.cu`).
/// Measured on an H200 with a prototype of this kernel: 8 beat 16 (0.36 vs 0.48 ms at
/// n = 100,000) and 32 (0.73 ms).
pub const TILE: usize = 8;
