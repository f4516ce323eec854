//! ptychostitch's CUDA kernel run on the CPU: the same `kernel.cu`, compiled as C++ by the
//! build script, launched over the same grid with the same [`Args`] bytes the CUDA driver
//! passes. CI has no GPU; this is how it tests the GPU arithmetic against the reference.

use ndarray::{Array2, ArrayView, Dimension};
use ptychostitch::gpu::launch::{Args, Stack, Tables};
use ptychostitch::gpu::tiles::TileLists;
use ptychostitch::{Error, Operation, Plan, Result, Sample};

unsafe extern "C" {
    fn ptychostitch_emulate(args: *const Args, grid_x: u32, grid_y: u32);
}

/// `operation` on `patches` (`(n, N, N)` or `(n, N, N, 1)`, any strides) by the emulated kernel.
pub fn stitch<T: Sample, D: Dimension>(
    plan: &Plan,
    operation: Operation,
    patches: ArrayView<'_, T, D>,
) -> Result<Array2<T>> {
    let stack = plan.geometry().check_patches(patches)?;
    let strides = stack.strides();
    let described = Stack {
        address: stack.as_ptr() as u64,
        count: stack.dim().0,
        size: stack.dim().1,
        strides: [strides[0] as i64, strides[1] as i64, strides[2] as i64],
        lanes: T::LANES,
    };
    // SAFETY: `described` is `stack`'s own address and strides, borrowed for this call.
    unsafe { stitch_stack(plan, operation, described) }
}

/// `operation` on a stack described by address, shape and strides (as the GPU driver receives
/// device memory through DLPack: [`Stack::from_layout`]) by the emulated kernel, into a canvas
/// of `T` (whose lanes must be `stack.lanes`).
///
/// # Safety
/// `stack` must describe host memory holding every element its address and strides reach, as
/// `T` pixels, alive for the call.
pub unsafe fn stitch_stack<T: Sample>(
    plan: &Plan,
    operation: Operation,
    stack: Stack,
) -> Result<Array2<T>> {
    let g = plan.geometry();
    stack.check(g)?;
    if stack.lanes != T::LANES {
        return Err(Error::Gpu {
            reason: format!(
                "a stack of {} lanes into a canvas of {}",
                stack.lanes,
                T::LANES
            ),
        });
    }
    let lists = TileLists::new(g)?;
    let shifts: Vec<f32> = g.shifts().iter().flatten().copied().collect();
    let side = g.side();
    let mut image = Array2::<T>::from_elem((side, side), T::ONE);
    let mut weights = vec![f32::NAN; side * side];
    let args = Args::new(
        g,
        &lists,
        Tables {
            shifts: shifts.as_ptr() as u64,
            tile_start: lists.start.as_ptr() as u64,
            tile_patches: lists.patches.as_ptr() as u64,
        },
        stack,
        image.as_mut_ptr() as u64,
        weights.as_mut_ptr() as u64,
        operation == Operation::ReassemblePosition,
    );
    let (gx, gy) = args.grid();
    // SAFETY: every address in `args` points into a live buffer of the size the kernel reads or
    // writes: `stack` (per this function's contract, in elements of `T::LANES` f32 lanes), `shifts`
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
