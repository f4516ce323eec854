//! ptychostitch's CUDA kernel run on the CPU: the same `kernel.cu`, compiled as C++ by the
//! build script, launched over the same grid with the same argument bytes the CUDA driver
//! passes. CI has no GPU; this is how it tests the GPU arithmetic against the reference.

use ndarray::{Array2, ArrayView, Dimension};
use ptychostitch::gpu::compose::{
    self, ExtractVjp, Images, Launch, Launcher, ReassemblyVjp, Shifts,
};
use ptychostitch::gpu::launch::Stack;
use ptychostitch::{Error, Extraction, Gradients, Operation, Plan, Result, Sample, Wrt};

unsafe extern "C" {
    fn ptychostitch_emulate_launch(
        name: *const std::ffi::c_char,
        args: *const std::ffi::c_void,
        grid: *const u32,
        block: *const u32,
    ) -> i64;
}

/// Runs the emulator's deliberately racy test kernel (every thread stores to `out[0]`) over
/// `grid` blocks of `block` threads; returns how many stores the write watch flagged (the test
/// that shows the watch sees a race).
pub fn racy_launch(grid: [u32; 3], block: [u32; 3]) -> i64 {
    let mut out = [0.0_f32; 1];
    let args = [out.as_mut_ptr()];
    // SAFETY: the racy kernel's argument struct is one `float*`, here to a live f32; the name
    // is NUL-terminated.
    unsafe {
        ptychostitch_emulate_launch(
            c"ptychostitch_racy".as_ptr(),
            args.as_ptr().cast(),
            grid.as_ptr(),
            block.as_ptr(),
        )
    }
}

/// The emulated GPU: host memory, every launch run at once over its whole grid (one block and
/// one thread at a time). Its scratch lives until it is dropped.
#[derive(Debug, Default)]
pub struct Emulator {
    f32s: Vec<Box<[f32]>>,
    f64s: Vec<Box<[f64]>>,
    i32s: Vec<Box<[i32]>>,
    /// Every launch, in order: what the composition queued.
    pub launches: Vec<Launch>,
    /// Values read back to the host ([`Launcher::read_f32`], [`Launcher::read_f64`]): a GPU's
    /// host round trips.
    pub read: usize,
}

fn emulation_error(e: impl std::fmt::Display) -> Error {
    Error::Gpu {
        reason: e.to_string(),
    }
}

impl Launcher for Emulator {
    fn zeros_f32(&mut self, len: usize) -> Result<u64> {
        self.f32s.push(vec![0.0; len.max(1)].into_boxed_slice());
        Ok(self.f32s.last().map_or(0, |b| b.as_ptr() as u64))
    }

    fn zeros_f64(&mut self, len: usize) -> Result<u64> {
        self.f64s.push(vec![0.0; len.max(1)].into_boxed_slice());
        Ok(self.f64s.last().map_or(0, |b| b.as_ptr() as u64))
    }

    fn upload_f32(&mut self, values: &[f32]) -> Result<u64> {
        let at = self.zeros_f32(values.len())?;
        if let Some(last) = self.f32s.last_mut() {
            last[..values.len()].copy_from_slice(values);
        }
        Ok(at)
    }

    fn upload_i32(&mut self, values: &[i32]) -> Result<u64> {
        let mut copy = values.to_vec();
        copy.push(0); // never empty: a real address
        self.i32s.push(copy.into_boxed_slice());
        Ok(self.i32s.last().map_or(0, |b| b.as_ptr() as u64))
    }

    unsafe fn launch(&mut self, launch: &Launch) -> Result<()> {
        let (grid, block) = launch.checked_shape()?;
        let args: *const std::ffi::c_void = match launch {
            Launch::Stitch(a) => std::ptr::from_ref(a).cast(),
            Launch::Vjp(_, a) => std::ptr::from_ref(a).cast(),
            Launch::Fold(a) => std::ptr::from_ref(a).cast(),
            Launch::Extract(_, a) => std::ptr::from_ref(a).cast(),
            Launch::Region(_, a) => std::ptr::from_ref(a).cast(),
            Launch::RegionVjp(_, a) => std::ptr::from_ref(a).cast(),
            Launch::Shifts(a) => std::ptr::from_ref(a).cast(),
        };
        let (grid, block) = ([grid.0, grid.1, grid.2], [block.0, block.1, block.2]);
        let name = std::ffi::CString::new(compose::ENTRY_POINTS[launch.entry()])
            .map_err(|e| emulation_error(e.to_string()))?;
        // SAFETY: `args` is the launch's argument struct, the one its entry point (named by
        // `launch`, NUL-terminated) takes; its addresses are valid per this function's contract.
        let code = unsafe {
            ptychostitch_emulate_launch(name.as_ptr(), args, grid.as_ptr(), block.as_ptr())
        };
        self.launches.push(*launch);
        match code {
            0 => Ok(()),
            -1 => Err(emulation_error(format!(
                "no entry point {} in kernel.cu",
                compose::ENTRY_POINTS[launch.entry()]
            ))),
            races => Err(emulation_error(format!(
                "{races} output elements were stored by two threads in one launch of {} (a race on a GPU)",
                compose::ENTRY_POINTS[launch.entry()]
            ))),
        }
    }

    unsafe fn read_f32(&mut self, address: u64, len: usize) -> Result<Vec<f32>> {
        self.read += len;
        // SAFETY: the caller vouches that `address` holds `len` f32 of host memory.
        Ok(unsafe { std::slice::from_raw_parts(address as *const f32, len) }.to_vec())
    }

    unsafe fn read_f64(&mut self, address: u64, len: usize) -> Result<Vec<f64>> {
        self.read += len;
        // SAFETY: the caller vouches that `address` holds `len` f64 of host memory.
        Ok(unsafe { std::slice::from_raw_parts(address as *const f64, len) }.to_vec())
    }
}

fn lanes_of<T: Sample, D: Dimension>(a: ArrayView<'_, T, D>) -> Vec<f32> {
    let values: Vec<T> = a.iter().copied().collect();
    bytemuck::cast_slice::<T, f32>(&values).to_vec()
}

fn from_lanes<T: Sample, Sh: ndarray::ShapeBuilder>(
    shape: Sh,
    lanes: &[f32],
) -> Result<ndarray::Array<T, Sh::Dim>> {
    ndarray::Array::from_shape_vec(shape, bytemuck::pod_collect_to_vec(lanes))
        .map_err(emulation_error)
}

/// The wanted cotangents from the emulator's buffers: the first input's `shape` from `lanes`, the
/// offsets' `(count, 2)` rows.
fn gradients<T: Sample>(
    wrt: Wrt,
    shape: (usize, usize, usize),
    lanes: &[f32],
    offsets: Vec<f64>,
) -> Result<Gradients<T>> {
    let count = offsets.len() / 2;
    Ok(Gradients {
        patches: wrt.patches.then(|| from_lanes(shape, lanes)).transpose()?,
        offsets: wrt
            .offsets
            .then(|| ndarray::Array2::from_shape_vec((count, 2), offsets))
            .transpose()
            .map_err(emulation_error)?,
    })
}

/// A region reassembly's checked inputs in host memory.
struct RegionHost {
    patches: Vec<f32>,
    lanes: usize,
    weights: Vec<f32>,
    weight_shape: [usize; 2],
}

impl RegionHost {
    fn new<T: Sample>(
        region: &ptychostitch::region::Region,
        patches: ndarray::ArrayView4<'_, T>,
        weights: ndarray::ArrayView4<'_, f32>,
    ) -> Result<Self> {
        let w = weights.dim();
        ptychostitch::gpu::launch::RegionArgs::check_inputs(region, patches.dim(), w)?;
        Ok(Self {
            patches: lanes_of(patches),
            lanes: T::LANES,
            weights: weights.iter().copied().collect(),
            weight_shape: [w.0, w.1],
        })
    }

    /// Their addresses, valid while `self` lives.
    fn inputs(&self) -> compose::RegionInputs {
        compose::RegionInputs {
            patches: self.patches.as_ptr() as u64,
            lanes: self.lanes,
            weights: self.weights.as_ptr() as u64,
            weight_shape: self.weight_shape,
            shifts: Shifts::Planned,
        }
    }
}

/// `region`'s reassembly of `patches` `(B, C, N, N)` with `weights` `(1|B, 1|C, N, N)` by the
/// emulated region kernels through [`compose::region`], the driver's composition. `(B, P, P)`.
pub fn region<T: Sample>(
    region: &ptychostitch::region::Region,
    patches: ndarray::ArrayView4<'_, T>,
    weights: ndarray::ArrayView4<'_, f32>,
) -> Result<ndarray::Array3<T>> {
    let (b, p) = (region.samples(), region.side());
    let host = RegionHost::new(region, patches, weights)?;
    let mut out = vec![f32::NAN; b * p * p * T::LANES];
    let mut emulator = Emulator::default();
    // SAFETY: the patches hold B·C·N·N pixels and the weights w0·w1·N·N, C order; `out`
    // B·P·P·lanes f32; all outlive the synchronous emulator.
    unsafe {
        compose::region(
            &mut emulator,
            region,
            host.inputs(),
            out.as_mut_ptr() as u64,
        )?
    };
    from_lanes((b, p, p), &out)
}

/// The patches' `(B, C, N, N)` and positions' cotangents of `region`'s reassembly by the emulated
/// backward kernels through [`compose::region_vjp`] (positions as `(B·C, 2)` rows, or
/// PtychoPINN's `(B, 1, 2, C)` flattened when `channel_layout`).
pub fn region_vjp<T: Sample>(
    region: &ptychostitch::region::Region,
    patches: ndarray::ArrayView4<'_, T>,
    weights: ndarray::ArrayView4<'_, f32>,
    cot: ndarray::ArrayView3<'_, T>,
    channel_layout: bool,
) -> Result<(ndarray::Array4<T>, Vec<f64>)> {
    let (b, c, n) = (region.samples(), region.channels(), region.patch_size());
    let host = RegionHost::new(region, patches, weights)?;
    let cot = region.cotangent_lanes(cot)?;
    let mut patch_grad = vec![f32::NAN; b * c * n * n * T::LANES];
    let mut positions = vec![f64::NAN; b * c * 2];
    // SAFETY: patches B·C·N·N pixels, weights w0·w1·N·N, the cotangent B·P·P pixels (the
    // caller's shape), the outputs B·C·N·N·lanes f32 and B·C·2 f64; all outlive the call.
    unsafe {
        compose::region_vjp(
            &mut Emulator::default(),
            region,
            compose::RegionVjp {
                inputs: host.inputs(),
                cot: cot.as_ptr() as u64,
                patch_grad: patch_grad.as_mut_ptr() as u64,
                positions_grad: positions.as_mut_ptr() as u64,
                channel_layout,
            },
        )?
    };
    Ok((from_lanes((b, c, n, n), &patch_grad)?, positions))
}

fn images_of<T: Sample>(images: &ndarray::ArrayView3<'_, T>) -> Images {
    let s = images.strides();
    Images {
        address: images.as_ptr() as u64,
        strides: [s[0] as i64, s[1] as i64, s[2] as i64],
        lanes: T::LANES,
    }
}

/// The VJP of `extraction` by the emulated backward kernels through [`compose::extract_vjp`]:
/// the images' cotangent `(B, S, S)` and the offsets' `(B·C, 2)`, folded by the device fold.
pub fn extract_vjp<T: Sample, D: Dimension>(
    extraction: &Extraction,
    images: ArrayView<'_, T, D>,
    cotangent: ndarray::ArrayView3<'_, T>,
    wrt: Wrt,
) -> Result<Gradients<T>> {
    let images = extraction.check_images(images)?;
    let cot = extraction.cotangent_lanes(cotangent)?;
    let count = extraction.shifts().len();
    let (b, s) = (images.dim().0, extraction.image_side());
    let mut image_grad = vec![f32::NAN; b * s * s * T::LANES];
    let mut offsets = vec![f64::NAN; count * 2];
    let mut emulator = Emulator::default();
    let address = |wanted: bool, at: u64| if wanted { at } else { 0 };
    // SAFETY: the images are the checked view's memory with its strides; `cot` holds
    // count·N·N pixels, `image_grad` B·S·S·lanes f32, `offsets` count·2 f64; all outlive it.
    unsafe {
        compose::extract_vjp(
            &mut emulator,
            extraction,
            ExtractVjp {
                images: images_of(&images),
                cot: cot.as_ptr() as u64,
                image_grad: address(wrt.patches, image_grad.as_mut_ptr() as u64),
                offsets_grad: address(wrt.offsets, offsets.as_mut_ptr() as u64),
                channel_layout: false,
                shifts: Shifts::Planned,
            },
        )?
    };
    gradients(wrt, (b, s, s), &image_grad, offsets)
}

/// `extraction` of `images` (`(B, S, S)` or `(B, S, S, 1)`, any strides) by the emulated
/// extraction kernel through [`compose::extract`]: `(B·C, N, N)`.
pub fn extract<T: Sample, D: Dimension>(
    extraction: &Extraction,
    images: ArrayView<'_, T, D>,
) -> Result<ndarray::Array3<T>> {
    let images = extraction.check_images(images)?;
    let (count, n, _) = extraction.output_shape();
    let mut out = vec![f32::NAN; count * n * n * T::LANES];
    let mut emulator = Emulator::default();
    // SAFETY: `images` is the checked view's own memory with its strides, `out` count·N·N·lanes
    // f32; both outlive the call.
    unsafe {
        compose::extract(
            &mut emulator,
            extraction,
            images_of(&images),
            Shifts::Planned,
            out.as_mut_ptr() as u64,
        )?
    };
    from_lanes((count, n, n), &out)
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
    let mut emulator = Emulator::default();
    let (lists, tables) = compose::upload_plan(&mut emulator, g)?;
    let side = g.side();
    let mut image = Array2::<T>::from_elem((side, side), T::ONE);
    // SAFETY: `stack` per this function's contract (in elements of `T::LANES` f32 lanes), the
    // tables built for this geometry, `image` S·S pixels; the emulator is synchronous.
    unsafe {
        compose::reassembly(
            &mut emulator,
            g,
            &lists,
            tables,
            operation,
            stack,
            image.as_mut_ptr() as u64,
        )?
    };
    Ok(image)
}

/// The vector–Jacobian product of `operation` by the emulated backward kernels through
/// [`compose::reassembly_vjp`], the composition the GPU driver runs (the offsets folded and
/// re-centred by the device fold). `output`: `reassemble_position`'s output, recomputed when
/// `None`.
pub fn vjp<T: Sample>(
    plan: &Plan,
    operation: Operation,
    patches: ndarray::ArrayView3<'_, T>,
    output: Option<ndarray::ArrayView2<'_, T>>,
    cot: ndarray::ArrayView2<'_, T>,
    wrt: Wrt,
) -> Result<Gradients<T>> {
    let g = plan.geometry();
    let stack = g.check_patches(patches)?;
    let (n, l, count) = (g.patch_size(), T::LANES, g.len());
    let strides = stack.strides();
    let described = Stack {
        address: stack.as_ptr() as u64,
        count,
        size: n,
        strides: [strides[0] as i64, strides[1] as i64, strides[2] as i64],
        lanes: l,
    };
    let cot = lanes_of(cot);
    let output = output.map(lanes_of);
    let mut emulator = Emulator::default();
    let (lists, tables) = compose::upload_plan(&mut emulator, g)?;
    let mut patch_grad = vec![f32::NAN; count * n * n * l];
    let mut offsets = vec![f64::NAN; count * 2];
    let address = |wanted: bool, at: u64| if wanted { at } else { 0 };
    let io = ReassemblyVjp {
        stack: described,
        cot: cot.as_ptr() as u64,
        output: output.as_ref().map_or(0, |o| o.as_ptr() as u64),
        patch_grad: address(wrt.patches, patch_grad.as_mut_ptr() as u64),
        offsets_grad: address(wrt.offsets, offsets.as_mut_ptr() as u64),
    };
    // SAFETY: the stack is `patches`' own memory with its strides, the canvases S·S·lanes f32,
    // `patch_grad` n·N·N·lanes f32, `offsets` n·2 f64, the tables this plan's; all outlive the
    // synchronous emulator.
    unsafe { compose::reassembly_vjp(&mut emulator, g, &lists, tables, operation, io)? };
    gradients(wrt, (count, n, n), &patch_grad, offsets)
}
