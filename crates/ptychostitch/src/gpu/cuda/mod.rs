//! The CUDA driver: loads `libcuda` and NVRTC at run time (`cudarc` with dynamic loading, so no
//! CUDA toolkit is needed to build), compiles `kernel.cu` once per process and device with
//! `--fmad=false`, and runs it for a [`Plan`] on patches in host or device memory.
//!
//! Two ways in:
//! - host arrays ([`GpuPlan::run`], [`GpuPlan::upload`]): copied in on the device's default
//!   stream, large stacks through pinned staging buffers ([`super::staging`]);
//! - device memory ([`GpuPlan::enqueue`]): a patch stack described by address, shape and
//!   strides (DLPack's description), on any stream, the caller's included
//!   ([`Gpu::borrow_stream`]), written into a canvas the caller owns or a [`DeviceCanvas`].
//!
//! A machine without a driver, a GPU or NVRTC gets [`Error::GpuUnavailable`] with the reason,
//! never a crash; nothing here is touched by the CPU paths.

use super::KERNEL_SOURCE;
use super::compose::{self, ENTRY_POINTS, Launch};
use super::launch::{
    Args, ExtractArgs, FoldArgs, RegionArgs, RegionVjpArgs, ShiftArgs, Stack, Tables, VjpArgs,
};
use super::nvrtc::{Nvrtc, Output};
use super::ordering::{AfterLaunch, after_launch};
use super::staging;
use super::tiles::TileLists;
use crate::adjoint::{Gradients, Wrt, canvas_lanes};
use crate::error::{Error, Result};
use crate::geometry::Geometry;
use crate::plan::{Operation, Plan};
use crate::sample::Sample;
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut,
    DeviceRepr, LaunchConfig, PinnedHostSlice, PushKernelArg, result as cu, sys,
};
use cudarc::nvrtc::Ptx;
use ndarray::{Array2, ArrayView, ArrayView3, ArrayViewMut3, Dimension, s};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

mod canvas;
mod launcher;
mod plan;
mod training;
mod vjp;

pub use canvas::{DeviceBuffer, DeviceCanvas};
pub use launcher::StreamLauncher;
pub use plan::{GpuPlan, Resident};

// SAFETY: `Args` is `#[repr(C)]` plain data (integers and 64-bit addresses) laid out exactly as
// `StitchArgs` in kernel.cu (checked by `launch::tests`); CUDA copies it by value.
unsafe impl DeviceRepr for Args {}

// SAFETY: `VjpArgs` is `#[repr(C)]` plain data laid out exactly as `VjpArgs` in kernel.cu
// (checked by `launch::tests`); CUDA copies it by value.
unsafe impl DeviceRepr for VjpArgs {}

// SAFETY: `FoldArgs` is `#[repr(C)]` plain data laid out exactly as `FoldArgs` in kernel.cu
// (checked by `launch::tests`); CUDA copies it by value.
unsafe impl DeviceRepr for FoldArgs {}

// SAFETY: `ExtractArgs` is `#[repr(C)]` plain data laid out exactly as `ExtractArgs` in
// kernel.cu (checked by `launch::tests`); CUDA copies it by value.
unsafe impl DeviceRepr for ExtractArgs {}

// SAFETY: `RegionArgs` is `#[repr(C)]` plain data laid out exactly as `RegionArgs` in kernel.cu
// (checked by `launch::tests`); CUDA copies it by value.
unsafe impl DeviceRepr for RegionArgs {}

// SAFETY: `RegionVjpArgs` is `#[repr(C)]` plain data laid out exactly as `RegionVjpArgs` in
// kernel.cu (checked by `launch::tests`); CUDA copies it by value.
unsafe impl DeviceRepr for RegionVjpArgs {}

// SAFETY: `ShiftArgs` is `#[repr(C)]` plain data laid out exactly as `ShiftArgs` in kernel.cu
// (checked by `launch::tests`); CUDA copies it by value.
unsafe impl DeviceRepr for ShiftArgs {}

/// One GPU of this process: its primary context (the one torch, CuPy, JAX and TensorFlow use),
/// the compiled kernel and the pinned staging buffers.
#[derive(Debug)]
pub struct Gpu {
    context: Arc<CudaContext>,
    /// Every entry point, in the order of [`ENTRY_POINTS`].
    entries: Vec<CudaFunction>,
    name: String,
    staging: Mutex<Option<Staging>>,
}

/// Two pinned host buffers and the events that say when their last copy finished.
#[derive(Debug)]
struct Staging {
    buffers: [PinnedHostSlice<f32>; 2],
    copied: [CudaEvent; 2],
    lanes: usize,
}

/// Puts back the calling thread's current CUDA context when dropped: our calls bind the GPU's
/// context, and a framework on another device of the same thread must find its own again
/// (the CUDA runtime's current device is the current context's: leaving ours bound would move
/// torch's `current_device` silently). A thread with no context current is left with none.
struct KeepCurrent(Option<Option<sys::CUcontext>>);

impl KeepCurrent {
    fn new() -> Self {
        // Before the driver is initialised there is no current context to keep (`None`).
        Self(cu::ctx::get_current().ok())
    }
}

impl Drop for KeepCurrent {
    fn drop(&mut self) {
        if let Some(context) = self.0 {
            // SAFETY: `context` was current on this thread when `new` ran (or none was: the
            // null context unbinds); a primary context (all that frameworks use) lives until
            // the process ends.
            let _ = unsafe { cu::ctx::set_current(context.unwrap_or(std::ptr::null_mut())) };
        }
    }
}

/// Freed stream-ordered memory the device's default pool keeps between calls instead of
/// handing it back to the driver at every synchronisation (the pool's default, 0): a training
/// step's scratch and outputs are then reused, not allocated from the driver again. 1 GiB at
/// most, so that other allocators (torch's, JAX's, TensorFlow's) are not starved of memory the
/// pool holds idle.
pub const POOL_RELEASE_THRESHOLD: u64 = 1 << 30;

/// Sets the default pool's release threshold ([`POOL_RELEASE_THRESHOLD`]) on `context`'s
/// device. A driver that refuses leaves the default: slower, not wrong.
fn keep_pool_memory(context: &CudaContext) {
    let mut threshold = POOL_RELEASE_THRESHOLD;
    // SAFETY: the device is the context's (valid); the attribute takes a pointer to a u64,
    // which `threshold` is, alive for the call.
    let _ = unsafe {
        cu::device::get_default_mem_pool(context.cu_device()).and_then(|pool| {
            cu::mem_pool::set_attribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                std::ptr::from_mut(&mut threshold).cast(),
            )
        })
    };
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
    /// GPU 0, set up on first use: driver, device, the kernel compiled by NVRTC. Later calls
    /// return the same (or the same error).
    pub fn get() -> Result<Arc<Gpu>> {
        Self::on(0)
    }

    /// GPU `ordinal` (CUDA's numbering), set up on first use. A GPU that started is kept for
    /// the process; a failure is not (a library installed, or a framework that loaded NVRTC,
    /// after a first failed call is found by the next).
    pub fn on(ordinal: usize) -> Result<Arc<Gpu>> {
        type Cache = Mutex<HashMap<usize, Arc<Gpu>>>;
        static GPUS: OnceLock<Cache> = OnceLock::new();
        let mut gpus = GPUS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(gpu) = gpus.get(&ordinal) {
            return Ok(Arc::clone(gpu));
        }
        let gpu = Arc::new(Gpu::start(ordinal).map_err(|e| match e {
            Error::GpuUnavailable { .. } => e,
            other => unavailable(other),
        })?);
        gpus.insert(ordinal, Arc::clone(&gpu));
        Ok(gpu)
    }

    fn start(ordinal: usize) -> Result<Gpu> {
        // SAFETY: probing only tries to open the shared library by name.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(unavailable("no CUDA driver (libcuda.so) on this machine"));
        }
        let count = CudaContext::device_count().map_err(unavailable)?;
        let _keep = KeepCurrent::new();
        if count < 1 {
            return Err(unavailable("the CUDA driver reports no GPU"));
        }
        if ordinal >= count as usize {
            return Err(unavailable(format!(
                "there is no GPU {ordinal}: the CUDA driver reports {count}"
            )));
        }
        let mut driver_version = 0;
        // SAFETY: writes one integer; the driver library is loaded (checked above).
        let _ = unsafe { sys::cuDriverGetVersion(&mut driver_version) };
        let driver_major = (driver_version > 0).then_some(driver_version as u32 / 1000);
        let nvrtc = Nvrtc::load(driver_major).map_err(unavailable)?;
        let context = CudaContext::new(ordinal).map_err(unavailable)?;
        let name = context.name().unwrap_or_else(|_| format!("GPU {ordinal}"));
        let (major, minor) = context.compute_capability().map_err(unavailable)?;
        let module = build_module(&context, &nvrtc, (major, minor)).map_err(|reason| {
            unavailable(format!(
                "the kernel could not be built for {name} (compute capability {major}.{minor}, driver CUDA {}.{}) with NVRTC {}.{} ({}): {reason}",
                driver_version / 1000,
                driver_version % 1000 / 10,
                nvrtc.version().0,
                nvrtc.version().1,
                nvrtc.path().display()
            ))
        })?;
        let entries = ENTRY_POINTS
            .iter()
            .map(|name| module.load_function(name).map_err(unavailable))
            .collect::<Result<Vec<_>>>()?;
        if context.has_async_alloc() {
            keep_pool_memory(&context);
        }
        Ok(Gpu {
            context,
            entries,
            name,
            staging: Mutex::new(None),
        })
    }

    /// Queues `launch` on `stream` (an empty grid queues nothing).
    ///
    /// # Safety
    /// Every address in the launch's arguments must be a live buffer of this GPU of the size
    /// its kernel reads or writes, until `stream` has run it.
    pub(super) unsafe fn launch(&self, stream: &Arc<CudaStream>, launch: &Launch) -> Result<()> {
        let (grid, block) = launch.checked_shape()?;
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(());
        }
        let config = LaunchConfig {
            grid_dim: grid,
            block_dim: block,
            shared_mem_bytes: 0,
        };
        let mut builder = stream.launch_builder(&self.entries[launch.entry()]);
        match launch {
            Launch::Stitch(a) => builder.arg(a),
            Launch::Vjp(_, a) => builder.arg(a),
            Launch::Fold(a) => builder.arg(a),
            Launch::Extract(_, a) => builder.arg(a),
            Launch::Region(_, a) => builder.arg(a),
            Launch::RegionVjp(_, a) => builder.arg(a),
            Launch::Shifts(a) => builder.arg(a),
        };
        // SAFETY: each entry point's one argument is its struct by value (`Launch::entry` pairs
        // them); the addresses are valid per this function's contract.
        unsafe { builder.launch(config) }.map_err(driver)?;
        Ok(())
    }

    /// The device's name (e.g. "NVIDIA H200").
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device's CUDA ordinal.
    pub fn ordinal(&self) -> usize {
        self.context.ordinal()
    }

    /// The device's legacy default stream (CUDA's stream 0).
    pub fn default_stream(&self) -> GpuStream {
        GpuStream {
            stream: self.context.default_stream(),
        }
    }

    /// A stream another library owns (torch's or CuPy's current stream), by its `CUstream`
    /// handle; 0 is the legacy default stream.
    ///
    /// # Safety
    /// `raw` must be 0 or a live stream of this device's primary context, and stay alive while
    /// the returned value (or work queued through it) is in use.
    pub unsafe fn borrow_stream(&self, raw: usize) -> GpuStream {
        // SAFETY: the caller vouches for the handle, as this function's contract says.
        let stream = unsafe { self.context.wrap_borrowed_stream(raw as sys::CUstream) };
        GpuStream { stream }
    }

    /// A new non-blocking stream of this device, owned (destroyed when the last clone drops):
    /// a stream that, like torch's, does not wait for the legacy default stream.
    pub fn new_stream(&self) -> Result<GpuStream> {
        let _keep = KeepCurrent::new();
        let stream = self.context.new_stream().map_err(driver)?;
        Ok(GpuStream { stream })
    }

    /// Waits until every stream of the device's primary context is idle (all frameworks'
    /// queued work included).
    pub fn synchronize(&self) -> Result<()> {
        let _keep = KeepCurrent::new();
        self.context.synchronize().map_err(driver)
    }

    /// Copies `stack` into `device` on `stream` through the two pinned buffers: chunk `k` is
    /// written on the CPU while chunk `k - 1` is on the bus.
    fn stage<T: Sample>(
        &self,
        stream: &Arc<CudaStream>,
        stack: ArrayView3<'_, T>,
        device: &mut CudaSlice<f32>,
    ) -> Result<()> {
        self.context.bind_to_thread().map_err(driver)?;
        let (count, size, _) = stack.dim();
        let patch_lanes = size * size * T::LANES;
        let per_buffer = staging::patches_per_buffer(patch_lanes * 4);
        let lanes = per_buffer * patch_lanes;
        let mut held = self.staging.lock().unwrap_or_else(|p| p.into_inner());
        if held.as_ref().is_none_or(|s| s.lanes < lanes) {
            if let Some(old) = held.take() {
                // Copies still reading the old buffers must finish before they are freed.
                for event in &old.copied {
                    event.synchronize().map_err(driver)?;
                }
            }
            let buffer = || {
                // SAFETY: the buffer is only read (by copies) after it has been written below.
                unsafe { self.context.alloc_pinned_with_flags::<f32>(lanes, 0) }.map_err(driver)
            };
            let event = || self.context.new_event(None).map_err(driver);
            *held = Some(Staging {
                buffers: [buffer()?, buffer()?],
                copied: [event()?, event()?],
                lanes,
            });
        }
        let Some(staging) = held.as_mut() else {
            unreachable!("the staging buffers were just set");
        };
        let (base, _written) = device.device_ptr_mut(stream);
        for (k, range) in staging::chunks(count, per_buffer).enumerate() {
            let (b, start, len) = (k % 2, range.start, range.len() * patch_lanes);
            // The copy that last read this buffer must be done before it is overwritten.
            staging.copied[b].synchronize().map_err(driver)?;
            let host = staging.buffers[b].as_mut_slice().map_err(driver)?;
            let values: &mut [T] = bytemuck::cast_slice_mut(&mut host[..len]);
            let chunk = stack.slice(s![range, .., ..]);
            ArrayViewMut3::from_shape(chunk.raw_dim(), values)
                .map_err(driver)?
                .assign(&chunk);
            let at = base + (start * patch_lanes * 4) as u64;
            // SAFETY: `at` lies inside `device` (patches `range` of `count`), which holds
            // `count · patch_lanes` f32; the pinned source is not touched again until
            // `copied[b]`, recorded right after the copy, has completed (above), and lives in
            // `self`, which is never dropped (the GPU cache is static).
            unsafe { cu::memcpy_htod_async(at, &host[..len], stream.cu_stream()) }
                .map_err(driver)?;
            staging.copied[b].record(stream).map_err(driver)?;
        }
        Ok(())
    }
}

/// `len` zeroed values on `stream` (at least one: an empty output still needs an address).
fn zeros<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(
    stream: &Arc<CudaStream>,
    len: usize,
) -> Result<CudaSlice<T>> {
    stream.alloc_zeros::<T>(len.max(1)).map_err(driver)
}

/// The `shape` of `T` pixels at the start of `buffer` (`f32` lanes), copied to the host once
/// the work queued on `stream` before is done.
fn download<T: Sample, Sh: ndarray::IntoDimension>(
    stream: &Arc<CudaStream>,
    buffer: &CudaSlice<f32>,
    shape: Sh,
) -> Result<ndarray::Array<T, Sh::Dim>> {
    let shape = shape.into_dimension();
    let host = stream.clone_dtoh(buffer).map_err(driver)?;
    let values: Vec<T> = bytemuck::pod_collect_to_vec(&host[..shape.size() * T::LANES]);
    ndarray::Array::from_shape_vec(shape, values).map_err(driver)
}

/// The cotangents `wrt` asks for, copied to the host: the first input's `(n, N, N)` pixels and
/// the `(count, 2)` offsets'.
fn download_gradients<T: Sample>(
    stream: &Arc<CudaStream>,
    wrt: Wrt,
    (first, shape): (&CudaSlice<f32>, (usize, usize, usize)),
    (offsets, count): (&CudaSlice<f64>, usize),
) -> Result<Gradients<T>> {
    Ok(Gradients {
        patches: wrt
            .patches
            .then(|| download(stream, first, shape))
            .transpose()?,
        offsets: wrt
            .offsets
            .then(|| download_rows(stream, offsets, count))
            .transpose()?,
    })
}

/// The `(count, 2)` offsets' cotangent at the start of `buffer`, copied to the host.
fn download_rows(
    stream: &Arc<CudaStream>,
    buffer: &CudaSlice<f64>,
    count: usize,
) -> Result<Array2<f64>> {
    let host = stream.clone_dtoh(buffer).map_err(driver)?;
    Array2::from_shape_vec((count, 2), host[..count * 2].to_vec()).map_err(driver)
}

/// The kernel as a module of `context`: a CUBIN for the device's architecture, loaded without
/// the driver's JIT (so an NVRTC newer than the driver works); else PTX for the driver to
/// compile. The error gives both reasons.
fn build_module(
    context: &Arc<CudaContext>,
    nvrtc: &Nvrtc,
    (major, minor): (i32, i32),
) -> std::result::Result<Arc<cudarc::driver::CudaModule>, String> {
    // The arithmetic of docs/semantics.md §2: no contraction, IEEE division and square root.
    let options = |arch: Option<String>| -> Vec<String> {
        let mut o: Vec<String> = super::NVRTC_OPTIONS.iter().map(|s| s.to_string()).collect();
        o.extend(arch);
        o
    };
    let name = "ptychostitch.cu";
    let cubin = nvrtc
        .compile(
            KERNEL_SOURCE,
            name,
            &options(Some(format!("--gpu-architecture=sm_{major}{minor}"))),
            Output::Cubin,
        )
        .and_then(|image| {
            context
                .load_module(Ptx::from_binary(image))
                .map_err(|e| format!("loading it: {e}"))
        });
    let cubin_error = match cubin {
        Ok(module) => return Ok(module),
        Err(e) => e,
    };
    let ptx = nvrtc
        .compile(KERNEL_SOURCE, name, &options(None), Output::Ptx)
        .and_then(|text| String::from_utf8(text).map_err(|e| e.to_string()))
        .and_then(|text| {
            context
                .load_module(Ptx::from_src(text))
                .map_err(|e| format!("loading it: {e}"))
        });
    ptx.map_err(|ptx_error| {
        format!("as an sm_{major}{minor} CUBIN: {cubin_error}; as PTX: {ptx_error}")
    })
}

/// What a GPU was found, or why none can be used: for `gpu_available()` and `--device cuda`.
pub fn available() -> Result<String> {
    Gpu::get().map(|g| g.name().to_string())
}

/// A CUDA stream work is queued on: a device's default stream or one borrowed from the caller.
#[derive(Debug, Clone)]
pub struct GpuStream {
    stream: Arc<CudaStream>,
}

impl GpuStream {
    /// The `CUstream` handle (0: the legacy default stream).
    pub fn raw(&self) -> usize {
        self.stream.cu_stream() as usize
    }

    /// Waits for everything queued on the stream (the caller's current context is kept).
    pub fn synchronize(&self) -> Result<()> {
        let _keep = KeepCurrent::new();
        self.stream.synchronize().map_err(driver)
    }
}
