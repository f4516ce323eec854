//! Device memory allocated and freed stream-ordered: a buffer, and a canvas on one.

#[allow(unused_imports)]
use super::*;

/// Device memory of this process's allocation, owned. Allocated stream-ordered on the stream
/// its kernel runs on ([`Gpu::alloc`]) and freed stream-ordered on the legacy default stream,
/// which follows the work of every blocking stream (torch's default stream among them): no
/// host synchronisation, so a framework's deleter (DLPack) can drop it with the GIL held,
/// inside a graph capture or from a callback. A framework that reads it on a non-blocking
/// stream keeps it alive until that work is done, as for its own memory (`record_stream`).
/// Where the device has no memory pools it is `cuMemAlloc`'d and freed after the legacy stream
/// is idle.
#[derive(Debug)]
pub struct DeviceBuffer {
    pub(super) gpu: Arc<Gpu>,
    pub(super) address: u64,
    pub(super) bytes: usize,
    pub(super) pooled: bool,
    pub(super) wait_for_all: bool,
}

impl DeviceBuffer {
    /// Device address of its first byte.
    pub fn address(&self) -> u64 {
        self.address
    }

    /// Its size in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The GPU it lives on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Frees it only after every stream of its GPU is idle: for an importer that reads it on
    /// streams of its own and frees it without ordering the free after those reads
    /// (TensorFlow: its compute streams are non-blocking, so the legacy stream's order does
    /// not cover them). Costs a device-wide wait in the deleter.
    pub fn wait_for_all_streams_before_free(mut self) -> Self {
        self.wait_for_all = true;
        self
    }
}

impl Gpu {
    /// `bytes` of uninitialised memory of this GPU for work queued on `stream` (allocated in
    /// that stream's order).
    pub fn alloc(self: &Arc<Self>, bytes: usize, stream: &GpuStream) -> Result<DeviceBuffer> {
        let bytes = bytes.max(4);
        let _keep = KeepCurrent::new();
        self.context.bind_to_thread().map_err(driver)?;
        let pooled = self.context.has_async_alloc();
        let out_of_memory = |e: cudarc::driver::DriverError| Error::OutOfMemory {
            bytes: bytes as f64,
            what: format!("an array on {} ({e})", self.name),
        };
        let address = if pooled {
            // SAFETY: a stream-ordered allocation on a live stream of the bound context, freed
            // by `DeviceBuffer::drop`; work queued on `stream` after this sees it.
            unsafe { cu::malloc_async(stream.stream.cu_stream(), bytes) }.map_err(out_of_memory)?
        } else {
            // SAFETY: a plain allocation in the bound context; freed by `DeviceBuffer::drop`.
            unsafe { cu::malloc_sync(bytes) }.map_err(out_of_memory)?
        };
        Ok(DeviceBuffer {
            gpu: Arc::clone(self),
            address,
            bytes,
            pooled,
            wait_for_all: false,
        })
    }
}

/// Device memory for one canvas (`S·S·lanes` `f32`), owned ([`DeviceBuffer`]).
#[derive(Debug)]
pub struct DeviceCanvas {
    pub(super) buffer: DeviceBuffer,
    pub(super) side: usize,
    pub(super) lanes: usize,
}

impl DeviceCanvas {
    /// Device address of pixel `(0, 0)`.
    pub fn address(&self) -> u64 {
        self.buffer.address
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
        &self.buffer.gpu
    }

    /// The memory, for an owner that outlives this canvas's view of it (a DLPack export).
    pub fn into_buffer(self) -> DeviceBuffer {
        self.buffer
    }

    /// Copies the canvas to the host once every stream of its device is idle (so the kernel
    /// that wrote it, on whatever stream, has finished).
    pub fn to_host<T: Sample>(&self) -> Result<Array2<T>> {
        if self.lanes != T::LANES {
            return Err(driver("the canvas holds another pixel type"));
        }
        let gpu = &self.buffer.gpu;
        gpu.synchronize()?;
        let _keep = KeepCurrent::new();
        gpu.context.bind_to_thread().map_err(driver)?;
        let mut pixels = vec![<T as bytemuck::Zeroable>::zeroed(); self.side * self.side];
        // SAFETY: `address` holds S·S pixels of `T::LANES` lanes (`alloc_canvas`), the same
        // byte count as `pixels`; the device is idle, so nothing writes it meanwhile.
        unsafe { cu::memcpy_dtoh_sync(&mut pixels[..], self.buffer.address) }.map_err(driver)?;
        Array2::from_shape_vec((self.side, self.side), pixels).map_err(driver)
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        // Errors cannot be reported from a destructor and are dropped here, not left for an
        // unrelated later call. Binding the context makes this work on any thread (DLPack
        // deleters run anywhere).
        let _keep = KeepCurrent::new();
        if self.gpu.context.bind_to_thread().is_err() {
            return;
        }
        let legacy = std::ptr::null_mut();
        // The context is bound: this waits for every stream of this GPU.
        if self.wait_for_all && cu::ctx::synchronize().is_err() {
            return; // the device failed: freeing now could free memory still read
        }
        if self.pooled {
            // SAFETY: `address` came from `malloc_async` in `Gpu::alloc` and is freed only here, ordered on the legacy stream after the work of every blocking
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
