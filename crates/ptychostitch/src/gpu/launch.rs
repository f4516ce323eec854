//! The kernel's launch arguments, byte for byte what `kernel.cu`'s `StitchArgs` declares. The
//! CUDA driver fills them with device addresses, the CPU emulation with host addresses.

use super::TILE;
use super::tiles::TileLists;
use crate::geometry::Geometry;

/// `StitchArgs` of `kernel.cu`, `#[repr(C)]`: pointers as 64-bit addresses.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Args {
    /// Patch values as `f32` lanes.
    pub patches: u64,
    /// Stride between patches, in elements (pixels).
    pub stride_n: i64,
    /// Stride between patch rows, in elements.
    pub stride_r: i64,
    /// Stride between patch columns, in elements.
    pub stride_c: i64,
    /// `[a_x, a_y]` per patch, `f32`.
    pub shifts: u64,
    /// CSR offsets of the tile lists (`i32`).
    pub tile_start: u64,
    /// CSR entries of the tile lists (`i32`).
    pub tile_patches: u64,
    /// Scan index of the stack's first patch.
    pub first: i32,
    /// Patches in the stack.
    pub count: i32,
    /// Tiles per row.
    pub tiles_x: i32,
    /// Canvas side `S`.
    pub side: i32,
    /// Padding `p`.
    pub pad: i32,
    /// Kept side `m`.
    pub kept: i32,
    /// First kept row and column, `N/2 - M/2`.
    pub crop_start: i32,
    /// 1 (real) or 2 (complex).
    pub lanes: i32,
    /// 1: `reassemble_position`; 0: `shift_and_sum`.
    pub normalise: i32,
    /// The image, `S·S·lanes` `f32`, overwritten.
    pub image: u64,
    /// The weight canvas, `S·S` `f32`, written unless 0.
    pub weights: u64,
}

/// Where a patch stack lives: its first lane and its strides, in elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stack {
    /// Address of element `(0, 0, 0)`.
    pub address: u64,
    /// Patches in the stack.
    pub count: usize,
    /// Strides of the patch, row and column axes, in elements (may be negative).
    pub strides: [i64; 3],
    /// 1 (real) or 2 (complex).
    pub lanes: usize,
}

/// Addresses of the geometry's device (or host) copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tables {
    /// The `(n, 2)` `f32` shifts.
    pub shifts: u64,
    /// [`TileLists::start`].
    pub tile_start: u64,
    /// [`TileLists::patches`].
    pub tile_patches: u64,
}

impl Args {
    /// The arguments of one launch over the whole canvas.
    pub fn new(
        geometry: &Geometry,
        lists: &TileLists,
        tables: Tables,
        stack: Stack,
        image: u64,
        weights: u64,
        normalise: bool,
    ) -> Self {
        Self {
            patches: stack.address,
            stride_n: stack.strides[0],
            stride_r: stack.strides[1],
            stride_c: stack.strides[2],
            shifts: tables.shifts,
            tile_start: tables.tile_start,
            tile_patches: tables.tile_patches,
            first: 0,
            count: stack.count as i32,
            tiles_x: lists.tiles_x as i32,
            side: geometry.side() as i32,
            pad: geometry.pad() as i32,
            kept: geometry.kept() as i32,
            crop_start: geometry.crop_start() as i32,
            lanes: stack.lanes as i32,
            normalise: normalise as i32,
            image,
            weights,
        }
    }

    /// Blocks per grid axis (`x` and `y`); each block is `TILE×TILE` threads.
    pub fn grid(&self) -> (u32, u32) {
        (self.tiles_x as u32, self.tiles_x as u32)
    }
}

/// Threads per block axis.
pub const BLOCK: u32 = TILE as u32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_the_c_structs() {
        // 8 (patches) + 3·8 (strides) + 3·8 (tables) + 9·4 (ints) + 4 (padding) + 2·8 (outputs).
        assert_eq!(std::mem::size_of::<Args>(), 8 + 24 + 24 + 36 + 4 + 16);
        assert_eq!(std::mem::offset_of!(Args, image), 96);
        assert_eq!(std::mem::align_of::<Args>(), 8);
    }
}
