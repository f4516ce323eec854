//! The GPU entry point: patches already in GPU memory (a torch CUDA tensor, a CuPy or JAX
//! array, a TensorFlow GPU tensor's DLPack capsule) are read in place through DLPack (`dlpark`),
//! stitched on that GPU on the caller's stream, and the canvas is written into the caller's
//! `out` tensor or into a [`DeviceArray`] that any framework imports through DLPack.
//!
//! Stream rules:
//! - `stream` given (torch's or CuPy's current stream): the producer is asked to make the
//!   patches ready on it and the kernel is queued on it; the call returns at once, as a
//!   framework operation does.
//! - `stream` omitted (JAX, TensorFlow, anything else): the legacy default stream; the call
//!   waits for the result before it returns.
//! - an existing capsule (TensorFlow's) carries no stream: the device is synchronised first.
//! - no `out`: the call waits for the result (the [`DeviceArray`] is complete when returned).

use crate::to_py;
use dlpark::ffi::{DLDataType, DLDevice, DLDeviceType};
use dlpark::metadata::Fixed;
use dlpark::python::consumer::ImportedDlpack;
use dlpark::python::consumer::stream;
use dlpark::python::{
    DlpackExporter, DlpackStream, ExportRequest, ImportRequest, StreamArg, export_dlpack,
};
use dlpark::{DlpackFlags, Managed, ManagedTensorBase};
use ptychostitch::gpu::cuda::{DeviceCanvas, Gpu, GpuPlan};
use ptychostitch::gpu::launch::{Stack, check_aligned, check_canvas_layout};
use ptychostitch::{Error, Operation, Plan as CorePlan};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

/// The GPU plans of one `Plan`, per device ordinal (tile lists built and uploaded once).
#[derive(Default)]
pub(crate) struct GpuPlans(Mutex<HashMap<usize, Arc<GpuPlan>>>);

impl GpuPlans {
    fn on(&self, plan: &CorePlan, ordinal: usize) -> Result<Arc<GpuPlan>, Error> {
        let mut plans = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = plans.get(&ordinal) {
            return Ok(Arc::clone(found));
        }
        let made = Arc::new(plan.gpu_on(ordinal)?);
        plans.insert(ordinal, Arc::clone(&made));
        Ok(made)
    }
}

/// The consumer stream handed to the producer's `__dlpack__(stream=...)`.
struct Consumer(usize);

// SAFETY: the handle is a live CUDA stream of the producer's device (the caller's current
// stream, or the device's legacy default stream 0, encoded by dlpark as the sentinel 1), alive
// for the whole import.
unsafe impl DlpackStream for Consumer {
    fn as_python_arg(&self, _py: Python<'_>, _device: DLDevice) -> PyResult<StreamArg> {
        Ok(stream::cuda(self.0 as *mut c_void))
    }
}

/// Imports `object` through DLPack with `request` (made from it), the consumer stream `stream`
/// (a raw `CUstream`; `None` for host memory). dlpark always asks `__dlpack__` for a versioned
/// capsule (`max_version=`); producers older than DLPack 1.0's keywords (torch ≤ 2.8, older
/// CuPy) refuse it with a TypeError, and are then asked again without it, for a legacy capsule.
pub(crate) fn import_compat(
    object: &Bound<'_, PyAny>,
    request: ImportRequest<'_>,
    stream: Option<usize>,
) -> PyResult<ImportedDlpack> {
    let consumer = stream.map(Consumer);
    let first = request.import(consumer.as_ref().map(|c| c as &dyn DlpackStream), None);
    let error = match first {
        Ok(imported) => return Ok(imported),
        Err(e) if e.is_instance_of::<PyTypeError>(object.py()) => e,
        Err(e) => return Err(e),
    };
    let py = object.py();
    let kwargs = PyDict::new(py);
    if let Some(raw) = stream {
        // DLPack's CUDA stream numbers: 1 is the legacy default stream (0 is not allowed).
        kwargs.set_item("stream", if raw == 0 { 1 } else { raw })?;
    }
    let capsule = match object.call_method("__dlpack__", (), Some(&kwargs)) {
        Ok(capsule) => capsule,
        // Not the keyword after all: the first error says what the producer refused.
        Err(_) => return Err(error),
    };
    ImportRequest::new(capsule.as_borrowed())?.import(None, None)
}

/// `(device type, device id, shape, strides)` of an imported tensor.
type Described = (u32, i32, Vec<i64>, Option<Vec<i64>>);

/// `(device type, device id, shape, strides)` of what `import_compat` reads from a host (CPU)
/// producer: the DLPack negotiation, tested without a GPU.
#[pyfunction]
pub(crate) fn dlpack_probe(object: &Bound<'_, PyAny>) -> PyResult<Described> {
    let request = ImportRequest::new(object.as_borrowed())?;
    let imported = import_compat(object, request, None)?;
    let tensor = imported.validate().map_err(dlpack_error)?;
    let device = tensor.device();
    Ok((
        device.device_type.0,
        device.device_id,
        tensor.shape().to_vec(),
        tensor.strides().map(<[i64]>::to_vec),
    ))
}

/// The CUDA ordinal of a DLPack device, or the TypeError for any other device.
fn cuda_ordinal(device: DLDevice) -> PyResult<usize> {
    if device.device_type == DLDeviceType::CUDA {
        return Ok(device.device_id as usize);
    }
    Err(PyTypeError::new_err(format!(
        "the GPU path reads CUDA device memory (DLPack device type 2); this array is on device type {}",
        device.device_type.0
    )))
}

/// `f32` lanes per element: 1 for float32, 2 for complex64; a TypeError for anything else.
fn lanes_of(dtype: DLDataType, what: &str) -> PyResult<usize> {
    if dtype == DLDataType::C64 {
        Ok(2)
    } else if dtype == DLDataType::F32 {
        Ok(1)
    } else {
        Err(PyTypeError::new_err(format!(
            "{what} on the GPU must be complex64 or float32 (DLPack type code {}, {} bits, {} lanes given)",
            dtype.code.0, dtype.bits, dtype.lanes
        )))
    }
}

fn dlpack_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("DLPack: {e}"))
}

/// What `Plan.run_cuda` does; see the module documentation.
pub(crate) fn run(
    py: Python<'_>,
    plan: &CorePlan,
    plans: &GpuPlans,
    patches: &Bound<'_, PyAny>,
    operation: Operation,
    stream: Option<usize>,
    out: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<DeviceArray>> {
    let gpu_error = |e: Error| to_py(e, &Default::default());
    let request = ImportRequest::new(patches.as_borrowed())?;
    let (imported, gpu, on) = match request.device() {
        Ok(device) => {
            let gpu = Gpu::on(cuda_ordinal(device)?).map_err(gpu_error)?;
            let on = match stream {
                // SAFETY: the Python layer passes the framework's current stream of this device
                // (torch's `cuda_stream`, CuPy's `ptr`), alive for the call.
                Some(raw) => unsafe { gpu.borrow_stream(raw) },
                None => gpu.default_stream(),
            };
            (import_compat(patches, request, Some(on.raw()))?, gpu, on)
        }
        // A capsule (TensorFlow's) shows its device only once consumed and negotiates nothing.
        Err(_) => {
            let imported = request.import(None, None)?;
            let device = imported.validate().map_err(dlpack_error)?.device();
            let gpu = Gpu::on(cuda_ordinal(device)?).map_err(gpu_error)?;
            py.detach(|| gpu.synchronize()).map_err(gpu_error)?;
            let on = gpu.default_stream();
            (imported, gpu, on)
        }
    };
    let tensor = imported.validate().map_err(dlpack_error)?;
    if tensor.device() != DLDevice::cuda(gpu.ordinal() as i32) {
        return Err(dlpack_error(
            "the producer exported another device than it reported",
        ));
    }
    let lanes = lanes_of(tensor.dtype(), "patches")?;
    let address = tensor.data_ptr() as u64 + tensor.byte_offset();
    let stack =
        Stack::from_layout(address, tensor.shape(), tensor.strides(), lanes).map_err(gpu_error)?;
    let gpu_plan = plans.on(plan, gpu.ordinal()).map_err(gpu_error)?;
    let waits = stream.is_none();
    match out {
        Some(out) => {
            let request = ImportRequest::new(out.as_borrowed())?;
            if request.device()? != tensor.device() {
                return Err(PyValueError::new_err(
                    "`out` must be on the same GPU as the patches",
                ));
            }
            let written = import_compat(out, request, Some(on.raw()))?;
            if written.flags().contains(DlpackFlags::READ_ONLY) {
                return Err(PyValueError::new_err("`out` is read-only"));
            }
            let canvas = written.validate().map_err(dlpack_error)?;
            if lanes_of(canvas.dtype(), "`out`")? != lanes {
                return Err(PyTypeError::new_err(
                    "`out` must have the patches' dtype (complex64 or float32)",
                ));
            }
            let side = plan.canvas_shape().0;
            check_canvas_layout(canvas.shape(), canvas.strides(), side).map_err(gpu_error)?;
            let image = canvas.data_ptr() as u64 + canvas.byte_offset();
            check_aligned(image, "`out`").map_err(gpu_error)?;
            py.detach(|| {
                // SAFETY: `stack` and `image` describe the imported tensors, whose producers
                // keep them alive while `imported` / `written` are held (to the end of this
                // function) and, on the caller's stream, for work queued on it before they
                // free them; without a caller's stream we wait below.
                unsafe { gpu_plan.enqueue(&on, operation, stack, image) }?;
                if waits { on.synchronize() } else { Ok(()) }
            })
            .map_err(gpu_error)?;
            Ok(None)
        }
        None => {
            let canvas = gpu_plan.alloc_canvas(lanes, &on).map_err(gpu_error)?;
            py.detach(|| {
                // SAFETY: `stack` describes the imported patches (alive until this function
                // returns, after the synchronisation); `canvas` is this plan's side and lanes.
                unsafe { gpu_plan.enqueue(&on, operation, stack, canvas.address()) }?;
                on.synchronize()
            })
            .map_err(gpu_error)?;
            Ok(Some(DeviceArray {
                canvas: Arc::new(canvas),
            }))
        }
    }
}

/// A stitched canvas in GPU memory, `(S, S, 1)` complex64 or float32, complete when returned.
/// Import it with any framework's `from_dlpack` (torch, CuPy, JAX; TensorFlow through
/// `__dlpack__()`): zero-copy, the memory is freed when the last importer lets go.
#[pyclass(module = "ptychostitch._native", frozen)]
pub(crate) struct DeviceArray {
    canvas: Arc<DeviceCanvas>,
}

impl DeviceArray {
    fn element(&self) -> DLDataType {
        if self.canvas.lanes() == 2 {
            DLDataType::C64
        } else {
            DLDataType::F32
        }
    }

    fn device(&self) -> DLDevice {
        DLDevice::cuda(self.canvas.gpu().ordinal() as i32)
    }

    fn managed<M: ManagedTensorBase>(&self) -> PyResult<Managed<M>> {
        let s = self.canvas.side() as i64;
        let mut init = Fixed::<3, _, _>::new([s, s, 1], [s, 1, 1])
            .initialize_as::<M>(Box::new(Arc::clone(&self.canvas)))
            .map_err(dlpack_error)?;
        init.set_data(self.canvas.address() as *mut c_void)
            .set_device(self.device())
            .set_dtype(self.element());
        // SAFETY: shape and strides describe the canvas's S·S pixels of `dtype`, C order, at
        // `address`; the boxed Arc keeps the allocation alive until the tensor's deleter runs;
        // it is writable (no flags), and the kernel has finished writing it (synchronised
        // before this object was made).
        Ok(unsafe { init.finish() })
    }
}

impl DlpackExporter for DeviceArray {
    fn device(&self) -> DLDevice {
        DeviceArray::device(self)
    }

    fn flags(&self) -> DlpackFlags {
        DlpackFlags::empty()
    }

    fn prepare_export(&self, _py: Python<'_>, _request: &ExportRequest<'_>) -> PyResult<()> {
        // Complete since construction: nothing to order on the consumer's stream.
        Ok(())
    }

    fn export_legacy(&self, _py: Python<'_>) -> PyResult<Managed<dlpark::ffi::DLManagedTensor>> {
        self.managed()
    }

    fn export_versioned(
        &self,
        _py: Python<'_>,
    ) -> PyResult<Managed<dlpark::ffi::DLManagedTensorVersioned>> {
        self.managed()
    }
}

#[pymethods]
impl DeviceArray {
    /// DLPack export (the array API's `__dlpack__`).
    #[pyo3(signature = (*, stream=None, max_version=None, dl_device=None, copy=None))]
    fn __dlpack__(
        &self,
        py: Python<'_>,
        stream: Option<Bound<'_, PyAny>>,
        max_version: Option<(u32, u32)>,
        dl_device: Option<(u32, i32)>,
        copy: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        let request = ExportRequest::parse(stream.as_ref(), max_version, dl_device, copy)?;
        export_dlpack(self, py, request)
    }

    /// `(2, ordinal)`: CUDA memory of that GPU.
    fn __dlpack_device__(&self) -> (u32, i32) {
        let d = self.device();
        (d.device_type.0, d.device_id)
    }

    /// `(S, S, 1)`.
    #[getter]
    fn shape(&self) -> (usize, usize, usize) {
        (self.canvas.side(), self.canvas.side(), 1)
    }

    /// "complex64" or "float32".
    #[getter]
    fn dtype(&self) -> &'static str {
        if self.canvas.lanes() == 2 {
            "complex64"
        } else {
            "float32"
        }
    }
}
