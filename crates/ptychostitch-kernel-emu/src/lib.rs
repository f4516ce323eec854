//! ptychostitch's CUDA kernel run on the CPU: the same `kernel.cu`, compiled as C++ by the
//! build script, launched over the same grid with the same [`Args`] bytes the CUDA driver
//! passes. CI has no GPU; this is how it tests the GPU arithmetic against the reference.

use ndarray::{Array2, ArrayView, Dimension};
use ptychostitch::gpu::launch::{Args, Stack, Tables};
use ptychostitch::gpu::tiles::TileLists;
use ptychostitch::{Operation, Plan, Result, Sample};

unsafe extern "C" {
    fn ptychostitch_emulate(args: *const Args, grid_x: u32, grid_y: u32);
}

/// `operation` on `patches` (`(n, N, N)` or `(n, N, N, 1)`, any strides) by the emulated kernel.
pub fn stitch<T: Sample, D: Dimension>(
    plan: &Plan,
    operation: Operation,
    patches: ArrayView<'_, T, D>,
) -> Result<Array2<T>> {
    let g = plan.geometry();
    let stack = g.check_patches(patches)?;
    let lists = TileLists::new(g)?;
    let shifts: Vec<f32> = g.shifts().iter().flatten().copied().collect();
    let side = g.side();
    let mut image = Array2::<T>::from_elem((side, side), T::ONE);
    let mut weights = vec![f32::NAN; side * side];
    let strides = stack.strides();
    let args = Args::new(
        g,
        &lists,
        Tables {
            shifts: shifts.as_ptr() as u64,
            tile_start: lists.start.as_ptr() as u64,
            tile_patches: lists.patches.as_ptr() as u64,
        },
        Stack {
            address: stack.as_ptr() as u64,
            count: stack.dim().0,
            size: stack.dim().1,
            strides: [strides[0] as i64, strides[1] as i64, strides[2] as i64],
            lanes: T::LANES,
        },
        image.as_mut_ptr() as u64,
        weights.as_mut_ptr() as u64,
        operation == Operation::ReassemblePosition,
    );
    let (gx, gy) = args.grid();
    // SAFETY: every address in `args` points into a live buffer of the size the kernel reads or
    // writes: `stack` (through its own strides, in elements of `T::LANES` f32 lanes), `shifts`
    // (2 per patch), the tile lists (built for this geometry), `image` (S·S pixels) and
    // `weights` (S·S); the launcher runs synchronously and they outlive it.
    unsafe { ptychostitch_emulate(&args, gx, gy) };
    debug_assert!(
        weights.iter().all(|w| !w.is_nan()),
        "{} of {} weights unwritten; grid {gx}×{gy}, side {side}, args {args:?}",
        weights.iter().filter(|w| w.is_nan()).count(),
        weights.len()
    );
    Ok(image)
}
