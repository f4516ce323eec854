//! [`Launcher`] on one stream of one GPU: what `gpu::compose` runs on a device.

#[allow(unused_imports)]
use super::*;
use crate::gpu::compose::Launcher;

/// The kernels of one GPU queued on one stream (a caller's, borrowed, or the GPU's own).
/// Scratch is allocated stream-ordered on that stream and freed stream-ordered on it when the
/// launcher drops, after the work queued through it; no host synchronisation (except
/// [`Launcher::read_f32`], and on a device without memory pools, where the drop waits for the
/// stream before `cuMemFree`).
#[derive(Debug)]
pub struct StreamLauncher<'a> {
    gpu: &'a Gpu,
    stream: &'a Arc<CudaStream>,
    scratch: Vec<u64>,
    pooled: bool,
}

impl<'a> StreamLauncher<'a> {
    /// A launcher of `gpu`'s kernels on `stream` (a stream of that GPU).
    pub fn new(gpu: &'a Gpu, stream: &'a GpuStream) -> Result<Self> {
        Self::on(gpu, &stream.stream)
    }

    pub(super) fn on(gpu: &'a Gpu, stream: &'a Arc<CudaStream>) -> Result<Self> {
        if !Arc::ptr_eq(stream.context(), &gpu.context) {
            return Err(driver("the stream belongs to another GPU"));
        }
        Ok(Self {
            gpu,
            stream,
            scratch: Vec::new(),
            pooled: gpu.context.has_async_alloc(),
        })
    }

    fn zeros(&mut self, bytes: usize) -> Result<u64> {
        let bytes = bytes.max(4);
        let _keep = KeepCurrent::new();
        self.gpu.context.bind_to_thread().map_err(driver)?;
        let out_of_memory = |e: cudarc::driver::DriverError| Error::OutOfMemory {
            bytes: bytes as f64,
            what: format!("scratch on {} ({e})", self.gpu.name),
        };
        let raw = self.stream.cu_stream();
        let address = if self.pooled {
            // SAFETY: a stream-ordered allocation on a live stream of the bound context, freed
            // on the same stream by `drop`.
            unsafe { cu::malloc_async(raw, bytes) }.map_err(out_of_memory)?
        } else {
            // SAFETY: a plain allocation in the bound context, freed by `drop`.
            unsafe { cu::malloc_sync(bytes) }.map_err(out_of_memory)?
        };
        self.scratch.push(address);
        // SAFETY: `address` holds `bytes` bytes (allocated just above, in this stream's order).
        unsafe { cu::memset_d8_async(address, 0, bytes, raw) }.map_err(driver)?;
        Ok(address)
    }
}

impl Launcher for StreamLauncher<'_> {
    fn zeros_f32(&mut self, len: usize) -> Result<u64> {
        self.zeros(len * 4)
    }

    fn zeros_f64(&mut self, len: usize) -> Result<u64> {
        self.zeros(len * 8)
    }

    fn upload_f32(&mut self, values: &[f32]) -> Result<u64> {
        let at = self.zeros(values.len() * 4)?;
        if !values.is_empty() {
            // SAFETY: `at` holds `values.len()` f32 (allocated above); a copy from pageable
            // host memory has been staged when the call returns, so `values` may go.
            unsafe { cu::memcpy_htod_async(at, values, self.stream.cu_stream()) }
                .map_err(driver)?;
        }
        Ok(at)
    }

    fn upload_i32(&mut self, values: &[i32]) -> Result<u64> {
        let at = self.zeros(values.len() * 4)?;
        if !values.is_empty() {
            // SAFETY: as in `upload_f32`.
            unsafe { cu::memcpy_htod_async(at, values, self.stream.cu_stream()) }
                .map_err(driver)?;
        }
        Ok(at)
    }

    unsafe fn launch(&mut self, launch: &Launch) -> Result<()> {
        let _keep = KeepCurrent::new();
        self.gpu.context.bind_to_thread().map_err(driver)?;
        // SAFETY: forwarded from this function's contract.
        unsafe { self.gpu.launch(self.stream, launch) }
    }

    unsafe fn read_f32(&mut self, address: u64, len: usize) -> Result<Vec<f32>> {
        let _keep = KeepCurrent::new();
        self.gpu.context.bind_to_thread().map_err(driver)?;
        let mut host = vec![0.0_f32; len];
        // SAFETY: `address` holds `len` f32 of this GPU (the caller's contract); the stream is
        // synchronised before `host` is read.
        unsafe { cu::memcpy_dtoh_async(&mut host[..], address, self.stream.cu_stream()) }
            .map_err(driver)?;
        self.stream.synchronize().map_err(driver)?;
        Ok(host)
    }

    unsafe fn read_f64(&mut self, address: u64, len: usize) -> Result<Vec<f64>> {
        let _keep = KeepCurrent::new();
        self.gpu.context.bind_to_thread().map_err(driver)?;
        let mut host = vec![0.0_f64; len];
        // SAFETY: as in `read_f32`, for `len` f64.
        unsafe { cu::memcpy_dtoh_async(&mut host[..], address, self.stream.cu_stream()) }
            .map_err(driver)?;
        self.stream.synchronize().map_err(driver)?;
        Ok(host)
    }
}

impl Drop for StreamLauncher<'_> {
    fn drop(&mut self) {
        let _keep = KeepCurrent::new();
        if self.gpu.context.bind_to_thread().is_err() {
            return;
        }
        let raw = self.stream.cu_stream();
        // Without pools, `cuMemFree` must not free memory a queued kernel still reads.
        let idle = self.pooled || self.stream.synchronize().is_ok();
        for &address in &self.scratch {
            if self.pooled {
                // SAFETY: `address` came from `malloc_async` on this stream and is freed once,
                // ordered after the work queued on it.
                let _ = unsafe { cu::free_async(address, raw) };
            } else if idle {
                // SAFETY: `address` came from `malloc_sync`; the stream is idle.
                let _ = unsafe { cu::free_sync(address) };
            }
        }
    }
}
