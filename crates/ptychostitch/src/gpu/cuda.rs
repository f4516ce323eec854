//! The CUDA driver: loads `libcuda` and NVRTC at run time (`cudarc` with dynamic loading, so no
//! CUDA toolkit is needed to build), compiles `kernel.cu` once per process with `--fmad=false`,
//! and runs it for a [`Plan`] on patches in host or device memory.
//!
//! A machine without a driver, a GPU or NVRTC gets [`Error::GpuUnavailable`] with the reason,
//! never a crash; nothing here is touched by the CPU paths.

use super::launch::{Args, BLOCK, Stack, Tables};
use super::tiles::TileLists;
use super::{KERNEL_NAME, KERNEL_SOURCE};
use crate::error::{Error, Result};
use crate::plan::{Operation, Plan};
use crate::sample::Sample;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig,
    PushKernelArg,
};
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};
use ndarray::{Array2, ArrayView, Dimension};
use std::sync::{Arc, OnceLock};

// SAFETY: `Args` is `#[repr(C)]` plain data (integers and 64-bit addresses) laid out exactly as
// `StitchArgs` in kernel.cu (checked by `launch::tests`); CUDA copies it by value.
unsafe impl DeviceRepr for Args {}

/// The GPU this process uses (device 0) and the compiled kernel.
#[derive(Debug)]
pub struct Gpu {
    context: Arc<CudaContext>,
    function: CudaFunction,
    name: String,
}

fn unavailable(reason: impl std::fmt::Display) -> Error {
    Error::GpuUnavailable {
        reason: reason.to_string(),
    }
}

fn driver(e: impl std::fmt::Display) -> Error {
    Error::Gpu {
        reason: e.to_string(),
    }
}

impl Gpu {
    /// The process's GPU, set up on first use: driver, device 0, the kernel compiled by NVRTC.
    /// Later calls return the same (or the same error).
    pub fn get() -> Result<Arc<Gpu>> {
        static GPU: OnceLock<std::result::Result<Arc<Gpu>, String>> = OnceLock::new();
        GPU.get_or_init(|| {
            Gpu::start().map(Arc::new).map_err(|e| match e {
                Error::GpuUnavailable { reason } => reason,
                other => other.to_string(),
            })
        })
        .clone()
        .map_err(unavailable)
    }

    fn start() -> Result<Gpu> {
        // SAFETY: probing only tries to open the shared libraries by name.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(unavailable("no CUDA driver (libcuda.so) on this machine"));
        }
        // SAFETY: as above.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(unavailable(
                "no NVRTC (libnvrtc.so) on this machine: install the CUDA runtime compiler (e.g. pip install nvidia-cuda-nvrtc-cu12)",
            ));
        }
        let count = CudaContext::device_count().map_err(unavailable)?;
        if count < 1 {
            return Err(unavailable("the CUDA driver reports no GPU"));
        }
        let context = CudaContext::new(0).map_err(unavailable)?;
        let name = context.name().unwrap_or_else(|_| "GPU 0".into());
        let ptx = compile_ptx_with_opts(
            KERNEL_SOURCE,
            CompileOptions {
                fmad: Some(false),
                ftz: Some(false),
                prec_div: Some(true),
                prec_sqrt: Some(true),
                use_fast_math: Some(false),
                name: Some("ptychostitch.cu".into()),
                ..Default::default()
            },
        )
        .map_err(|e| unavailable(format!("NVRTC could not compile the kernel: {e}")))?;
        let module = context.load_module(ptx).map_err(unavailable)?;
        let function = module.load_function(KERNEL_NAME).map_err(unavailable)?;
        Ok(Gpu {
            context,
            function,
            name,
        })
    }

    /// The device's name (e.g. "NVIDIA H200").
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// What a GPU was found, or why none can be used: for `gpu_available()` and `--device cuda`.
pub fn available() -> Result<String> {
    Gpu::get().map(|g| g.name().to_string())
}

/// A [`Plan`] on the GPU: shifts and per-tile patch lists uploaded once, reused for every
/// patch stack.
#[derive(Debug)]
pub struct GpuPlan<'p> {
    plan: &'p Plan,
    gpu: Arc<Gpu>,
    stream: Arc<CudaStream>,
    lists: TileLists,
    shifts: CudaSlice<f32>,
    tile_start: CudaSlice<i32>,
    tile_patches: CudaSlice<i32>,
}

impl Plan {
    /// This plan on the GPU (device 0, its default stream).
    pub fn gpu(&self) -> Result<GpuPlan<'_>> {
        let gpu = Gpu::get()?;
        let stream = gpu.context.default_stream();
        let lists = TileLists::new(self.geometry())?;
        let shifts: Vec<f32> = self.geometry().shifts().iter().flatten().copied().collect();
        let upload_i32 = |v: &[i32]| {
            // An empty list still needs a valid allocation.
            let v = if v.is_empty() { &[0][..] } else { v };
            stream.clone_htod(v).map_err(driver)
        };
        Ok(GpuPlan {
            plan: self,
            shifts: stream.clone_htod(&shifts).map_err(driver)?,
            tile_start: upload_i32(&lists.start)?,
            tile_patches: upload_i32(&lists.patches)?,
            lists,
            stream,
            gpu,
        })
    }
}

/// A patch stack and its canvas in device memory, for repeated runs (benchmarks, training
/// loops whose patches stay on the GPU).
#[derive(Debug)]
pub struct Resident {
    patches: CudaSlice<f32>,
    image: CudaSlice<f32>,
    count: usize,
    size: usize,
    lanes: usize,
}

impl GpuPlan<'_> {
    /// `operation` of host patches (`(n, N, N)` or `(n, N, N, 1)`, any strides): copied to the
    /// GPU, stitched there, the canvas copied back. Bit-identical to the CPU reference (NaN
    /// payloads are the GPU's own).
    pub fn run<T: Sample, D: Dimension>(
        &self,
        operation: Operation,
        patches: ArrayView<'_, T, D>,
    ) -> Result<Array2<T>> {
        let mut resident = self.upload(patches)?;
        self.run_resident(operation, &mut resident)?;
        self.download(&mut resident)
    }

    /// Copies a host patch stack to the GPU, with room for its canvas.
    pub fn upload<T: Sample, D: Dimension>(
        &self,
        patches: ArrayView<'_, T, D>,
    ) -> Result<Resident> {
        let stack = self.plan.geometry().check_patches(patches)?;
        let (count, size, _) = stack.dim();
        let contiguous = stack.as_standard_layout();
        let values: &[T] = contiguous.as_slice().unwrap_or_default();
        let lanes: &[f32] = bytemuck::cast_slice(values);
        let side = self.plan.geometry().side();
        Ok(Resident {
            patches: self.stream.clone_htod(lanes).map_err(driver)?,
            image: self
                .stream
                .alloc_zeros::<f32>(side * side * T::LANES)
                .map_err(driver)?,
            count,
            size,
            lanes: T::LANES,
        })
    }

    /// Runs `operation` on a resident stack and waits for it.
    pub fn run_resident(&self, operation: Operation, resident: &mut Resident) -> Result<()> {
        {
            let (patches_at, _read) = resident.patches.device_ptr(&self.stream);
            let (image_at, _write) = resident.image.device_ptr(&self.stream);
            let stack = Stack {
                address: patches_at,
                count: resident.count,
                strides: [
                    (resident.size * resident.size) as i64,
                    resident.size as i64,
                    1,
                ],
                lanes: resident.lanes,
            };
            // SAFETY: `patches_at` holds the count·N·N pixels `stack` describes and `image_at`
            // S·S·lanes lanes (allocated by `upload` for this plan); both live in `resident`,
            // which outlives the synchronisation below.
            unsafe { self.launch(operation, stack, image_at, 0)? };
        }
        self.synchronize()
    }

    /// Copies a resident stack's canvas back to the host.
    pub fn download<T: Sample>(&self, resident: &mut Resident) -> Result<Array2<T>> {
        if resident.lanes != T::LANES {
            return Err(driver("the resident canvas holds another pixel type"));
        }
        let host = self.stream.clone_dtoh(&resident.image).map_err(driver)?;
        let pixels: Vec<T> = bytemuck::pod_collect_to_vec(&host);
        let side = self.plan.geometry().side();
        Array2::from_shape_vec((side, side), pixels).map_err(driver)
    }

    /// Launches the kernel on this plan's stream for a patch stack already in device memory,
    /// writing the `S×S` canvas (`S·S·LANES` `f32`) at `image` and, unless 0, the weights at
    /// `weights`. Returns once queued; synchronise the stream before reading.
    ///
    /// # Safety
    /// `stack` must describe device memory holding every element its address and strides
    /// reach (`count` patches of `N×N` pixels of `lanes` `f32` each), and `image` / `weights`
    /// device buffers of `S·S·lanes` / `S·S` `f32`, all alive until the stream is synchronised.
    pub unsafe fn launch(
        &self,
        operation: Operation,
        stack: Stack,
        image: u64,
        weights: u64,
    ) -> Result<()> {
        let geometry = self.plan.geometry();
        if stack.count != geometry.len() {
            return Err(Error::CountMismatch {
                patches: stack.count,
                offsets: geometry.len(),
            });
        }
        let (start_at, _s) = self.tile_start.device_ptr(&self.stream);
        let (list_at, _l) = self.tile_patches.device_ptr(&self.stream);
        let (shifts_at, _h) = self.shifts.device_ptr(&self.stream);
        let args = Args::new(
            geometry,
            &self.lists,
            Tables {
                shifts: shifts_at,
                tile_start: start_at,
                tile_patches: list_at,
            },
            stack,
            image,
            weights,
            operation == Operation::ReassemblePosition,
        );
        let (gx, gy) = args.grid();
        let config = LaunchConfig {
            grid_dim: (gx, gy, 1),
            block_dim: (BLOCK, BLOCK, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = self.stream.launch_builder(&self.gpu.function);
        launch.arg(&args);
        // SAFETY: the kernel's one argument is `Args` by value; its addresses are valid per
        // this function's contract and the tables above, which live as long as `self`.
        unsafe { launch.launch(config) }.map_err(driver)?;
        Ok(())
    }

    /// Waits for everything queued on the plan's stream.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(driver)
    }
}
