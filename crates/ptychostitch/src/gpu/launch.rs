//! The kernel's launch arguments, byte for byte what `kernel.cu`'s `StitchArgs` declares. The
//! CUDA driver fills them with device addresses, the CPU emulation with host addresses.

use super::TILE;
use super::tiles::TileLists;
use crate::error::{Error, Result};
use crate::geometry::{Geometry, stack_shape};

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

/// `VjpArgs` of `kernel.cu`, `#[repr(C)]`: the backward kernels' arguments (`docs/semantics.md`
/// §8). Addresses are 64-bit; a 0 address is C's null.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VjpArgs {
    /// The translated patches' `f32` lanes, or 0 for patches of ones (the weight canvas).
    pub patches: u64,
    /// Stride between patches, in elements.
    pub stride_n: i64,
    /// Stride between patch rows, in elements.
    pub stride_r: i64,
    /// Stride between patch columns, in elements.
    pub stride_c: i64,
    /// `[a_x, a_y]` per patch, `f32`.
    pub shifts: u64,
    /// Per patch: row start, row end, column start, column end (`i32`) of its footprint.
    pub footprints: u64,
    /// The canvas cotangent, `S·S·lanes` `f32`.
    pub cot: u64,
    /// `reassemble_position`'s output (quotient kernel), `S·S·lanes` `f32`.
    pub output: u64,
    /// The weight canvas (quotient kernel), `S·S` `f32`.
    pub weights: u64,
    /// Patches.
    pub count: i32,
    /// Canvas side `S`.
    pub side: i32,
    /// Padding `p`.
    pub pad: i32,
    /// Kept side `m`.
    pub kept: i32,
    /// First kept row and column.
    pub crop_start: i32,
    /// Patch side `N`.
    pub patch_size: i32,
    /// 1 (real) or 2 (complex).
    pub lanes: i32,
    /// The patches' cotangent, `n·N·N·lanes` `f32`, or 0.
    pub patch_grad: u64,
    /// Per patch sixteen `f64`: the eight x partial sums, then the eight y partial sums.
    pub shift_sums: u64,
    /// Quotient kernel: the image's cotangent, `S·S·lanes` `f32`.
    pub cot_image: u64,
    /// Quotient kernel: the weight canvas's cotangent, `S·S` `f32`.
    pub cot_weights: u64,
}

/// The grid of a kernel with one thread per pixel of a `side`×`side` plane, in `TILE`×`TILE`
/// blocks, `planes` of them folded into x (`ceil(side/TILE)` column tiles per plane: the
/// kernels' `ps_plane`). CUDA allows 2³¹ − 1 blocks along x but only 65,535 along y and z, so
/// the planes cannot go along z; a count beyond x's limit saturates here and
/// [`check_grid`] refuses it before any launch.
fn tile_grid(side: i32, planes: u32) -> (u32, u32, u32) {
    let t = (side.max(0) as u32).div_ceil(TILE as u32);
    let x = u64::from(t.max(1)) * u64::from(planes);
    (
        if t == 0 {
            0
        } else {
            u32::try_from(x).unwrap_or(u32::MAX)
        },
        t,
        1,
    )
}

/// CUDA's launch limits (compute capability 3.0 and later): grid x ≤ 2³¹ − 1, y and z ≤
/// 65,535; a block ≤ 1,024 threads, x and y ≤ 1,024, z ≤ 64. The emulator enforces them too,
/// so a grid that would fail on a GPU fails in CI.
pub fn check_grid(
    kernel: &str,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
) -> crate::Result<()> {
    let threads = u64::from(block.0) * u64::from(block.1) * u64::from(block.2);
    let fits = grid.0 <= i32::MAX as u32
        && grid.1 <= 65_535
        && grid.2 <= 65_535
        && block.0 <= 1024
        && block.1 <= 1024
        && block.2 <= 64
        && threads <= 1024;
    if fits {
        return Ok(());
    }
    Err(crate::Error::Gpu {
        reason: format!(
            "launching {kernel} with grid {grid:?} and block {block:?}: beyond CUDA's limits \
             (grid x ≤ 2³¹ − 1, y and z ≤ 65,535; at most 1,024 threads a block)"
        ),
    })
}

/// A convention as the kernels take it: 0 TensorFlow, 1 torch.
fn convention_code(convention: crate::kernel::Convention) -> i32 {
    match convention {
        crate::kernel::Convention::TensorFlow => 0,
        crate::kernel::Convention::Torch => 1,
    }
}

/// The arguments of the extraction kernel (`ExtractArgs` in `kernel.cu`), passed by value.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ExtractArgs {
    /// The images' `f32` lanes.
    pub images: u64,
    /// Stride between images, in elements.
    pub stride_b: i64,
    /// Stride between image rows, in elements.
    pub stride_r: i64,
    /// Stride between image columns, in elements.
    pub stride_c: i64,
    /// `[a_x, a_y]` per output patch, `f32`.
    pub shifts: u64,
    /// Output patches, `B·C`.
    pub count: i32,
    /// Patches per image, `C`.
    pub per_image: i32,
    /// Image side `S`.
    pub side: i32,
    /// Output side `N`.
    pub patch_size: i32,
    /// `(S − N)/2`.
    pub trim: i32,
    /// 1 (real) or 2 (complex).
    pub lanes: i32,
    /// 0: TensorFlow's arithmetic, 1: torch's.
    pub convention: i32,
    /// Unused (keeps `out` 8-byte aligned in both languages).
    pub reserved: i32,
    /// Forward: the patches, `B·C·N·N·lanes` `f32`.
    pub out: u64,
    /// Backward: the patches' cotangent, `B·C·N·N·lanes` `f32`.
    pub cot: u64,
    /// Backward: the images' cotangent, `B·S·S·lanes` `f32`, or 0.
    pub image_grad: u64,
    /// Backward: per output patch sixteen `f64` partial sums of its offset's cotangent, or 0.
    pub shift_sums: u64,
}

impl ExtractArgs {
    /// `extraction`'s fields for images of `lanes` lanes; addresses and strides are left 0 for
    /// the caller to fill.
    pub fn new(extraction: &crate::Extraction, lanes: usize) -> Self {
        Self {
            count: extraction.shifts().len() as i32,
            per_image: extraction.per_image() as i32,
            side: extraction.image_side() as i32,
            patch_size: extraction.output_shape().1 as i32,
            trim: extraction.trim() as i32,
            lanes: lanes as i32,
            convention: convention_code(extraction.convention()),
            ..Self::default()
        }
    }

    /// Its grid: `ceil(N/8)²` tiles per output patch, the patches folded into x.
    pub fn grid(&self) -> (u32, u32, u32) {
        tile_grid(self.patch_size, self.count as u32)
    }

    /// The images' cotangent kernel's grid: `ceil(S/8)²` tiles per image, folded into x.
    pub fn image_grid(&self) -> (u32, u32, u32) {
        tile_grid(self.side, (self.count / self.per_image.max(1)) as u32)
    }
}

/// The arguments of the region kernels (`RegionArgs` in `kernel.cu`), passed by value.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RegionArgs {
    /// The patches' `f32` lanes, `B·C·N·N·lanes`, C order.
    pub patches: u64,
    /// The weights, `(1|B)·(1|C)·N·N` `f32`, C order.
    pub weights: u64,
    /// `[t_x, t_y]` per patch, `f32`.
    pub shifts: u64,
    /// The numerators, `B·P·P·lanes` `f32`.
    pub num: u64,
    /// The denominators, `B·P·P` `f32`.
    pub den: u64,
    /// The regions, `B·P·P·lanes` `f32`.
    pub out: u64,
    /// Samples `B`.
    pub samples: i32,
    /// Channels `C`.
    pub channels: i32,
    /// Patch side `N`.
    pub patch_size: i32,
    /// Region side `P`.
    pub side: i32,
    /// `(P − N)/2`.
    pub origin: i32,
    /// 1 (real) or 2 (complex).
    pub lanes: i32,
    /// 0: TensorFlow's arithmetic, 1: torch's.
    pub convention: i32,
    /// 1: the numerator sums `u·v` (torch), 0: `u` (TensorFlow).
    pub weighted: i32,
    /// 1 when the weights have one slice per sample.
    pub weights_per_sample: i32,
    /// 1 when the weights have one slice per channel.
    pub weights_per_channel: i32,
    /// 1: the support mask `den > limit` multiplies the numerator.
    pub support: i32,
    /// The support threshold.
    pub limit: f32,
    /// `g`: 0 `den + a`, 1 `max(den, a)`, 2 `1`, 3 `a·den + b`.
    pub g_kind: i32,
    /// `g`'s first parameter.
    pub g_a: f32,
    /// `g`'s second parameter.
    pub g_b: f32,
    /// Unused (the struct's size a multiple of 8 in both languages).
    pub reserved: i32,
}

impl RegionArgs {
    /// `region`'s fields for `lanes` lanes and weights of `weight_shape` `(1|B, 1|C, N, N)`;
    /// addresses and the normalisation ([`RegionArgs::normalise_by`]) are left for the caller.
    pub fn new(region: &crate::region::Region, lanes: usize, weight_shape: [usize; 2]) -> Self {
        let options = region.options();
        Self {
            samples: region.samples() as i32,
            channels: region.channels() as i32,
            patch_size: region.patch_size() as i32,
            side: region.side() as i32,
            origin: region.origin() as i32,
            lanes: lanes as i32,
            convention: convention_code(options.convention),
            weighted: i32::from(options.numerator == crate::region::Numerator::Weighted),
            weights_per_sample: i32::from(weight_shape[0] != 1),
            weights_per_channel: i32::from(weight_shape[1] != 1),
            ..Self::default()
        }
    }

    /// The normalisation from its whole-batch facts ([`crate::region::Region::normalisation`]).
    pub fn normalise_by(
        &mut self,
        limit: Option<f32>,
        g: crate::kernel::Denominator,
    ) -> Result<()> {
        use crate::kernel::Denominator;
        self.support = i32::from(limit.is_some());
        self.limit = limit.unwrap_or(0.0);
        (self.g_kind, self.g_a, self.g_b) = match g {
            Denominator::Add(eps) => (0, eps, 0.0),
            Denominator::Clamp(eps) => (1, eps, 0.0),
            Denominator::One => (2, 0.0, 0.0),
            Denominator::Affine { scale, offset } => (3, scale, offset),
            other => {
                return Err(Error::Gpu {
                    reason: format!("the denominator {other:?} must be resolved first"),
                });
            }
        };
        Ok(())
    }

    /// Checks patches `(B, C, N, N)` and weights `(1|B, 1|C, N, N)` against `region`.
    pub fn check_inputs(
        region: &crate::region::Region,
        patches: (usize, usize, usize, usize),
        weights: (usize, usize, usize, usize),
    ) -> Result<()> {
        let (b, c, n) = (region.samples(), region.channels(), region.patch_size());
        let w = weights;
        if patches != (b, c, n, n)
            || (w.2, w.3) != (n, n)
            || ![1, b].contains(&w.0)
            || ![1, c].contains(&w.1)
        {
            return Err(Error::Gpu {
                reason: format!(
                    "patches {patches:?} or weights {w:?} do not fit {b}×{c} patches of {n}×{n}"
                ),
            });
        }
        Ok(())
    }

    /// The grid of both region kernels: `ceil(P/8)²` tiles per region, folded into x.
    pub fn grid(&self) -> (u32, u32, u32) {
        tile_grid(self.side, self.samples as u32)
    }
}

/// The arguments of the region reassembly's backward kernels (`RegionVjpArgs` in `kernel.cu`),
/// passed by value.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RegionVjpArgs {
    /// The forward's arguments; its `den` and `out` hold the forward's denominators and regions.
    pub region: RegionArgs,
    /// The regions' cotangent, `B·P·P·lanes` `f32`.
    pub cot: u64,
    /// The numerators' cotangent, `B·P·P·lanes` `f32` (written by the first kernel).
    pub dnum: u64,
    /// The denominators' cotangent, `B·P·P` `f32`.
    pub dden: u64,
    /// The patches' cotangent, `B·C·N·N·lanes` `f32`, or 0.
    pub patch_grad: u64,
    /// Sixteen `f64` per patch, or 0.
    pub shift_sums: u64,
    /// One `f32`: the regularised form's maximum's cotangent, or 0.
    pub extra: u64,
    /// `ceil(B·P·P / REDUCTION_BLOCK)` `f64`: that cotangent's block sums, or 0.
    pub blocks: u64,
    /// The regularised form's fraction of the maximum.
    pub max_fraction: f32,
    /// The maximum's pixel, or −1.
    pub at_max: i32,
    /// `ptychostitch_region_cot`: 0 the maximum's cotangent's block sums (a thread a block),
    /// 2 their total (one thread), 1 per pixel.
    pub phase: i32,
    /// Unused (the struct's size a multiple of 8 in both languages).
    pub reserved: i32,
}

impl RegionVjpArgs {
    /// The patch kernel's grid: `ceil(N/8)²` tiles per patch, folded into x.
    pub fn patch_grid(&self) -> (u32, u32, u32) {
        tile_grid(
            self.region.patch_size,
            (self.region.samples * self.region.channels) as u32,
        )
    }
}

impl VjpArgs {
    /// The geometry's fields; addresses are left 0 for the caller to fill.
    pub fn new(geometry: &Geometry, lanes: usize) -> Self {
        Self {
            count: geometry.len() as i32,
            side: geometry.side() as i32,
            pad: geometry.pad() as i32,
            kept: geometry.kept() as i32,
            crop_start: geometry.crop_start() as i32,
            patch_size: geometry.patch_size() as i32,
            lanes: lanes as i32,
            ..Self::default()
        }
    }

    /// The footprints table the kernels read: four `i32` per patch.
    pub fn footprint_table(geometry: &Geometry) -> Vec<i32> {
        geometry
            .footprints()
            .iter()
            .flat_map(|f| [f.rows.start, f.rows.end, f.cols.start, f.cols.end].map(|v| v as i32))
            .collect()
    }

    /// Grid of the patch kernel: `ceil(N/8)²` tiles per patch, folded into x.
    pub fn patch_grid(&self) -> (u32, u32, u32) {
        tile_grid(self.patch_size, self.count as u32)
    }

    /// Grid of the quotient kernel: the canvas in 8×8 tiles.
    pub fn canvas_grid(&self) -> (u32, u32) {
        let (x, y, _) = tile_grid(self.side, 1);
        (x, y)
    }
}

/// The arguments of the offsets' fold (`FoldArgs` in `kernel.cu`), passed by value: the
/// offsets' cotangent made on the device from the shift kernels' partial sums, as
/// the CPU paths make it on the host ([`crate::Plan::vjp`] re-centred, [`crate::Extraction::extract_vjp`] not).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FoldArgs {
    /// The image's partial sums, [`super::SHIFT_SUMS_PER_PATCH`] `f64` per patch.
    pub image_sums: u64,
    /// The weight canvas's partial sums, or 0.
    pub weight_sums: u64,
    /// The offsets' cotangent, `f64`: `(count, 2)` rows, or `(count / C, 1, 2, C)` when
    /// `per_image` is `C > 0`.
    pub out: u64,
    /// Two `f64` of scratch for the mean (re-centring only).
    pub mean: u64,
    /// Patches.
    pub count: i32,
    /// 0: `(count, 2)` rows; `C > 0`: PtychoPINN's channel layout.
    pub per_image: i32,
    /// 0 fold; 1 and 3 sum the rows into `mean`; 2 subtract it; [`FoldArgs::NARROW`] round
    /// `count` `f64` of `out` to `f32` in `narrowed`.
    pub phase: i32,
    /// 1: the last phase negates (the region's positions).
    pub negate: i32,
    /// Phase [`FoldArgs::NARROW`]'s destination: `count` `f32` rounded from `out`'s `f64`.
    pub narrowed: u64,
}

impl FoldArgs {
    /// Threads per block of phases 0, 2 and [`FoldArgs::NARROW`] (64 in `kernel.cu`).
    pub const BLOCK: u32 = 64;

    /// The phase that rounds `count` `f64` to `f32`, one thread each.
    pub const NARROW: i32 = 4;

    /// `(grid, block)` of this phase.
    pub fn launch_shape(&self) -> ((u32, u32, u32), (u32, u32, u32)) {
        if self.phase == 1 {
            let blocks = (self.count.max(0) as u32).div_ceil(crate::kernel::REDUCTION_BLOCK as u32);
            ((blocks.div_ceil(Self::BLOCK), 1, 1), (Self::BLOCK, 1, 1))
        } else if self.phase == 3 {
            ((1, 1, 1), (1, 1, 1))
        } else {
            (
                ((self.count.max(0) as u32).div_ceil(Self::BLOCK), 1, 1),
                (Self::BLOCK, 1, 1),
            )
        }
    }
}

/// The arguments of the positions' planning on the device (`ShiftArgs` in `kernel.cu`), passed
/// by value: every patch's `f32` translation from its position, with the host's arithmetic
/// ([`crate::region::Region::new`]'s `t = −(p − centre)`, [`crate::Extraction::new`]'s `p`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ShiftArgs {
    /// The positions, `f32` or `f64`.
    pub positions: u64,
    /// The translations, `count·2` `f32`, `[x, y]` per patch.
    pub shifts: u64,
    /// Two `f32`: the centre phase 1 writes; 0: no re-centring.
    pub centre: u64,
    /// Patches.
    pub count: i32,
    /// `C > 0`: positions `(count / C, 1, 2, C)`; 0: `(count, 2)` rows.
    pub per_image: i32,
    /// 1: the positions are `f64`.
    pub f64: i32,
    /// 1: the centre (one thread); 0: the translations (a thread per patch).
    pub phase: i32,
    /// 1: `t = −(p − centre)`; 0: `t = p`.
    pub negate: i32,
    /// Unused (the struct's size a multiple of 8 in both languages).
    pub reserved: i32,
}

impl ShiftArgs {
    /// `(grid, block)` of this phase.
    pub fn launch_shape(&self) -> ((u32, u32, u32), (u32, u32, u32)) {
        if self.phase == 1 {
            ((1, 1, 1), (1, 1, 1))
        } else {
            (((self.count.max(0) as u32).div_ceil(64), 1, 1), (64, 1, 1))
        }
    }
}

/// Where a patch stack lives: its first lane and its strides, in elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stack {
    /// Address of element `(0, 0, 0)`.
    pub address: u64,
    /// Patches in the stack.
    pub count: usize,
    /// Patch side `N`.
    pub size: usize,
    /// Strides of the patch, row and column axes, in elements (may be negative).
    pub strides: [i64; 3],
    /// 1 (real) or 2 (complex).
    pub lanes: usize,
}

impl Stack {
    /// A stack described the way DLPack (and NumPy) describe arrays: the address of element
    /// `(0, 0, 0)`, the shape `(n, N, N)` or `(n, N, N, 1)` and the strides in elements (`None`:
    /// C-contiguous). Checks the shape only; the caller vouches that the memory holds every
    /// element the strides reach.
    pub fn from_layout(
        address: u64,
        shape: &[i64],
        strides: Option<&[i64]>,
        lanes: usize,
    ) -> Result<Self> {
        let dims: Vec<usize> = shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::PatchShape {
                shape: shape.iter().map(|&d| d.max(0) as usize).collect(),
            })?;
        let (count, size) = stack_shape(&dims)?;
        let strides = match strides {
            Some(s) if s.len() == shape.len() => [s[0], s[1], s[2]],
            Some(s) => {
                return Err(Error::Gpu {
                    reason: format!("{} strides for a {}-axis stack", s.len(), shape.len()),
                });
            }
            None => {
                let plane = (size * size) as i64;
                [plane, size as i64, 1]
            }
        };
        if address == 0 {
            return Err(Error::Gpu {
                reason: "the patch stack's address is null".into(),
            });
        }
        check_aligned(address, "the patch stack")?;
        Ok(Self {
            address,
            count,
            size,
            strides,
            lanes,
        })
    }

    /// Checks that the stack is what `geometry` stitches: one patch per position, its patch
    /// side, and 1 (real) or 2 (complex) lanes per pixel. Every launcher checks this first.
    pub fn check(&self, geometry: &Geometry) -> Result<()> {
        if self.count != geometry.len() {
            return Err(Error::CountMismatch {
                patches: self.count,
                offsets: geometry.len(),
            });
        }
        if self.size != geometry.patch_size() {
            return Err(Error::PatchSize {
                expected: geometry.patch_size(),
                found: self.size,
            });
        }
        if !matches!(self.lanes, 1 | 2) {
            return Err(Error::Gpu {
                reason: format!(
                    "{} lanes per pixel: 1 (real) or 2 (complex) expected",
                    self.lanes
                ),
            });
        }
        Ok(())
    }
}

/// Checks that an output buffer described DLPack-style (`shape`, `strides` in elements, `None`:
/// C-contiguous) is a C-contiguous `(S, S)` or `(S, S, 1)` canvas of side `side`, as the kernel
/// writes it.
pub fn check_canvas_layout(shape: &[i64], strides: Option<&[i64]>, side: usize) -> Result<()> {
    let s = side as i64;
    let square = matches!(shape, [r, c] | [r, c, 1] if *r == s && *c == s);
    let contiguous = match strides {
        None => true,
        // A length-1 axis may have any stride; a 1-pixel canvas any row stride.
        Some([r, 1]) | Some([r, 1, _]) => *r == s || s == 1,
        Some(_) => false,
    };
    if square && contiguous {
        Ok(())
    } else {
        Err(Error::OutputShape {
            expected: side,
            found: shape.iter().map(|&d| d.max(0) as usize).collect(),
        })
    }
}

/// Refuses a device address the kernel cannot read `f32` lanes at: one not a multiple of 4
/// bytes (a DLPack view at an odd byte offset) would stop the GPU with a sticky
/// `CUDA_ERROR_MISALIGNED_ADDRESS`, which also ends the framework's context.
pub fn check_aligned(address: u64, what: &str) -> Result<()> {
    if address.is_multiple_of(4) {
        return Ok(());
    }
    Err(Error::Gpu {
        reason: format!(
            "{what} starts at {address:#x}, which is not a multiple of 4 bytes: the kernel reads float32 lanes; pass a copy (e.g. .clone() / .copy())"
        ),
    })
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
        // VjpArgs: 9·8 (addresses and strides) + 7·4 (ints) + 4 (padding) + 4·8 (outputs).
        assert_eq!(std::mem::size_of::<VjpArgs>(), 72 + 28 + 4 + 32);
        assert_eq!(std::mem::offset_of!(VjpArgs, count), 72);
        assert_eq!(std::mem::offset_of!(VjpArgs, lanes), 96);
        assert_eq!(std::mem::offset_of!(VjpArgs, patch_grad), 104);
        // ExtractArgs: 5·8 (addresses and strides) + 8·4 (ints) + 4·8 (outputs and cotangent).
        assert_eq!(std::mem::size_of::<ExtractArgs>(), 40 + 32 + 32);
        assert_eq!(std::mem::offset_of!(ExtractArgs, count), 40);
        assert_eq!(std::mem::offset_of!(ExtractArgs, out), 72);
        // RegionArgs: 6·8 (addresses) + 11·4 (ints) + 4 (limit) + 4·4 (g and padding).
        assert_eq!(std::mem::size_of::<RegionArgs>(), 48 + 44 + 4 + 16);
        assert_eq!(std::mem::offset_of!(RegionArgs, samples), 48);
        assert_eq!(std::mem::offset_of!(RegionArgs, limit), 92);
        assert_eq!(std::mem::offset_of!(RegionArgs, g_b), 104);
        assert_eq!(std::mem::offset_of!(VjpArgs, cot_weights), 128);
        // FoldArgs: 4·8 (addresses) + 4·4 (ints) + 8 (the narrowed address).
        assert_eq!(std::mem::size_of::<FoldArgs>(), 32 + 16 + 8);
        assert_eq!(std::mem::offset_of!(FoldArgs, count), 32);
        assert_eq!(std::mem::offset_of!(FoldArgs, phase), 40);
        assert_eq!(std::mem::offset_of!(FoldArgs, narrowed), 48);
        // ShiftArgs: 3·8 (addresses) + 6·4 (ints).
        assert_eq!(std::mem::size_of::<ShiftArgs>(), 24 + 24);
        assert_eq!(std::mem::offset_of!(ShiftArgs, count), 24);
        assert_eq!(std::mem::offset_of!(ShiftArgs, negate), 40);
        // RegionVjpArgs: RegionArgs (112) + 6·8 (addresses) + 4·4.
        assert_eq!(std::mem::size_of::<RegionArgs>(), 112);
        assert_eq!(std::mem::size_of::<RegionVjpArgs>(), 112 + 56 + 16);
        assert_eq!(std::mem::offset_of!(RegionVjpArgs, extra), 152);
        assert_eq!(std::mem::offset_of!(RegionVjpArgs, blocks), 160);
        assert_eq!(std::mem::offset_of!(RegionVjpArgs, at_max), 172);
    }

    #[test]
    fn stacks_from_dlpack_layouts() {
        let s = Stack::from_layout(64, &[5, 8, 8, 1], None, 2).unwrap();
        assert_eq!((s.count, s.size, s.strides, s.lanes), (5, 8, [64, 8, 1], 2));
        let s = Stack::from_layout(64, &[5, 8, 8], Some(&[1, 40, 5]), 1).unwrap();
        assert_eq!(s.strides, [1, 40, 5]);
        let s = Stack::from_layout(64, &[5, 8, 8, 1], Some(&[64, 8, 1, 77]), 1).unwrap();
        assert_eq!(s.strides, [64, 8, 1]);
        for shape in [
            &[5, 8, 7][..],
            &[5, 8, 8, 2],
            &[5, 8],
            &[5, -8, -8],
            &[5, 0, 0],
        ] {
            assert!(
                matches!(
                    Stack::from_layout(64, shape, None, 2),
                    Err(Error::PatchShape { .. })
                ),
                "{shape:?}"
            );
        }
        assert!(matches!(
            Stack::from_layout(64, &[0, 8, 8], None, 2),
            Err(Error::NoPatches)
        ));
        assert!(Stack::from_layout(64, &[5, 8, 8], Some(&[64, 8]), 2).is_err());
        assert!(Stack::from_layout(0, &[5, 8, 8], None, 2).is_err());
        // Not 4-byte aligned: refused before anything could launch.
        for address in [65, 66, 67] {
            let e = Stack::from_layout(address, &[5, 8, 8], None, 2).unwrap_err();
            assert!(e.to_string().contains("not a multiple of 4 bytes"), "{e}");
        }
        assert!(check_aligned(68, "`out`").is_ok());
        assert!(
            check_aligned(70, "`out`")
                .unwrap_err()
                .to_string()
                .contains("`out` starts at 0x46,")
        );
    }

    #[test]
    fn a_stack_must_be_the_plans() {
        let positions = [[0.0, 0.0], [1.5, -2.0], [3.0, 1.0]];
        let geometry = Geometry::new(&positions, 8, 4).unwrap();
        let stack = Stack::from_layout(64, &[3, 8, 8], None, 2).unwrap();
        assert!(stack.check(&geometry).is_ok());
        let with = |f: fn(&mut Stack)| {
            let mut s = stack;
            f(&mut s);
            s.check(&geometry)
        };
        assert!(matches!(
            with(|s| s.count = 2),
            Err(Error::CountMismatch { .. })
        ));
        assert!(matches!(with(|s| s.size = 9), Err(Error::PatchSize { .. })));
        assert!(matches!(with(|s| s.lanes = 3), Err(Error::Gpu { .. })));
    }

    #[test]
    fn canvases_must_be_c_contiguous_squares() {
        assert!(check_canvas_layout(&[9, 9, 1], None, 9).is_ok());
        assert!(check_canvas_layout(&[9, 9], Some(&[9, 1]), 9).is_ok());
        assert!(check_canvas_layout(&[9, 9, 1], Some(&[9, 1, 1]), 9).is_ok());
        assert!(check_canvas_layout(&[9, 9, 1], Some(&[9, 1, 81]), 9).is_ok());
        for (shape, strides) in [
            (&[9, 9, 1][..], Some(&[1, 9, 1][..])),
            (&[9, 9], Some(&[10, 1])),
            (&[9, 8], None),
            (&[9, 9, 2], None),
            (&[9, 9, 1], Some(&[18, 2, 1])),
        ] {
            assert!(
                matches!(
                    check_canvas_layout(shape, strides, 9),
                    Err(Error::OutputShape { .. })
                ),
                "{shape:?} {strides:?}"
            );
        }
    }
}
