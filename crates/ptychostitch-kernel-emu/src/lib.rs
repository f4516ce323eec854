//! ptychostitch's CUDA kernel run on the CPU: the same `kernel.cu`, compiled as C++ by the
//! build script, launched over the same grid with the same [`Args`] bytes the CUDA driver
//! passes. CI has no GPU; this is how it tests the GPU arithmetic against the reference.

use ndarray::{Array2, ArrayView, Dimension};
use ptychostitch::gpu::SHIFT_SUMS_PER_PATCH;
use ptychostitch::gpu::launch::{
    Args, ExtractArgs, RegionArgs, Stack, Tables, VjpArgs, extract_offsets_from_sums,
    offsets_from_sums,
};
use ptychostitch::gpu::tiles::TileLists;
use ptychostitch::{Error, Extraction, Gradients, Operation, Plan, Result, Sample, Wrt};

unsafe extern "C" {
    fn ptychostitch_emulate(args: *const Args, grid_x: u32, grid_y: u32);
    fn ptychostitch_emulate_patch_vjp(args: *const VjpArgs, grid_x: u32, grid_y: u32);
    fn ptychostitch_emulate_shift_vjp(args: *const VjpArgs);
    fn ptychostitch_emulate_quotient_vjp(args: *const VjpArgs, grid_x: u32, grid_y: u32);
    fn ptychostitch_emulate_extract(args: *const ExtractArgs, grid_x: u32, grid_y: u32);
    fn ptychostitch_emulate_extract_image_vjp(args: *const ExtractArgs, grid_x: u32, grid_y: u32);
    fn ptychostitch_emulate_extract_shift_vjp(args: *const ExtractArgs);
    fn ptychostitch_emulate_region_sums(args: *const RegionArgs, grid_x: u32, grid_y: u32);
    fn ptychostitch_emulate_region_normalise(args: *const RegionArgs, grid_x: u32, grid_y: u32);
}

/// `region`'s reassembly of `patches` `(B, C, N, N)` with `weights` `(1|B, 1|C, N, N)` by the
/// emulated region kernels, composed as a GPU driver would compose them: the sums kernel, the
/// normalisation's whole-batch facts from the denominators ([`ptychostitch::region::Region::normalisation`]),
/// the division kernel. `(B, P, P)`.
pub fn region<T: Sample>(
    region: &ptychostitch::region::Region,
    patches: ndarray::ArrayView4<'_, T>,
    weights: ndarray::ArrayView4<'_, f32>,
) -> Result<ndarray::Array3<T>> {
    let (b, p) = (region.samples(), region.side());
    let w = weights.dim();
    RegionArgs::check_inputs(region, patches.dim(), w)?;
    let patches: Vec<T> = patches.iter().copied().collect();
    let weights: Vec<f32> = weights.iter().copied().collect();
    let shifts: Vec<f32> = region.shifts().iter().flatten().copied().collect();
    let l = T::LANES;
    let mut num = vec![f32::NAN; b * p * p * l];
    let mut den = vec![f32::NAN; b * p * p];
    let mut out = vec![f32::NAN; b * p * p * l];
    let mut args = RegionArgs::new(region, l, [w.0, w.1]);
    args.patches = patches.as_ptr() as u64;
    args.weights = weights.as_ptr() as u64;
    args.shifts = shifts.as_ptr() as u64;
    args.num = num.as_mut_ptr() as u64;
    args.den = den.as_mut_ptr() as u64;
    args.out = out.as_mut_ptr() as u64;
    let (gx, gy, _) = args.grid();
    // SAFETY: every address is a live buffer of the size the kernel reads or writes (patches
    // B·C·N·N pixels, weights w0·w1·N·N, two shifts per patch, num and out B·P·P·lanes, den
    // B·P·P), all outliving both calls.
    unsafe { ptychostitch_emulate_region_sums(&args, gx, gy) };
    let (limit, g) = region.normalisation(&den);
    args.normalise_by(limit, g)?;
    // SAFETY: as above.
    unsafe { ptychostitch_emulate_region_normalise(&args, gx, gy) };
    let values: Vec<T> = bytemuck::pod_collect_to_vec(&out);
    ndarray::Array3::from_shape_vec((b, p, p), values).map_err(|e| Error::Gpu {
        reason: e.to_string(),
    })
}

/// The VJP of `extraction` by the emulated backward kernels, composed as a GPU driver would
/// compose them: the images' cotangent `(B, S, S)` and the offsets' `(B·C, 2)` (the partial
/// sums folded on the host, not re-centred: extraction's offsets are not re-centred).
pub fn extract_vjp<T: Sample, D: Dimension>(
    extraction: &Extraction,
    images: ArrayView<'_, T, D>,
    cotangent: ndarray::ArrayView3<'_, T>,
    wrt: Wrt,
) -> Result<Gradients<T>> {
    let images = extraction.check_images(images)?;
    let strides = images.strides();
    let shifts: Vec<f32> = extraction.shifts().iter().flatten().copied().collect();
    let cot = extraction.cotangent_lanes(cotangent)?;
    let count = extraction.shifts().len();
    let (b, s) = (images.dim().0, extraction.image_side());
    let mut image_grad = vec![f32::NAN; b * s * s * T::LANES];
    let mut sums = vec![f64::NAN; count * SHIFT_SUMS_PER_PATCH];
    let mut args = ExtractArgs::new(extraction, T::LANES);
    args.images = images.as_ptr() as u64;
    (args.stride_b, args.stride_r, args.stride_c) =
        (strides[0] as i64, strides[1] as i64, strides[2] as i64);
    args.shifts = shifts.as_ptr() as u64;
    args.cot = cot.as_ptr() as u64;
    args.image_grad = image_grad.as_mut_ptr() as u64;
    args.shift_sums = sums.as_mut_ptr() as u64;
    if wrt.patches {
        let (gx, gy, _) = args.image_grid();
        // SAFETY: the images are the checked view's memory with its strides; `shifts` holds two
        // f32 per patch, `cot` count·N·N pixels, `image_grad` B·S·S·lanes f32; all outlive it.
        unsafe { ptychostitch_emulate_extract_image_vjp(&args, gx, gy) };
    }
    if wrt.offsets {
        // SAFETY: as above; `sums` holds SHIFT_SUMS_PER_PATCH f64 per output patch.
        unsafe { ptychostitch_emulate_extract_shift_vjp(&args) };
    }
    let patches = wrt
        .patches
        .then(|| {
            let values: Vec<T> = bytemuck::pod_collect_to_vec(&image_grad);
            ndarray::Array3::from_shape_vec((b, s, s), values)
        })
        .transpose()
        .map_err(|e| Error::Gpu {
            reason: e.to_string(),
        })?;
    let offsets = wrt.offsets.then(|| extract_offsets_from_sums(&sums));
    Ok(Gradients { patches, offsets })
}

/// `extraction` of `images` (`(B, S, S)` or `(B, S, S, 1)`, any strides) by the emulated
/// extraction kernel: `(B·C, N, N)`.
pub fn extract<T: Sample, D: Dimension>(
    extraction: &Extraction,
    images: ArrayView<'_, T, D>,
) -> Result<ndarray::Array3<T>> {
    let images = extraction.check_images(images)?;
    let strides = images.strides();
    let shifts: Vec<f32> = extraction.shifts().iter().flatten().copied().collect();
    let (count, n, _) = extraction.output_shape();
    let mut out = vec![f32::NAN; count * n * n * T::LANES];
    let mut args = ExtractArgs::new(extraction, T::LANES);
    args.images = images.as_ptr() as u64;
    (args.stride_b, args.stride_r, args.stride_c) =
        (strides[0] as i64, strides[1] as i64, strides[2] as i64);
    args.shifts = shifts.as_ptr() as u64;
    args.out = out.as_mut_ptr() as u64;
    let (gx, gy, _) = args.grid();
    // SAFETY: `images` is the checked view's own memory with its strides, `shifts` holds two f32
    // per output patch and `out` count·N·N·lanes f32; all outlive the call.
    unsafe { ptychostitch_emulate_extract(&args, gx, gy) };
    let values: Vec<T> = bytemuck::pod_collect_to_vec(&out);
    ndarray::Array3::from_shape_vec((count, n, n), values).map_err(|e| Error::Gpu {
        reason: e.to_string(),
    })
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

/// The vector–Jacobian product of `operation` by the emulated backward kernels, composed as
/// the GPU driver composes them: for `reassemble_position` the quotient kernel first (image and
/// weight cotangents from `cot`, `output` and the weights), then the patch kernel on the image
/// cotangent, the shift kernel on the patches and on the ones, and the host's re-centring.
pub fn vjp<T: Sample>(
    plan: &Plan,
    operation: Operation,
    patches: ndarray::ArrayView3<'_, T>,
    output: ndarray::ArrayView2<'_, T>,
    cot: ndarray::ArrayView2<'_, T>,
    wrt: Wrt,
) -> Result<Gradients<T>> {
    let g = plan.geometry();
    let stack = g.check_patches(patches)?;
    let (side, n, l) = (g.side(), g.patch_size(), T::LANES);
    let lanes = |a: ndarray::ArrayView2<'_, T>| -> Vec<f32> {
        let standard = a.as_standard_layout();
        bytemuck::cast_slice::<T, f32>(standard.as_slice().expect("standard layout")).to_vec()
    };
    let shifts: Vec<f32> = g.shifts().iter().flatten().copied().collect();
    let footprints = VjpArgs::footprint_table(g);
    let strides = stack.strides();
    let mut args = VjpArgs::new(g, l);
    args.patches = stack.as_ptr() as u64;
    args.stride_n = strides[0] as i64;
    args.stride_r = strides[1] as i64;
    args.stride_c = strides[2] as i64;
    args.shifts = shifts.as_ptr() as u64;
    args.footprints = footprints.as_ptr() as u64;
    let mut cot = lanes(cot);
    let out = lanes(output);
    let weights = plan.weights()?;
    let mut cot_weights = vec![f32::NAN; side * side];
    if operation == Operation::ReassemblePosition {
        let mut cot_image = vec![f32::NAN; side * side * l];
        let mut q = args;
        q.cot = cot.as_ptr() as u64;
        q.output = out.as_ptr() as u64;
        q.weights = weights.as_ptr() as u64;
        q.cot_image = cot_image.as_mut_ptr() as u64;
        q.cot_weights = cot_weights.as_mut_ptr() as u64;
        let (gx, gy) = q.canvas_grid();
        // SAFETY: every address points into a live buffer of the size the kernel reads or
        // writes (S·S·lanes or S·S f32); the launcher is synchronous.
        unsafe { ptychostitch_emulate_quotient_vjp(&q, gx, gy) };
        cot = cot_image;
    }
    args.cot = cot.as_ptr() as u64;
    let mut patch_grad = vec![f32::NAN; g.len() * n * n * l];
    if wrt.patches {
        let mut a = args;
        a.patch_grad = patch_grad.as_mut_ptr() as u64;
        let (gx, gy, _) = a.patch_grid();
        // SAFETY: as above; `patch_grad` holds n·N·N·lanes f32, the stack is `patches`' own
        // memory with its strides, and `shifts` holds two f32 per patch.
        unsafe { ptychostitch_emulate_patch_vjp(&a, gx, gy) };
    }
    let offsets = if wrt.offsets {
        let mut image_sums = vec![f64::NAN; g.len() * SHIFT_SUMS_PER_PATCH];
        let mut a = args;
        a.shift_sums = image_sums.as_mut_ptr() as u64;
        // SAFETY: as above; `image_sums` holds SHIFT_SUMS_PER_PATCH f64 per patch, `footprints` four i32.
        unsafe { ptychostitch_emulate_shift_vjp(&a) };
        let weight_sums = if operation == Operation::ReassemblePosition {
            let mut sums = vec![f64::NAN; g.len() * SHIFT_SUMS_PER_PATCH];
            let mut w = args;
            w.patches = 0;
            w.lanes = 1;
            w.cot = cot_weights.as_ptr() as u64;
            w.shift_sums = sums.as_mut_ptr() as u64;
            // SAFETY: as above, with the S·S weight cotangent and patches of ones (no stack).
            unsafe { ptychostitch_emulate_shift_vjp(&w) };
            Some(sums)
        } else {
            None
        };
        Some(offsets_from_sums(&image_sums, weight_sums.as_deref()))
    } else {
        None
    };
    let patches = wrt.patches.then(|| {
        let values: Vec<T> = bytemuck::cast_slice::<f32, T>(&patch_grad).to_vec();
        ndarray::Array3::from_shape_vec((g.len(), n, n), values).expect("n·N·N values")
    });
    Ok(Gradients { patches, offsets })
}
