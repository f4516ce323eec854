//! A plan on one GPU: its tables uploaded once; the forward kernel on host or device stacks.

#[allow(unused_imports)]
use super::*;
use std::mem::ManuallyDrop;

/// A [`Plan`] on one GPU: shifts and per-tile patch lists uploaded once, reused for every
/// patch stack. Owns what it needs, so it can be cached next to the plan.
#[derive(Debug)]
pub struct GpuPlan {
    pub(super) geometry: Arc<Geometry>,
    pub(super) gpu: Arc<Gpu>,
    pub(super) stream: Arc<CudaStream>,
    pub(super) lists: TileLists,
    // The tables are freed in `Drop for GpuPlan`, with the plan's context bound.
    pub(super) shifts: ManuallyDrop<CudaSlice<f32>>,
    pub(super) tile_start: ManuallyDrop<CudaSlice<i32>>,
    pub(super) tile_patches: ManuallyDrop<CudaSlice<i32>>,
    pub(super) footprints: ManuallyDrop<CudaSlice<i32>>,
    /// The last event recorded on each caller's stream after a launch there (by raw handle),
    /// for the plan's own stream to wait on before it frees the tables ([`super::ordering`]).
    pub(super) used: Mutex<Vec<(usize, CudaEvent)>>,
    /// A launch was captured into a CUDA graph: the tables are never freed.
    pub(super) captured: std::sync::atomic::AtomicBool,
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
            stream.clone_htod(v).map(ManuallyDrop::new).map_err(driver)
        };
        let plan = GpuPlan {
            used: Mutex::new(Vec::new()),
            captured: std::sync::atomic::AtomicBool::new(false),
            shifts: ManuallyDrop::new(stream.clone_htod(&shifts).map_err(driver)?),
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

impl Drop for GpuPlan {
    /// Frees the tables on the plan's stream with the plan's context bound, whichever context
    /// (another GPU's, or none) is current on the dropping thread: cudarc frees a slice
    /// through the current context and keeps a failure for that context's next call. The
    /// plan's stream already waits for every kernel that read them on a caller's stream
    /// (`GpuPlan::order_after`), so the free is ordered after them.
    fn drop(&mut self) {
        if self.captured.load(std::sync::atomic::Ordering::Acquire) {
            // A CUDA graph may replay these tables at any time: kept (see `ordering`).
            return;
        }
        let _keep = KeepCurrent::new();
        if self.gpu.context.bind_to_thread().is_err() {
            // Freeing without the context would fail (and poison a later call): leaked.
            return;
        }
        let used = self.used.get_mut().unwrap_or_else(|p| p.into_inner());
        for (_, event) in used.iter() {
            // The free below comes after every kernel that read the tables on another stream.
            let _ = self.stream.wait(event);
        }
        // SAFETY: each table is dropped once, here, and the plan (its only owner) is never
        // used again.
        unsafe {
            ManuallyDrop::drop(&mut self.shifts);
            ManuallyDrop::drop(&mut self.tile_start);
            ManuallyDrop::drop(&mut self.tile_patches);
            ManuallyDrop::drop(&mut self.footprints);
        }
    }
}

/// A patch stack and its canvas in device memory, for repeated runs (benchmarks, training
/// loops whose patches stay on the GPU).
#[derive(Debug)]
pub struct Resident {
    pub(super) patches: CudaSlice<f32>,
    pub(super) image: CudaSlice<f32>,
    pub(super) count: usize,
    pub(super) size: usize,
    pub(super) lanes: usize,
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
        let _keep = KeepCurrent::new();
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
        let _keep = KeepCurrent::new();
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
        let _keep = KeepCurrent::new();
        {
            let stack = resident.stack();
            let (_patches, _read) = resident.patches.device_ptr(&self.stream);
            let (image_at, _write) = resident.image.device_ptr_mut(&self.stream);
            // SAFETY: the stack's memory holds the count·N·N pixels `stack` describes and `image_at`
            // S·S·lanes lanes (allocated by `upload` for this plan); both live in `resident`,
            // which outlives the synchronisation below.
            unsafe { self.launch(&self.stream, operation, stack, image_at)? };
        }
        self.synchronize()
    }

    /// Copies a resident stack's canvas back to the host.
    pub fn download<T: Sample>(&self, resident: &mut Resident) -> Result<Array2<T>> {
        let _keep = KeepCurrent::new();
        if resident.lanes != T::LANES {
            return Err(driver("the resident canvas holds another pixel type"));
        }
        let side = self.geometry.side();
        download(&self.stream, &resident.image, (side, side))
    }

    /// A canvas of this plan's side with `lanes` lanes per pixel in this GPU's memory, for a
    /// kernel queued on `stream` (allocated in that stream's order; not initialised: the kernel
    /// writes every pixel).
    pub fn alloc_canvas(&self, lanes: usize, stream: &GpuStream) -> Result<DeviceCanvas> {
        let side = self.geometry.side();
        Ok(DeviceCanvas {
            buffer: self.gpu.alloc(side * side * lanes * 4, stream)?,
            side,
            lanes,
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
        unsafe { self.launch(&stream.stream, operation, stack, image) }
    }

    /// Launches the forward kernel on `stream`; the checks every entry point shares.
    ///
    /// # Safety
    /// As [`GpuPlan::enqueue`].
    pub(super) unsafe fn launch(
        &self,
        stream: &Arc<CudaStream>,
        operation: Operation,
        stack: Stack,
        image: u64,
    ) -> Result<()> {
        self.with_tables(stream, |launcher, tables| {
            // SAFETY: forwarded from this function's contract; the tables live as long as `self`.
            unsafe {
                compose::reassembly(
                    launcher,
                    &self.geometry,
                    &self.lists,
                    tables,
                    operation,
                    stack,
                    image,
                )
            }
        })
    }

    /// Queues the vector–Jacobian product of `operation` on `stream` ([`compose::reassembly_vjp`]:
    /// the backward kernels and the offsets' fold, no atomics), for inputs and outputs already
    /// in this GPU's memory. Returns once queued. Bit-identical to [`Plan::vjp`].
    ///
    /// # Safety
    /// Every buffer of `io` must be memory of this plan's GPU of the size
    /// [`compose::ReassemblyVjp`] names, alive and not used by others until `stream` has run
    /// the work; `stream` must belong to this plan's GPU.
    pub unsafe fn enqueue_vjp(
        &self,
        stream: &GpuStream,
        operation: Operation,
        io: compose::ReassemblyVjp,
    ) -> Result<()> {
        let _keep = KeepCurrent::new();
        self.with_tables(&stream.stream, |launcher, tables| {
            // SAFETY: forwarded from this function's contract; the tables live as long as `self`.
            unsafe {
                compose::reassembly_vjp(
                    launcher,
                    &self.geometry,
                    &self.lists,
                    tables,
                    operation,
                    io,
                )
            }
        })
    }

    /// Runs `work` with a launcher on `stream` and the addresses of the plan's tables as read
    /// on it; then orders the plan's own stream after it ([`GpuPlan::order_after`]).
    fn with_tables(
        &self,
        stream: &Arc<CudaStream>,
        work: impl FnOnce(&mut StreamLauncher<'_>, compose::PlanTables) -> Result<()>,
    ) -> Result<()> {
        {
            let (start_at, _s) = self.tile_start.device_ptr(stream);
            let (list_at, _l) = self.tile_patches.device_ptr(stream);
            let (shifts_at, _h) = self.shifts.device_ptr(stream);
            let (footprints, _f) = self.footprints.device_ptr(stream);
            let tables = compose::PlanTables {
                tables: Tables {
                    shifts: shifts_at,
                    tile_start: start_at,
                    tile_patches: list_at,
                },
                footprints,
            };
            let mut launcher = StreamLauncher::on(&self.gpu, stream)?;
            work(&mut launcher, tables)?;
        }
        self.order_after(stream)
    }

    /// After a launch on `stream`: what the plan's own stream, which frees the tables when the
    /// plan is dropped, must wait for ([`super::ordering`]): an event recorded on a caller's
    /// stream (waited on at the drop), nothing on its own stream, and nothing at all -- the
    /// tables kept for good -- on a stream capturing a CUDA graph.
    pub(super) fn order_after(&self, stream: &Arc<CudaStream>) -> Result<()> {
        let (owner, used) = (
            self.stream.cu_stream() as usize,
            stream.cu_stream() as usize,
        );
        // SAFETY: `stream` is a live stream of this plan's GPU (every caller's contract).
        let status = unsafe { cu::stream::is_capturing(stream.cu_stream()) }.map_err(driver)?;
        let capturing = status != sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
        match after_launch(owner, used, capturing) {
            AfterLaunch::Nothing => {}
            AfterLaunch::KeepTables => {
                self.captured
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            AfterLaunch::RecordForDrop => {
                let mut events = self.used.lock().unwrap_or_else(|p| p.into_inner());
                let at = match events.iter().position(|(s, _)| *s == used) {
                    Some(at) => at,
                    None => {
                        let event = self
                            .gpu
                            .context
                            .new_event(Some(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING))
                            .map_err(driver)?;
                        events.push((used, event));
                        events.len() - 1
                    }
                };
                events[at].1.record(stream).map_err(driver)?;
            }
        }
        Ok(())
    }

    /// Waits for everything queued on the plan's own (default) stream (the caller's current
    /// context is kept).
    pub fn synchronize(&self) -> Result<()> {
        let _keep = KeepCurrent::new();
        self.stream.synchronize().map_err(driver)
    }
}
