//! Each operation's sequence of kernel launches, written once for every launcher: the CUDA
//! driver (device memory, a caller's stream: `cuda::StreamLauncher`) and the CPU emulator (host
//! memory, the `ptychostitch-kernel-emu` crate). CI therefore tests the very composition the GPU
//! runs — which kernels, in which order, on which scratch buffers, with which arguments — and
//! not only each kernel's arithmetic.
//!
//! Everything here works on addresses: the inputs and outputs are the caller's (a framework's
//! tensors read in place through DLPack on the GPU), the scratch the launcher's. Nothing is
//! copied to the host except, for the region reassembly, its denominators when the
//! normalisation depends on the whole batch (a support threshold relative to their maximum, or
//! the regularised form's maximum: [`crate::region::Region::needs_batch_facts`]).

use super::launch::{
    Args, ExtractArgs, FoldArgs, RegionArgs, RegionVjpArgs, ShiftArgs, Stack, Tables, VjpArgs,
};
use super::tiles::TileLists;
use super::{SHIFT_SUMS_PER_PATCH, TILE, VjpKernel};
use crate::error::Result;
use crate::extract::Extraction;
use crate::geometry::Geometry;
use crate::plan::Operation;
use crate::region::Region;

/// The extraction's kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtractKernel {
    /// The patches, one thread per output pixel.
    Forward,
    /// The images' cotangent, one thread per image pixel (a gather).
    Images,
    /// The offsets' partial sums, one block of eight threads per patch.
    Shifts,
}

/// The region reassembly's kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKernel {
    /// Numerators and denominators, one thread per region pixel.
    Sums,
    /// The division, one thread per region pixel.
    Normalise,
    /// The support mask `den > limit`, one byte per region pixel (written at `out`).
    Mask,
}

/// The region reassembly's backward kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionVjpKernel {
    /// The numerators' and denominators' cotangents (phase 1, one thread per region pixel), or
    /// the regularised maximum's (phase 0, a thread per block of pixels; phase 2, one thread
    /// over the blocks: `kernel::blocked_sum`).
    Quotient,
    /// The patches' cotangent, one thread per patch pixel (a gather).
    Patches,
    /// The positions' partial sums, one block of eight threads per patch.
    Shifts,
}

/// One kernel launch: the entry point and its arguments; the grid follows from them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Launch {
    /// The forward reassembly.
    Stitch(Args),
    /// A backward kernel of the reassembly.
    Vjp(VjpKernel, VjpArgs),
    /// A phase of the offsets' fold.
    Fold(FoldArgs),
    /// An extraction kernel.
    Extract(ExtractKernel, ExtractArgs),
    /// A region kernel.
    Region(RegionKernel, RegionArgs),
    /// A region backward kernel.
    RegionVjp(RegionVjpKernel, RegionVjpArgs),
    /// A phase of the positions' planning.
    Shifts(ShiftArgs),
}

/// Every entry point of `kernel.cu`, as a launcher loads them.
pub const ENTRY_POINTS: [&str; 15] = [
    "ptychostitch_stitch",
    "ptychostitch_patch_vjp",
    "ptychostitch_shift_vjp",
    "ptychostitch_quotient_vjp",
    "ptychostitch_offsets_fold",
    "ptychostitch_extract",
    "ptychostitch_extract_image_vjp",
    "ptychostitch_extract_shift_vjp",
    "ptychostitch_region_sums",
    "ptychostitch_region_normalise",
    "ptychostitch_region_cot",
    "ptychostitch_region_patch_vjp",
    "ptychostitch_region_shift_vjp",
    "ptychostitch_shifts",
    "ptychostitch_region_mask",
];

/// A launch's `(grid, block)` dimensions, `(x, y, z)` each.
pub type LaunchShape = ((u32, u32, u32), (u32, u32, u32));

impl Launch {
    /// The index of its entry point in [`ENTRY_POINTS`].
    pub fn entry(&self) -> usize {
        match self {
            Launch::Stitch(_) => 0,
            Launch::Vjp(VjpKernel::Patches, _) => 1,
            Launch::Vjp(VjpKernel::Shifts, _) => 2,
            Launch::Vjp(VjpKernel::Quotient, _) => 3,
            Launch::Fold(_) => 4,
            Launch::Extract(ExtractKernel::Forward, _) => 5,
            Launch::Extract(ExtractKernel::Images, _) => 6,
            Launch::Extract(ExtractKernel::Shifts, _) => 7,
            Launch::Region(RegionKernel::Sums, _) => 8,
            Launch::Region(RegionKernel::Normalise, _) => 9,
            Launch::RegionVjp(RegionVjpKernel::Quotient, _) => 10,
            Launch::RegionVjp(RegionVjpKernel::Patches, _) => 11,
            Launch::RegionVjp(RegionVjpKernel::Shifts, _) => 12,
            Launch::Shifts(_) => 13,
            Launch::Region(RegionKernel::Mask, _) => 14,
        }
    }

    /// `(grid, block)`, checked against CUDA's launch limits ([`super::launch::check_grid`]):
    /// what every launcher launches.
    pub fn checked_shape(&self) -> Result<LaunchShape> {
        let (grid, block) = self.shape();
        super::launch::check_grid(ENTRY_POINTS[self.entry()], grid, block)?;
        Ok((grid, block))
    }

    /// `(grid, block)`.
    pub fn shape(&self) -> LaunchShape {
        let tile = (TILE as u32, TILE as u32, 1);
        let slots = (8, 1, 1);
        match self {
            Launch::Stitch(a) => {
                let (x, y) = a.grid();
                ((x, y, 1), tile)
            }
            Launch::Vjp(VjpKernel::Patches, a) => (a.patch_grid(), tile),
            Launch::Vjp(VjpKernel::Shifts, a) => ((a.count.max(0) as u32, 1, 1), slots),
            Launch::Vjp(VjpKernel::Quotient, a) => {
                let (x, y) = a.canvas_grid();
                ((x, y, 1), tile)
            }
            Launch::Fold(a) => a.launch_shape(),
            Launch::Extract(ExtractKernel::Forward, a) => (a.grid(), tile),
            Launch::Extract(ExtractKernel::Images, a) => (a.image_grid(), tile),
            Launch::Extract(ExtractKernel::Shifts, a) => ((a.count.max(0) as u32, 1, 1), slots),
            Launch::Region(_, a) => (a.grid(), tile),
            Launch::RegionVjp(RegionVjpKernel::Quotient, a) if a.phase == 0 => {
                let r = &a.region;
                let pixels = (r.samples.max(0) as u64) * (r.side.max(0) as u64).pow(2);
                let blocks = pixels.div_ceil(crate::kernel::REDUCTION_BLOCK as u64);
                (
                    (u32::try_from(blocks.div_ceil(64)).unwrap_or(u32::MAX), 1, 1),
                    (64, 1, 1),
                )
            }
            Launch::RegionVjp(RegionVjpKernel::Quotient, a) if a.phase == 2 => {
                ((1, 1, 1), (1, 1, 1))
            }
            Launch::RegionVjp(RegionVjpKernel::Quotient, a) => (a.region.grid(), tile),
            Launch::RegionVjp(RegionVjpKernel::Patches, a) => (a.patch_grid(), tile),
            Launch::RegionVjp(RegionVjpKernel::Shifts, a) => (
                ((a.region.samples * a.region.channels).max(0) as u32, 1, 1),
                slots,
            ),
            Launch::Shifts(a) => a.launch_shape(),
        }
    }
}

/// What runs kernels: device memory and a stream (the CUDA driver), or host memory and the
/// emulator. Scratch it hands out lives until it is dropped, and is released after the work
/// queued through it (stream-ordered on a GPU).
pub trait Launcher {
    /// `len` zeroed `f32`, for kernels queued later.
    fn zeros_f32(&mut self, len: usize) -> Result<u64>;
    /// `len` zeroed `f64`.
    fn zeros_f64(&mut self, len: usize) -> Result<u64>;
    /// A copy of host values, for kernels queued later.
    fn upload_f32(&mut self, values: &[f32]) -> Result<u64>;
    /// A copy of host values, for kernels queued later (tile lists, footprints).
    fn upload_i32(&mut self, values: &[i32]) -> Result<u64>;
    /// Queues `launch`.
    ///
    /// # Safety
    /// Every address in `launch` must be a live buffer of this launcher's memory, of the size
    /// its kernel reads or writes, until the launcher has run it.
    unsafe fn launch(&mut self, launch: &Launch) -> Result<()>;
    /// `len` `f32` at `address`, read once the work queued before is done.
    ///
    /// # Safety
    /// `address` must hold `len` `f32` of this launcher's memory.
    unsafe fn read_f32(&mut self, address: u64, len: usize) -> Result<Vec<f32>>;
    /// `len` `f64` at `address`, read once the work queued before is done.
    ///
    /// # Safety
    /// `address` must hold `len` `f64` of this launcher's memory.
    unsafe fn read_f64(&mut self, address: u64, len: usize) -> Result<Vec<f64>>;
}

/// Where a plan's tables are, in the launcher's memory: shifts and tile lists
/// ([`Tables`]), and the footprints ([`VjpArgs::footprint_table`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanTables {
    /// Shifts and tile lists.
    pub tables: Tables,
    /// Four `i32` per patch.
    pub footprints: u64,
}

/// A plan's tables uploaded through `launcher` as scratch (alive while it is): the tile lists
/// (returned, for the launch arguments) and where the shifts, lists and footprints are. For a
/// one-off call whose positions are known only then (an XLA custom call); a `GpuPlan` keeps its
/// own.
pub fn upload_plan<L: Launcher + ?Sized>(
    launcher: &mut L,
    geometry: &Geometry,
) -> Result<(TileLists, PlanTables)> {
    let lists = TileLists::new(geometry)?;
    let shifts: Vec<f32> = geometry.shifts().iter().flatten().copied().collect();
    let tables = PlanTables {
        tables: Tables {
            shifts: launcher.upload_f32(&shifts)?,
            tile_start: launcher.upload_i32(&lists.start)?,
            tile_patches: launcher.upload_i32(&lists.patches)?,
        },
        footprints: launcher.upload_i32(&VjpArgs::footprint_table(geometry))?,
    };
    Ok((lists, tables))
}

/// `len` `f64` at `from` rounded to `f32` at `to` (an offsets' cotangent in float32 offsets'
/// dtype, as the host's `as f32`): the fold's last phase.
///
/// # Safety
/// `from` must hold `len` `f64` and `to` `len` `f32` of the launcher's memory.
pub unsafe fn narrow<L: Launcher + ?Sized>(
    launcher: &mut L,
    from: u64,
    to: u64,
    len: usize,
) -> Result<()> {
    let count = i32::try_from(len).map_err(|_| crate::error::Error::Gpu {
        reason: format!("{len} values to narrow exceed the kernel's 32-bit index"),
    })?;
    let a = FoldArgs {
        out: from,
        narrowed: to,
        count,
        phase: FoldArgs::NARROW,
        ..FoldArgs::default()
    };
    // SAFETY: per this function's contract.
    unsafe { launcher.launch(&Launch::Fold(a)) }
}

/// The buffers of a reassembly's backward: inputs and where the cotangents go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyVjp {
    /// The patches (the forward's input).
    pub stack: Stack,
    /// The canvas cotangent, `S·S·lanes` `f32`.
    pub cot: u64,
    /// `reassemble_position`'s output, `S·S·lanes` `f32`; 0: recomputed.
    pub output: u64,
    /// The patches' cotangent, `n·N·N·lanes` `f32` C order; 0: not wanted.
    pub patch_grad: u64,
    /// The offsets' cotangent, `(n, 2)` `f64`; 0: not wanted.
    pub offsets_grad: u64,
}

/// The forward reassembly of `stack` into `image` (`S·S·lanes` `f32`).
///
/// # Safety
/// The addresses must be live buffers of the launcher's memory of the sizes named, `stack`
/// checked by the caller against `geometry` ([`Stack::check`]).
pub unsafe fn reassembly<L: Launcher + ?Sized>(
    launcher: &mut L,
    geometry: &Geometry,
    lists: &TileLists,
    tables: PlanTables,
    operation: Operation,
    stack: Stack,
    image: u64,
) -> Result<()> {
    stack.check(geometry)?;
    let normalise = operation == Operation::ReassemblePosition;
    let args = Args::new(geometry, lists, tables.tables, stack, image, 0, normalise);
    // SAFETY: forwarded from this function's contract.
    unsafe { launcher.launch(&Launch::Stitch(args)) }
}

/// The vector–Jacobian product of a reassembly: for `reassemble_position` the forward again
/// (its weight canvas, and its output when not given) and the quotient kernel; then the patch
/// kernel; then the shift kernel on the image's cotangent (and on the weight canvas's) and the
/// offsets' fold, re-centred — the order of `GpuPlan::vjp`'s composition, bit-identical to
/// [`crate::Plan::vjp`].
///
/// # Safety
/// As [`reassembly`], for every buffer of `io`.
pub unsafe fn reassembly_vjp<L: Launcher + ?Sized>(
    launcher: &mut L,
    geometry: &Geometry,
    lists: &TileLists,
    tables: PlanTables,
    operation: Operation,
    io: ReassemblyVjp,
) -> Result<()> {
    io.stack.check(geometry)?;
    let (side, l, count) = (geometry.side(), io.stack.lanes, geometry.len());
    let canvas = side * side;
    let mut args = VjpArgs::new(geometry, l);
    (args.patches, args.shifts, args.footprints) =
        (io.stack.address, tables.tables.shifts, tables.footprints);
    [args.stride_n, args.stride_r, args.stride_c] = io.stack.strides;
    args.cot = io.cot;
    let mut cot_weights = 0;
    if operation == Operation::ReassemblePosition {
        let weights = launcher.zeros_f32(canvas)?;
        let scratch = launcher.zeros_f32(canvas * l)?;
        let out = if io.output == 0 { scratch } else { io.output };
        let forward = Args::new(
            geometry,
            lists,
            tables.tables,
            io.stack,
            scratch,
            weights,
            true,
        );
        let mut q = args;
        (q.output, q.weights) = (out, weights);
        q.cot_image = launcher.zeros_f32(canvas * l)?;
        q.cot_weights = launcher.zeros_f32(canvas)?;
        // SAFETY: the caller's buffers per this function's contract; the scratch is the
        // launcher's, of the sizes the kernels write (S·S and S·S·lanes).
        unsafe {
            launcher.launch(&Launch::Stitch(forward))?;
            launcher.launch(&Launch::Vjp(VjpKernel::Quotient, q))?;
        }
        (args.cot, cot_weights) = (q.cot_image, q.cot_weights);
    }
    if io.patch_grad != 0 {
        let mut a = args;
        a.patch_grad = io.patch_grad;
        // SAFETY: as above; `patch_grad` holds n·N·N·lanes f32.
        unsafe { launcher.launch(&Launch::Vjp(VjpKernel::Patches, a))? };
    }
    if io.offsets_grad != 0 {
        let mut a = args;
        a.shift_sums = launcher.zeros_f64(count * SHIFT_SUMS_PER_PATCH)?;
        // SAFETY: as above; sixteen f64 per patch.
        unsafe { launcher.launch(&Launch::Vjp(VjpKernel::Shifts, a))? };
        let mut weight_sums = 0;
        if cot_weights != 0 {
            let mut w = args;
            (w.patches, w.lanes, w.cot) = (0, 1, cot_weights);
            w.shift_sums = launcher.zeros_f64(count * SHIFT_SUMS_PER_PATCH)?;
            // SAFETY: as above, on the S·S weight cotangent with patches of ones.
            unsafe { launcher.launch(&Launch::Vjp(VjpKernel::Shifts, w))? };
            weight_sums = w.shift_sums;
        }
        // SAFETY: as above; `offsets_grad` holds n·2 f64.
        unsafe {
            fold(
                launcher,
                count,
                (a.shift_sums, weight_sums),
                io.offsets_grad,
                Finish {
                    recentre: true,
                    ..Finish::default()
                },
            )?
        };
    }
    Ok(())
}

/// How the fold lays out and finishes the offsets' cotangent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Finish {
    /// `C > 0`: PtychoPINN's `(B, 1, 2, C)`; 0: `(count, 2)` rows.
    per_image: usize,
    /// Subtract the mean over the patches.
    recentre: bool,
    /// Negate at the end.
    negate: bool,
}

/// The offsets' fold: phase 0, then (re-centring) the mean -- phase 1 a thread per block of
/// rows, phase 3 one thread over the blocks (`kernel::blocked_sum`) -- and its subtraction
/// (phase 2).
///
/// # Safety
/// `sums` (and `weight_sums` unless 0) hold sixteen `f64` per patch, `out` `count·2` `f64`.
unsafe fn fold<L: Launcher + ?Sized>(
    launcher: &mut L,
    count: usize,
    (sums, weight_sums): (u64, u64),
    out: u64,
    finish: Finish,
) -> Result<()> {
    let mut a = FoldArgs {
        image_sums: sums,
        weight_sums,
        out,
        count: count as i32,
        per_image: finish.per_image as i32,
        negate: i32::from(finish.negate),
        ..FoldArgs::default()
    };
    if finish.recentre {
        // The mean, then two f64 per block of rows (the fixed-order sum, kernel::blocked_sum).
        let blocks = count.div_ceil(crate::kernel::REDUCTION_BLOCK);
        a.mean = launcher.zeros_f64(2 + 2 * blocks)?;
    }
    // SAFETY: per this function's contract; `mean` holds the mean and the block sums.
    unsafe { launcher.launch(&Launch::Fold(a))? };
    if finish.recentre {
        for phase in [1, 3, 2] {
            a.phase = phase;
            // SAFETY: as above.
            unsafe { launcher.launch(&Launch::Fold(a))? };
        }
    }
    Ok(())
}

/// Where the extraction and region kernels get every patch's `f32` translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shifts {
    /// The plan's own, computed on the host from its positions and uploaded with the launch.
    #[default]
    Planned,
    /// Planned on the device from these positions (the plan's own are then only its shape):
    /// nothing is read on the host and nothing waits. The host's arithmetic, bit for bit
    /// (`ptychostitch_shifts`); non-finite positions, an error on the host, give non-finite
    /// translations.
    From(Positions),
}

/// Positions in the launcher's memory, for the device to plan from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Positions {
    /// The first value's address.
    pub address: u64,
    /// `f64` values (else `f32`).
    pub f64: bool,
    /// `C > 0`: PtychoPINN's `(B, 1, 2, C)` `[x, y]`; 0: `(count, 2)` `[x, y]` rows.
    pub per_image: usize,
}

impl Shifts {
    /// The address of the `planned.len()·2` translations the kernels read: `planned` uploaded,
    /// or planned on the device as [`crate::region::Region::new`] (`region`: `t = −(p − centre)`,
    /// re-centred where `recentre`) or [`crate::Extraction::new`] (`t = p`) make them.
    ///
    /// # Safety
    /// `From`'s positions must hold `planned.len()·2` values of their type in the launcher's
    /// memory.
    unsafe fn address<L: Launcher + ?Sized>(
        self,
        launcher: &mut L,
        planned: &[[f32; 2]],
        region: bool,
        recentre: bool,
    ) -> Result<u64> {
        let positions = match self {
            Shifts::Planned => {
                let values: Vec<f32> = planned.iter().flatten().copied().collect();
                return launcher.upload_f32(&values);
            }
            Shifts::From(positions) => positions,
        };
        let count = planned.len();
        let mut a = ShiftArgs {
            positions: positions.address,
            shifts: launcher.zeros_f32(count * 2)?,
            count: i32::try_from(count).map_err(|_| crate::error::Error::Gpu {
                reason: format!("{count} positions exceed the kernel's 32-bit index"),
            })?,
            per_image: positions.per_image as i32,
            f64: i32::from(positions.f64),
            negate: i32::from(region),
            ..ShiftArgs::default()
        };
        if region && recentre {
            a.centre = launcher.zeros_f32(2)?;
            // SAFETY: per this function's contract; `centre` holds two f32.
            unsafe { launcher.launch(&Launch::Shifts(ShiftArgs { phase: 1, ..a }))? };
        }
        // SAFETY: as above; `shifts` holds count·2 f32.
        unsafe { launcher.launch(&Launch::Shifts(a))? };
        Ok(a.shifts)
    }
}

/// Images as the extraction kernels read them: `B` images of `S×S` pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Images {
    /// Address of pixel `(0, 0, 0)`.
    pub address: u64,
    /// Strides of the image, row and column axes, in pixels.
    pub strides: [i64; 3],
    /// 1 (real) or 2 (complex).
    pub lanes: usize,
}

impl Images {
    /// `B` C-order images of side `s` at `address`.
    pub fn c_order(address: u64, s: usize, lanes: usize) -> Self {
        let s = s as i64;
        Self {
            address,
            strides: [s * s, s, 1],
            lanes,
        }
    }
}

/// [`Extraction::extract`] of `images` into `out` (`B·C·N·N·lanes` `f32`, C order).
///
/// # Safety
/// `images` must hold the `B` images its strides reach, `out` the patches, and `shifts`'
/// positions (if any) `B·C·2` values, in the launcher's memory.
pub unsafe fn extract<L: Launcher + ?Sized>(
    launcher: &mut L,
    extraction: &Extraction,
    images: Images,
    shifts: Shifts,
    out: u64,
) -> Result<()> {
    // SAFETY: per this function's contract (the positions of `shifts` included).
    let mut args = unsafe { extraction_args(launcher, extraction, images, shifts)? };
    args.out = out;
    // SAFETY: per this function's contract; the shifts are the launcher's.
    unsafe { launcher.launch(&Launch::Extract(ExtractKernel::Forward, args)) }
}

/// The extraction kernels' arguments for `images`, their translations where `shifts` says.
///
/// # Safety
/// As [`Shifts::address`].
unsafe fn extraction_args<L: Launcher + ?Sized>(
    launcher: &mut L,
    extraction: &Extraction,
    images: Images,
    shifts: Shifts,
) -> Result<ExtractArgs> {
    let mut args = ExtractArgs::new(extraction, images.lanes);
    args.images = images.address;
    [args.stride_b, args.stride_r, args.stride_c] = images.strides;
    // SAFETY: forwarded from this function's contract.
    args.shifts = unsafe { shifts.address(launcher, extraction.shifts(), false, false)? };
    Ok(args)
}

/// The buffers of the extraction's backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractVjp {
    /// The images (the forward's input).
    pub images: Images,
    /// The patches' cotangent, `B·C·N·N·lanes` `f32`.
    pub cot: u64,
    /// The images' cotangent, `B·S·S·lanes` `f32`; 0: not wanted.
    pub image_grad: u64,
    /// The offsets' cotangent, `f64`; 0: not wanted.
    pub offsets_grad: u64,
    /// The offsets' cotangent as PtychoPINN's `(B, 1, 2, C)`, else `(B·C, 2)` rows.
    pub channel_layout: bool,
    /// Where the translations are.
    pub shifts: Shifts,
}

/// [`Extraction::extract_vjp`] into the buffers of `io`.
///
/// # Safety
/// As [`extract`], for every buffer of `io`.
pub unsafe fn extract_vjp<L: Launcher + ?Sized>(
    launcher: &mut L,
    extraction: &Extraction,
    io: ExtractVjp,
) -> Result<()> {
    let ExtractVjp {
        images,
        cot,
        image_grad,
        offsets_grad,
        channel_layout,
        shifts,
    } = io;
    // SAFETY: per this function's contract (the positions of `shifts` included).
    let mut args = unsafe { extraction_args(launcher, extraction, images, shifts)? };
    (args.cot, args.image_grad) = (cot, image_grad);
    if image_grad != 0 {
        // SAFETY: per this function's contract.
        unsafe { launcher.launch(&Launch::Extract(ExtractKernel::Images, args))? };
    }
    if offsets_grad != 0 {
        let count = extraction.shifts().len();
        args.shift_sums = launcher.zeros_f64(count * SHIFT_SUMS_PER_PATCH)?;
        let per_image = if channel_layout {
            extraction.per_image()
        } else {
            0
        };
        // SAFETY: as above; sixteen f64 per patch, `offsets_grad` count·2 f64.
        unsafe {
            launcher.launch(&Launch::Extract(ExtractKernel::Shifts, args))?;
            fold(
                launcher,
                count,
                (args.shift_sums, 0),
                offsets_grad,
                Finish {
                    per_image,
                    ..Finish::default()
                },
            )?;
        }
    }
    Ok(())
}

/// The inputs of a region reassembly in the launcher's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionInputs {
    /// The patches `(B, C, N, N)`, C order.
    pub patches: u64,
    /// 1 (real) or 2 (complex) `f32` lanes per patch pixel.
    pub lanes: usize,
    /// The weights `(w0, w1, N, N)`, `f32`, C order.
    pub weights: u64,
    /// `[w0, w1]`: 1 or `B`, 1 or `C`.
    pub weight_shape: [usize; 2],
    /// Where the translations are.
    pub shifts: Shifts,
}

/// [`Region::reassemble`] of `inputs` into the regions `out` (`B·P·P·lanes` `f32`).
///
/// # Safety
/// The addresses must hold those sizes in the launcher's memory (the positions of
/// `inputs.shifts`, if any, `B·C·2` values).
pub unsafe fn region<L: Launcher + ?Sized>(
    launcher: &mut L,
    region: &Region,
    inputs: RegionInputs,
    out: u64,
) -> Result<()> {
    // SAFETY: forwarded from this function's contract.
    unsafe { region_forward(launcher, region, inputs, out) }.map(|_| ())
}

/// The forward's launches; returns its arguments (with the denominators' scratch) and, for the
/// backward, the regularised maximum's pixel and fraction.
///
/// # Safety
/// As [`region`].
unsafe fn region_forward<L: Launcher + ?Sized>(
    launcher: &mut L,
    region: &Region,
    inputs: RegionInputs,
    out: u64,
) -> Result<(RegionArgs, (Option<usize>, f32))> {
    // SAFETY: forwarded from this function's contract.
    let (mut args, normalisation, maximum) = unsafe { region_sums(launcher, region, inputs)? };
    args.out = out;
    args.normalise_by(normalisation.0, normalisation.1)?;
    // SAFETY: as above; `out` holds B·P·P·lanes f32.
    unsafe { launcher.launch(&Launch::Region(RegionKernel::Normalise, args))? };
    Ok((args, maximum))
}

/// The numerators and denominators of `inputs` in the launcher's scratch, and what the
/// normalisation needs from the whole batch (read back only where it depends on it).
///
/// # Safety
/// As [`region`].
#[allow(clippy::type_complexity)]
unsafe fn region_sums<L: Launcher + ?Sized>(
    launcher: &mut L,
    region: &Region,
    inputs: RegionInputs,
) -> Result<(
    RegionArgs,
    (Option<f32>, crate::kernel::Denominator),
    (Option<usize>, f32),
)> {
    let lanes = inputs.lanes;
    let (b, p) = (region.samples(), region.side());
    let mut args = RegionArgs::new(region, lanes, inputs.weight_shape);
    (args.patches, args.weights) = (inputs.patches, inputs.weights);
    let recentre = region.options().recentre;
    // SAFETY: forwarded from this function's contract (the positions of `inputs.shifts`).
    args.shifts = unsafe {
        inputs
            .shifts
            .address(launcher, region.shifts(), true, recentre)?
    };
    args.num = launcher.zeros_f32(b * p * p * lanes)?;
    args.den = launcher.zeros_f32(b * p * p)?;
    // SAFETY: per this function's contract; the scratch is the launcher's.
    unsafe { launcher.launch(&Launch::Region(RegionKernel::Sums, args))? };
    Ok(if region.needs_batch_facts() {
        // SAFETY: `den` holds B·P·P f32.
        let den = unsafe { launcher.read_f32(args.den, b * p * p)? };
        (args, region.normalisation(&den)?, region.maximum(&den)?)
    } else {
        (args, region.normalisation(&[])?, (None, 0.0))
    })
}

/// [`Region::support`] of the region's own support threshold into `out` (`B·P·P` bytes, 0 or
/// 1: a bool array): the sums, then the mask.
///
/// # Safety
/// As [`region`], with `out` `B·P·P` bytes.
pub unsafe fn region_support<L: Launcher + ?Sized>(
    launcher: &mut L,
    region: &Region,
    inputs: RegionInputs,
    out: u64,
) -> Result<()> {
    // SAFETY: forwarded from this function's contract.
    let (mut args, (limit, _), _) = unsafe { region_sums(launcher, region, inputs)? };
    let limit = limit.ok_or_else(|| crate::error::Error::Gpu {
        reason: "the support mask needs the region's support option".into(),
    })?;
    (args.support, args.limit, args.out) = (1, limit, out);
    // SAFETY: as above; `out` holds B·P·P bytes.
    unsafe { launcher.launch(&Launch::Region(RegionKernel::Mask, args)) }
}

/// The buffers of the region reassembly's backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionVjp {
    /// The forward's inputs.
    pub inputs: RegionInputs,
    /// The regions' cotangent, `B·P·P·lanes` `f32`.
    pub cot: u64,
    /// The patches' cotangent, `B·C·N·N·lanes` `f32`; 0: not wanted.
    pub patch_grad: u64,
    /// The positions' cotangent, `f64`; 0: not wanted.
    pub positions_grad: u64,
    /// The positions' cotangent as PtychoPINN's `(B, 1, 2, C)`, else `(B·C, 2)` rows.
    pub channel_layout: bool,
}

/// The vector–Jacobian product of [`Region::reassemble`] (patches and positions; the weights'
/// cotangent has no device kernel): the forward again, the quotient rule per region pixel (the
/// regularised maximum's term first, by one thread), the patches' gather, the positions'
/// partial sums and their fold, re-centred when the plan re-centres, negated. Bit-identical to
/// [`Region::vjp`].
///
/// # Safety
/// The addresses of `io` must hold the sizes named in the launcher's memory.
pub unsafe fn region_vjp<L: Launcher + ?Sized>(
    launcher: &mut L,
    region: &Region,
    io: RegionVjp,
) -> Result<()> {
    let (b, c, p, lanes) = (
        region.samples(),
        region.channels(),
        region.side(),
        io.inputs.lanes,
    );
    let out = launcher.zeros_f32(b * p * p * lanes)?;
    // SAFETY: forwarded from this function's contract; `out` is the launcher's scratch.
    let (forward, (at_max, max_fraction)) =
        unsafe { region_forward(launcher, region, io.inputs, out)? };
    let mut args = RegionVjpArgs {
        region: forward,
        cot: io.cot,
        dnum: launcher.zeros_f32(b * p * p * lanes)?,
        dden: launcher.zeros_f32(b * p * p)?,
        max_fraction,
        at_max: at_max.map_or(-1, |i| i as i32),
        phase: 1,
        ..RegionVjpArgs::default()
    };
    if at_max.is_some() {
        args.extra = launcher.zeros_f32(1)?;
        args.blocks = launcher.zeros_f64((b * p * p).div_ceil(crate::kernel::REDUCTION_BLOCK))?;
        for phase in [0, 2] {
            let step = RegionVjpArgs { phase, ..args };
            // SAFETY: as above; `extra` holds one f32, `blocks` a f64 per block of pixels.
            unsafe { launcher.launch(&Launch::RegionVjp(RegionVjpKernel::Quotient, step))? };
        }
    }
    // SAFETY: as above.
    unsafe { launcher.launch(&Launch::RegionVjp(RegionVjpKernel::Quotient, args))? };
    if io.patch_grad != 0 {
        let a = RegionVjpArgs {
            patch_grad: io.patch_grad,
            ..args
        };
        // SAFETY: as above; `patch_grad` holds B·C·N·N·lanes f32.
        unsafe { launcher.launch(&Launch::RegionVjp(RegionVjpKernel::Patches, a))? };
    }
    if io.positions_grad != 0 {
        let a = RegionVjpArgs {
            shift_sums: launcher.zeros_f64(b * c * SHIFT_SUMS_PER_PATCH)?,
            ..args
        };
        // SAFETY: as above; sixteen f64 per patch, `positions_grad` B·C·2 f64.
        unsafe {
            launcher.launch(&Launch::RegionVjp(RegionVjpKernel::Shifts, a))?;
            fold(
                launcher,
                b * c,
                (a.shift_sums, 0),
                io.positions_grad,
                Finish {
                    per_image: if io.channel_layout { c } else { 0 },
                    recentre: region.options().recentre,
                    negate: true,
                },
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_points_are_the_kernel_sources() {
        let mut declared: Vec<&str> = super::super::KERNEL_SOURCE
            .split("extern \"C\" __global__ void ")
            .skip(1)
            .filter_map(|rest| rest.split('(').next())
            .collect();
        let mut loaded = ENTRY_POINTS.to_vec();
        declared.sort_unstable();
        loaded.sort_unstable();
        assert_eq!(declared, loaded);
    }
}
