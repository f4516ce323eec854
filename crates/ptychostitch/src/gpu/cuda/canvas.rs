//! Device memory for one canvas, allocated and freed stream-ordered.

#[allow(unused_imports)]
use super::*;

/// Device memory for one canvas (`S·S·lanes` `f32`), owned. Allocated stream-ordered on the
/// stream its kernel runs on and freed stream-ordered on the legacy default stream, which
/// follows the work of every blocking stream (torch's default stream among them): no host
/// synchronisation, so a framework's deleter (DLPack) can drop it with the GIL held, inside a
/// graph capture or from a callback. A framework that reads it on a non-blocking stream keeps
/// it alive until that work is done, as for its own memory (`record_stream`). Where the device
/// has no memory pools it is `cuMemAlloc`'d and freed after the legacy stream is idle.
#[derive(Debug)]
pub struct DeviceCanvas {
    pub(super) gpu: Arc<Gpu>,
    pub(super) address: u64,
    pub(super) side: usize,
    pub(super) lanes: usize,
    pub(super) pooled: bool,
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
