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

use super::launch::{Args, BLOCK, Stack, Tables, VjpArgs, offsets_from_sums};
use super::nvrtc::{Nvrtc, Output};
use super::ordering::{AfterLaunch, after_launch};
use super::staging;
use super::tiles::TileLists;
use super::{KERNEL_NAME, KERNEL_SOURCE, VJP_KERNEL_NAMES};
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

// SAFETY: `Args` is `#[repr(C)]` plain data (integers and 64-bit addresses) laid out exactly as
// `StitchArgs` in kernel.cu (checked by `launch::tests`); CUDA copies it by value.
unsafe impl DeviceRepr for Args {}

// SAFETY: `VjpArgs` is `#[repr(C)]` plain data laid out exactly as `VjpArgs` in kernel.cu
// (checked by `launch::tests`); CUDA copies it by value.
unsafe impl DeviceRepr for VjpArgs {}

/// One GPU of this process: its primary context (the one torch, CuPy, JAX and TensorFlow use),
/// the compiled kernel and the pinned staging buffers.
#[derive(Debug)]
pub struct Gpu {
    context: Arc<CudaContext>,
    function: CudaFunction,
    /// The backward kernels, in the order of [`VJP_KERNEL_NAMES`].
    vjp: [CudaFunction; 3],
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
/// context, and a framework on another device of the same thread must find its own again.
struct KeepCurrent(Option<sys::CUcontext>);

impl KeepCurrent {
    fn new() -> Self {
        // Before the driver is initialised there is no current context to keep.
        Self(cu::ctx::get_current().ok().flatten())
    }
}

impl Drop for KeepCurrent {
    fn drop(&mut self) {
        if let Some(context) = self.0 {
            // SAFETY: `context` was current on this thread when `new` ran; a primary context
            // (all that frameworks use) lives until the process ends.
            let _ = unsafe { cu::ctx::set_current(context) };
        }
    }
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
        let function = module.load_function(KERNEL_NAME).map_err(unavailable)?;
        let load = |name: &str| module.load_function(name).map_err(unavailable);
        let vjp = [
            load(VJP_KERNEL_NAMES[0])?,
            load(VJP_KERNEL_NAMES[1])?,
            load(VJP_KERNEL_NAMES[2])?,
        ];
        Ok(Gpu {
            context,
            function,
            vjp,
            name,
            staging: Mutex::new(None),
        })
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
        let mut o: Vec<String> = [
            "--fmad=false",
            "--ftz=false",
            "--prec-div=true",
            "--prec-sqrt=true",
        ]
        .map(String::from)
        .to_vec();
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

/// Device memory for one canvas (`S·S·lanes` `f32`), owned. Allocated stream-ordered on the
/// stream its kernel runs on and freed stream-ordered on the legacy default stream, which
/// follows the work of every blocking stream (torch's default stream among them): no host
/// synchronisation, so a framework's deleter (DLPack) can drop it with the GIL held, inside a
/// graph capture or from a callback. A framework that reads it on a non-blocking stream keeps
/// it alive until that work is done, as for its own memory (`record_stream`). Where the device
/// has no memory pools it is `cuMemAlloc`'d and freed after the legacy stream is idle.
#[derive(Debug)]
pub struct DeviceCanvas {
    gpu: Arc<Gpu>,
    address: u64,
    side: usize,
    lanes: usize,
    pooled: bool,
}

impl DeviceCanvas {
    /// Device address of pixel `(0, 0)`.
    pub fn address(&self) -> u64 {
        self.address
    }

    /// The canvas side `S`.
    pub fn side(&self) -> usize {
        self.side
    }

    /// 1 (real) or 2 (complex) `f32` lanes per pixel.
    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// The GPU the canvas lives on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Copies the canvas to the host once every stream of its device is idle (so the kernel
    /// that wrote it, on whatever stream, has finished).
    pub fn to_host<T: Sample>(&self) -> Result<Array2<T>> {
        if self.lanes != T::LANES {
            return Err(driver("the canvas holds another pixel type"));
        }
        self.gpu.synchronize()?;
        let _keep = KeepCurrent::new();
        self.gpu.context.bind_to_thread().map_err(driver)?;
        let mut pixels = vec![<T as bytemuck::Zeroable>::zeroed(); self.side * self.side];
        // SAFETY: `address` holds S·S pixels of `T::LANES` lanes (`alloc_canvas`), the same
        // byte count as `pixels`; the device is idle, so nothing writes it meanwhile.
        unsafe { cu::memcpy_dtoh_sync(&mut pixels[..], self.address) }.map_err(driver)?;
        Array2::from_shape_vec((self.side, self.side), pixels).map_err(driver)
    }
}

impl Drop for DeviceCanvas {
    fn drop(&mut self) {
        // Errors cannot be reported from a destructor and are dropped here, not left for an
        // unrelated later call. Binding the context makes this work on any thread (DLPack
        // deleters run anywhere).
        let _keep = KeepCurrent::new();
        if self.gpu.context.bind_to_thread().is_err() {
            return;
        }
        let legacy = std::ptr::null_mut();
        if self.pooled {
            // SAFETY: `address` came from `malloc_async` in `GpuPlan::alloc_canvas` and is
            // freed only here, ordered on the legacy stream after the work of every blocking
            // stream (see the type's documentation).
            let _ = unsafe { cu::free_async(self.address, legacy) };
        } else {
            // SAFETY: waiting for the legacy stream, always alive, has no precondition.
            let idle = unsafe { cu::stream::synchronize(legacy) }.is_ok();
            if idle {
                // SAFETY: `address` came from `malloc_sync` and is freed only here, once the
                // legacy stream (and with it every blocking stream) is idle.
                let _ = unsafe { cu::free_sync(self.address) };
            }
        }
    }
}

/// A [`Plan`] on one GPU: shifts and per-tile patch lists uploaded once, reused for every
/// patch stack. Owns what it needs, so it can be cached next to the plan.
#[derive(Debug)]
pub struct GpuPlan {
    geometry: Arc<Geometry>,
    gpu: Arc<Gpu>,
    stream: Arc<CudaStream>,
    lists: TileLists,
    shifts: CudaSlice<f32>,
    tile_start: CudaSlice<i32>,
    tile_patches: CudaSlice<i32>,
    footprints: CudaSlice<i32>,
    /// Recorded on a caller's stream after each launch there, for the plan's own stream (which
    /// frees the tables above) to wait on ([`super::ordering`]).
    used: Mutex<CudaEvent>,
}

impl Plan {
    /// This plan on GPU 0.
    pub fn gpu(&self) -> Result<GpuPlan> {
        self.gpu_on(0)
    }

    /// This plan on GPU `ordinal`. Builds the tile lists on the host and uploads them; the
    /// tables are ready for any stream when this returns.
    pub fn gpu_on(&self, ordinal: usize) -> Result<GpuPlan> {
        let gpu = Gpu::on(ordinal)?;
        let _keep = KeepCurrent::new();
        let stream = gpu.context.default_stream();
        let geometry = Arc::new(self.geometry().clone());
        let lists = TileLists::new(&geometry)?;
        let shifts: Vec<f32> = geometry.shifts().iter().flatten().copied().collect();
        let upload_i32 = |v: &[i32]| {
            // An empty list still needs a valid allocation.
            let v = if v.is_empty() { &[0][..] } else { v };
            stream.clone_htod(v).map_err(driver)
        };
        let used = gpu
            .context
            .new_event(Some(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING))
            .map_err(driver)?;
        let plan = GpuPlan {
            used: Mutex::new(used),
            shifts: stream.clone_htod(&shifts).map_err(driver)?,
            tile_start: upload_i32(&lists.start)?,
            tile_patches: upload_i32(&lists.patches)?,
            footprints: upload_i32(&VjpArgs::footprint_table(&geometry))?,
            lists,
            stream,
            gpu,
            geometry,
        };
        plan.synchronize()?;
        Ok(plan)
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

impl Resident {
    /// The stack's device memory, C order, as [`GpuPlan::enqueue`] takes it.
    pub fn stack(&self) -> Stack {
        let (n, s) = (self.size as i64, self.patches.stream());
        let (address, _read) = self.patches.device_ptr(s);
        Stack {
            address,
            count: self.count,
            size: self.size,
            strides: [n * n, n, 1],
            lanes: self.lanes,
        }
    }
}

impl GpuPlan {
    /// The GPU this plan lives on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

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

    /// Copies a host patch stack to the GPU, with room for its canvas. Stacks of at least
    /// [`staging::THRESHOLD_BYTES`] go through pinned staging buffers.
    pub fn upload<T: Sample, D: Dimension>(
        &self,
        patches: ArrayView<'_, T, D>,
    ) -> Result<Resident> {
        let stack = self.geometry.check_patches(patches)?;
        let (count, size, _) = stack.dim();
        let total = count * size * size * T::LANES;
        // SAFETY: every lane is written below, by one copy or by the staged copies.
        let mut device = unsafe { self.stream.alloc::<f32>(total) }.map_err(driver)?;
        if total * 4 < staging::THRESHOLD_BYTES {
            let contiguous = stack.as_standard_layout();
            let values: &[T] = contiguous.as_slice().unwrap_or_default();
            let lanes: &[f32] = bytemuck::cast_slice(values);
            self.stream
                .memcpy_htod(lanes, &mut device)
                .map_err(driver)?;
        } else {
            self.gpu.stage(&self.stream, stack, &mut device)?;
        }
        let side = self.geometry.side();
        Ok(Resident {
            patches: device,
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
            let stack = resident.stack();
            let (_patches, _read) = resident.patches.device_ptr(&self.stream);
            let (image_at, _write) = resident.image.device_ptr_mut(&self.stream);
            // SAFETY: the stack's memory holds the count·N·N pixels `stack` describes and `image_at`
            // S·S·lanes lanes (allocated by `upload` for this plan); both live in `resident`,
            // which outlives the synchronisation below.
            unsafe { self.launch(&self.stream, operation, stack, image_at, 0)? };
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
        let side = self.geometry.side();
        Array2::from_shape_vec((side, side), pixels).map_err(driver)
    }

    /// A canvas of this plan's side with `lanes` lanes per pixel in this GPU's memory, for a
    /// kernel queued on `stream` (allocated in that stream's order; not initialised: the kernel
    /// writes every pixel).
    pub fn alloc_canvas(&self, lanes: usize, stream: &GpuStream) -> Result<DeviceCanvas> {
        let side = self.geometry.side();
        let bytes = side * side * lanes * 4;
        let _keep = KeepCurrent::new();
        self.gpu.context.bind_to_thread().map_err(driver)?;
        let pooled = self.gpu.context.has_async_alloc();
        let out_of_memory = |e: cudarc::driver::DriverError| Error::OutOfMemory {
            bytes: bytes as f64,
            what: format!("the canvas on {} ({e})", self.gpu.name),
        };
        let address = if pooled {
            // SAFETY: a stream-ordered allocation on a live stream of the bound context, freed
            // by `DeviceCanvas::drop`; work queued on `stream` after this sees it.
            unsafe { cu::malloc_async(stream.stream.cu_stream(), bytes) }.map_err(out_of_memory)?
        } else {
            // SAFETY: a plain allocation in the bound context; freed by `DeviceCanvas::drop`.
            unsafe { cu::malloc_sync(bytes) }.map_err(out_of_memory)?
        };
        Ok(DeviceCanvas {
            gpu: Arc::clone(&self.gpu),
            address,
            side,
            lanes,
            pooled,
        })
    }

    /// Queues `operation` on `stream` for a patch stack already in this GPU's memory, writing
    /// the `S×S` canvas (`S·S·lanes` `f32`, C order) at `image`. Returns once queued: work
    /// queued later on `stream` sees the canvas; synchronise the stream to read it from the
    /// host.
    ///
    /// # Safety
    /// `stack` must describe memory of this plan's GPU holding every element its address and
    /// strides reach, and `image` a buffer of `S·S·stack.lanes` `f32` there; both must stay
    /// alive, and `image` unread and unwritten by others, until `stream` has run the kernel.
    /// `stream` must belong to this plan's GPU.
    pub unsafe fn enqueue(
        &self,
        stream: &GpuStream,
        operation: Operation,
        stack: Stack,
        image: u64,
    ) -> Result<()> {
        if !Arc::ptr_eq(stream.stream.context(), &self.gpu.context) {
            return Err(driver("the stream belongs to another GPU than the plan"));
        }
        let _keep = KeepCurrent::new();
        // SAFETY: forwarded from this function's contract.
        unsafe { self.launch(&stream.stream, operation, stack, image, 0) }
    }

    /// Launches the kernel on `stream`; the checks every entry point shares. `weights`: 0, or
    /// a buffer of `S·S` `f32` that receives the weight canvas.
    ///
    /// # Safety
    /// As [`GpuPlan::enqueue`], and `weights` (when not 0) as `image`.
    unsafe fn launch(
        &self,
        stream: &Arc<CudaStream>,
        operation: Operation,
        stack: Stack,
        image: u64,
        weights: u64,
    ) -> Result<()> {
        let geometry = &*self.geometry;
        stack.check(geometry)?;
        let (start_at, _s) = self.tile_start.device_ptr(stream);
        let (list_at, _l) = self.tile_patches.device_ptr(stream);
        let (shifts_at, _h) = self.shifts.device_ptr(stream);
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
        let mut launch = stream.launch_builder(&self.gpu.function);
        launch.arg(&args);
        // SAFETY: the kernel's one argument is `Args` by value; its addresses are valid per
        // this function's contract and the tables above, which live as long as `self`.
        unsafe { launch.launch(config) }.map_err(driver)?;
        self.order_after(stream)
    }

    /// After a launch on `stream`: the plan's own stream, which frees the tables when the plan
    /// is dropped, waits for it, so that they are never freed (and reused) under a kernel still
    /// reading them on a caller's stream.
    fn order_after(&self, stream: &Arc<CudaStream>) -> Result<()> {
        let (owner, used) = (
            self.stream.cu_stream() as usize,
            stream.cu_stream() as usize,
        );
        if after_launch(owner, used) == AfterLaunch::OwnerWaits {
            let event = self.used.lock().unwrap_or_else(|p| p.into_inner());
            event.record(stream).map_err(driver)?;
            self.stream.wait(&event).map_err(driver)?;
        }
        Ok(())
    }

    /// The vector–Jacobian product of `operation` on the GPU, for host arrays (`output`: the
    /// forward's result, needed for `reassemble_position`'s offsets; recomputed on the GPU when
    /// `None`): copies in, runs the backward kernels (quotient, patch pixels, offset sums; no
    /// atomics), copies out, re-centres the offsets on the host. Bit-identical to
    /// [`Plan::shift_and_sum_vjp`] / [`Plan::reassemble_position_vjp`] (NaN payloads are the
    /// GPU's own), the same from run to run.
    pub fn vjp<T: Sample, D: Dimension>(
        &self,
        operation: Operation,
        patches: ArrayView<'_, T, D>,
        output: Option<ndarray::ArrayView2<'_, T>>,
        cotangent: ndarray::ArrayView2<'_, T>,
        wrt: Wrt,
    ) -> Result<Gradients<T>> {
        let g = &*self.geometry;
        let (side, n, l) = (g.side(), g.patch_size(), T::LANES);
        let cot_host = canvas_lanes(side, "cotangent", cotangent)?;
        let _keep = KeepCurrent::new();
        let stream = &self.stream;
        let resident = self.upload(patches)?;
        let cot = stream.clone_htod(&*cot_host).map_err(driver)?;
        let reassemble = operation == Operation::ReassemblePosition;
        // Weights (and, when not given, the forward's output) from the forward kernel.
        let mut weights = stream.alloc_zeros::<f32>(side * side).map_err(driver)?;
        let out = match output {
            Some(o) => stream
                .clone_htod(&*canvas_lanes(side, "output", o)?)
                .map_err(driver)?,
            None => stream.alloc_zeros::<f32>(side * side * l).map_err(driver)?,
        };
        let mut out = out;
        if reassemble {
            let stack = resident.stack();
            let (w_at, _w) = weights.device_ptr_mut(stream);
            let mut scratch = stream.alloc_zeros::<f32>(side * side * l).map_err(driver)?;
            let target = if output.is_none() {
                &mut out
            } else {
                &mut scratch
            };
            let (image_at, _i) = target.device_ptr_mut(stream);
            // SAFETY: the stack is `resident`'s, the canvas and weights hold S·S·lanes and S·S
            // f32; all outlive the synchronisation at the end of this function.
            unsafe { self.launch(stream, Operation::ReassemblePosition, stack, image_at, w_at)? };
        }
        let (shifts_at, _h) = self.shifts.device_ptr(stream);
        let (fp_at, _f) = self.footprints.device_ptr(stream);
        let stack = resident.stack();
        let mut args = VjpArgs::new(g, l);
        args.patches = stack.address;
        args.stride_n = stack.strides[0];
        args.stride_r = stack.strides[1];
        args.stride_c = stack.strides[2];
        args.shifts = shifts_at;
        args.footprints = fp_at;
        let (cot_at, _c) = cot.device_ptr(stream);
        args.cot = cot_at;
        let mut cot_image = stream.alloc_zeros::<f32>(side * side * l).map_err(driver)?;
        let mut cot_weights = stream.alloc_zeros::<f32>(side * side).map_err(driver)?;
        if reassemble {
            let mut q = args;
            let (o_at, _o) = out.device_ptr(stream);
            let (w_at, _w) = weights.device_ptr(stream);
            let (ci_at, _ci) = cot_image.device_ptr_mut(stream);
            let (cw_at, _cw) = cot_weights.device_ptr_mut(stream);
            (q.output, q.weights, q.cot_image, q.cot_weights) = (o_at, w_at, ci_at, cw_at);
            let (gx, gy) = q.canvas_grid();
            // SAFETY: every address is a live device buffer of the size the kernel reads or
            // writes; they outlive the synchronisation below.
            unsafe { self.launch_vjp(stream, 2, q, (gx, gy, 1), (BLOCK, BLOCK, 1))? };
            args.cot = ci_at;
        }
        let mut patch_grad = if wrt.patches {
            Some(
                stream
                    .alloc_zeros::<f32>(g.len() * n * n * l)
                    .map_err(driver)?,
            )
        } else {
            None
        };
        if let Some(buffer) = patch_grad.as_mut() {
            let mut a = args;
            let (at, _p) = buffer.device_ptr_mut(stream);
            // (the guard records the kernel on the buffer for the copy back)
            a.patch_grad = at;
            // SAFETY: as above; `buffer` holds n·N·N·lanes f32.
            unsafe { self.launch_vjp(stream, 0, a, a.patch_grid(), (BLOCK, BLOCK, 1))? };
        }
        let mut sums = Vec::new();
        if wrt.offsets {
            let passes: &[bool] = if reassemble { &[false, true] } else { &[false] };
            for &ones in passes {
                let mut buffer = stream.alloc_zeros::<f64>(g.len() * 16).map_err(driver)?;
                let mut a = args;
                if ones {
                    let (cw_at, _cw) = cot_weights.device_ptr(stream);
                    (a.patches, a.lanes, a.cot) = (0, 1, cw_at);
                }
                {
                    let (at, _s) = buffer.device_ptr_mut(stream);
                    a.shift_sums = at;
                    // SAFETY: as above; `buffer` holds sixteen f64 per patch.
                    unsafe { self.launch_vjp(stream, 1, a, (g.len() as u32, 1, 1), (8, 1, 1))? };
                }
                sums.push(buffer);
            }
        }
        let patches = match patch_grad {
            Some(buffer) => {
                let host = stream.clone_dtoh(&buffer).map_err(driver)?;
                let values: Vec<T> = bytemuck::pod_collect_to_vec(&host);
                Some(ndarray::Array3::from_shape_vec((g.len(), n, n), values).map_err(driver)?)
            }
            None => None,
        };
        let offsets = if wrt.offsets {
            let host: Vec<Vec<f64>> = sums
                .iter()
                .map(|b| stream.clone_dtoh(b).map_err(driver))
                .collect::<Result<_>>()?;
            Some(offsets_from_sums(&host[0], host.get(1).map(Vec::as_slice)))
        } else {
            None
        };
        self.synchronize()?;
        drop(resident);
        Ok(Gradients { patches, offsets })
    }

    /// Launches backward kernel `which` ([`VJP_KERNEL_NAMES`]) with `args` on `stream`.
    ///
    /// # Safety
    /// Every address in `args` must be a live buffer of this GPU of the size the kernel reads
    /// or writes, until `stream` has run it.
    unsafe fn launch_vjp(
        &self,
        stream: &Arc<CudaStream>,
        which: usize,
        args: VjpArgs,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
    ) -> Result<()> {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(());
        }
        let config = LaunchConfig {
            grid_dim: grid,
            block_dim: block,
            shared_mem_bytes: 0,
        };
        let mut launch = stream.launch_builder(&self.gpu.vjp[which]);
        launch.arg(&args);
        // SAFETY: the kernel's one argument is `VjpArgs` by value; its addresses are valid per
        // this function's contract.
        unsafe { launch.launch(config) }.map_err(driver)?;
        Ok(())
    }

    /// Waits for everything queued on the plan's own (default) stream (the caller's current
    /// context is kept).
    pub fn synchronize(&self) -> Result<()> {
        let _keep = KeepCurrent::new();
        self.stream.synchronize().map_err(driver)
    }
}
