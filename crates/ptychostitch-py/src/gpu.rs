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
use dlpark::metadata::Dynamic;
use dlpark::python::consumer::ImportedDlpack;
use dlpark::python::consumer::stream;
use dlpark::python::{
    DlpackExporter, DlpackStream, ExportRequest, ImportRequest, StreamArg, export_dlpack,
};
use dlpark::{DlpackFlags, Managed, ManagedTensorBase};
use ptychostitch::gpu::compose::{
    ExtractVjp, Images, Positions, ReassemblyVjp, RegionInputs, RegionVjp, Shifts,
};
use ptychostitch::gpu::cuda::{DeviceBuffer, Gpu, GpuPlan, GpuStream};
use ptychostitch::gpu::launch::{Stack, check_aligned, check_canvas_layout};
use ptychostitch::region::Region as CoreRegion;
use ptychostitch::{Error, Extraction as CoreExtraction, Operation, Plan as CorePlan};
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
type Probed = (u32, i32, Vec<i64>, Option<Vec<i64>>);

/// `(device type, device id, shape, strides)` of what `import_compat` reads from a host (CPU)
/// producer: the DLPack negotiation, tested without a GPU.
#[pyfunction]
pub(crate) fn dlpack_probe(object: &Bound<'_, PyAny>) -> PyResult<Probed> {
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

/// A library error of the GPU path as its Python exception (no signals are involved).
fn gpu_error(e: Error) -> PyErr {
    to_py(e, &Default::default())
}

fn dlpack_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("DLPack: {e}"))
}

/// A tensor of a device call, as DLPack described it.
pub(crate) struct Described {
    address: u64,
    shape: Vec<i64>,
    strides: Option<Vec<i64>>,
    dtype: DLDataType,
}

impl Described {
    fn elements(&self) -> i64 {
        self.shape.iter().product()
    }

    /// Whether the elements are in C order with no gaps (an axis of length 1 may have any
    /// stride).
    fn c_contiguous(&self) -> bool {
        let Some(strides) = &self.strides else {
            return true;
        };
        let mut expected = 1;
        for (&d, &s) in self.shape.iter().zip(strides).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }

    /// The address of a C-ordered buffer of `elements` values of `lanes` `f32` lanes (0: `f64`),
    /// or the error naming `what`.
    fn buffer(&self, what: &str, elements: usize, lanes: usize) -> PyResult<u64> {
        let dtype_ok = match lanes {
            0 => self.dtype == DLDataType::F64,
            _ => lanes_of(self.dtype, what).ok() == Some(lanes),
        };
        if !dtype_ok {
            let wanted = match lanes {
                0 => "float64",
                1 => "float32",
                _ => "complex64",
            };
            return Err(PyTypeError::new_err(format!(
                "{what} on the GPU must be {wanted}"
            )));
        }
        if self.elements() != elements as i64 || !self.c_contiguous() {
            return Err(PyValueError::new_err(format!(
                "{what} on the GPU must be a C-contiguous array of {elements} elements; shape {:?}, strides {:?} given",
                self.shape, self.strides
            )));
        }
        check_aligned(self.address, what).map_err(gpu_error)?;
        if lanes == 0 && !self.address.is_multiple_of(8) {
            return Err(PyValueError::new_err(format!(
                "{what} starts at {:#x}, not a multiple of 8 bytes: the kernels write float64 there; pass a fresh array",
                self.address
            )));
        }
        Ok(self.address)
    }
}

/// The tensors of one call on a GPU: imported on one device and stream (the caller's, or the
/// legacy default stream, then waited for), held until the call ends.
pub(crate) struct DeviceCall {
    pub(crate) gpu: Arc<Gpu>,
    pub(crate) on: GpuStream,
    waits: bool,
    held: Vec<ImportedDlpack>,
}

impl DeviceCall {
    /// A call on `first`'s GPU, on `stream` (a raw `CUstream` of that GPU; `None`: the legacy
    /// default stream, and [`DeviceCall::run`] waits); `first` described.
    pub(crate) fn new(
        py: Python<'_>,
        first: &Bound<'_, PyAny>,
        stream: Option<usize>,
    ) -> PyResult<(Self, Described)> {
        let request = ImportRequest::new(first.as_borrowed())?;
        let (imported, gpu, on) = match request.device() {
            Ok(device) => {
                let gpu = Gpu::on(cuda_ordinal(device)?).map_err(gpu_error)?;
                let on = match stream {
                    // SAFETY: the Python layer passes the framework's current stream of this
                    // device (torch's `cuda_stream`, CuPy's `ptr`), alive for the call.
                    Some(raw) => unsafe { gpu.borrow_stream(raw) },
                    None => gpu.default_stream(),
                };
                (import_compat(first, request, Some(on.raw()))?, gpu, on)
            }
            // A capsule (TensorFlow's) shows its device only once consumed and negotiates
            // nothing: the device is synchronised first.
            Err(_) => {
                let imported = request.import(None, None)?;
                let device = imported.validate().map_err(dlpack_error)?.device();
                let gpu = Gpu::on(cuda_ordinal(device)?).map_err(gpu_error)?;
                py.detach(|| gpu.synchronize()).map_err(gpu_error)?;
                let on = gpu.default_stream();
                (imported, gpu, on)
            }
        };
        let mut call = Self {
            gpu,
            on,
            waits: stream.is_none(),
            held: Vec::new(),
        };
        let described = call.hold(imported, false)?;
        Ok((call, described))
    }

    /// The address of `object` imported as a C-ordered buffer (as [`Described::buffer`]), or
    /// 0 when there is none (an output not wanted, an input recomputed).
    pub(crate) fn optional(
        &mut self,
        object: Option<&Bound<'_, PyAny>>,
        writable: bool,
        what: &str,
        elements: usize,
        lanes: usize,
    ) -> PyResult<u64> {
        match object {
            Some(o) => self.import(o, writable)?.buffer(what, elements, lanes),
            None => Ok(0),
        }
    }

    /// Imports `object` (on this call's GPU and stream); `writable`: an output.
    pub(crate) fn import(
        &mut self,
        object: &Bound<'_, PyAny>,
        writable: bool,
    ) -> PyResult<Described> {
        let request = ImportRequest::new(object.as_borrowed())?;
        let imported = match request.device() {
            Ok(_) => import_compat(object, request, Some(self.on.raw()))?,
            Err(_) => request.import(None, None)?,
        };
        self.hold(imported, writable)
    }

    fn hold(&mut self, imported: ImportedDlpack, writable: bool) -> PyResult<Described> {
        if writable && imported.flags().contains(DlpackFlags::READ_ONLY) {
            return Err(PyValueError::new_err("an output on the GPU is read-only"));
        }
        let tensor = imported.validate().map_err(dlpack_error)?;
        if tensor.device() != DLDevice::cuda(self.gpu.ordinal() as i32) {
            return Err(PyValueError::new_err(format!(
                "every array of the call must be on the same GPU (cuda:{}); one is on device type {}, id {}",
                self.gpu.ordinal(),
                tensor.device().device_type.0,
                tensor.device().device_id
            )));
        }
        let described = Described {
            address: tensor.data_ptr() as u64 + tensor.byte_offset(),
            shape: tensor.shape().to_vec(),
            strides: tensor.strides().map(<[i64]>::to_vec),
            dtype: tensor.dtype(),
        };
        self.held.push(imported);
        Ok(described)
    }

    /// Queues `work` with the GIL released; waits for it when the call has no caller's stream.
    /// The imported tensors are released after (their producers keep them alive for work queued
    /// on the caller's stream before they free them).
    pub(crate) fn run(
        self,
        py: Python<'_>,
        work: impl FnOnce(&Gpu, &GpuStream) -> Result<(), Error> + Send,
    ) -> PyResult<()> {
        let (gpu, on, waits) = (&*self.gpu, &self.on, self.waits);
        py.detach(|| {
            work(gpu, on)?;
            if waits { on.synchronize() } else { Ok(()) }
        })
        .map_err(gpu_error)?;
        drop(self.held);
        Ok(())
    }
}

/// The patches `(n, N, N[, 1])`, any strides, as [`Stack`] reads them.
fn stack_of(d: &Described) -> PyResult<Stack> {
    let lanes = lanes_of(d.dtype, "patches")?;
    Stack::from_layout(d.address, &d.shape, d.strides.as_deref(), lanes).map_err(gpu_error)
}

/// `Plan.vjp_cuda`: the backward of `operation` on device memory, into the caller's outputs.
#[allow(clippy::too_many_arguments)]
pub(crate) fn vjp(
    py: Python<'_>,
    plan: &CorePlan,
    plans: &GpuPlans,
    patches: &Bound<'_, PyAny>,
    cot: &Bound<'_, PyAny>,
    operation: Operation,
    output: Option<&Bound<'_, PyAny>>,
    grads: (Option<&Bound<'_, PyAny>>, Option<&Bound<'_, PyAny>>),
    stream: Option<usize>,
) -> PyResult<()> {
    let (mut call, first) = DeviceCall::new(py, patches, stream)?;
    let stack = stack_of(&first)?;
    let (l, side, count, n) = (
        stack.lanes,
        plan.canvas_shape().0,
        plan.len(),
        plan.geometry().patch_size(),
    );
    let canvas = side * side;
    let cot = call
        .import(cot, false)?
        .buffer("the cotangent", canvas, l)?;
    let output = call.optional(output, false, "the output", canvas, l)?;
    let patch_grad = call.optional(grads.0, true, "the patches' cotangent", count * n * n, l)?;
    let offsets_grad = call.optional(grads.1, true, "the offsets' cotangent", count * 2, 0)?;
    // Building the GPU tables (the first call of a plan on a device) waits for their upload:
    // with the GIL released.
    let ordinal = call.gpu.ordinal();
    let gpu_plan = py.detach(|| plans.on(plan, ordinal)).map_err(gpu_error)?;
    let io = ReassemblyVjp {
        stack,
        cot,
        output,
        patch_grad,
        offsets_grad,
    };
    call.run(py, |_, on| {
        // SAFETY: every buffer is an imported tensor of the checked size on the plan's GPU,
        // held (and kept alive by its producer for work queued on the caller's stream) until
        // the work has been queued, or waited for without a caller's stream.
        unsafe { gpu_plan.enqueue_vjp(on, operation, io) }
    })
}

/// Where the extraction and region kernels get their translations: planned on the device from
/// `positions` (imported on this call's GPU and stream: C-contiguous float32 or float64, `count·2`
/// values, `(B, 1, 2, C)` when `channel_layout` (`per_image` `C`), else `[x, y]` rows) -- no
/// position is read on the host -- or, without them, the plan's own.
fn shifts_from(
    call: &mut DeviceCall,
    positions: Option<&Bound<'_, PyAny>>,
    (count, per_image): (usize, usize),
    channel_layout: bool,
) -> PyResult<Shifts> {
    let Some(positions) = positions else {
        return Ok(Shifts::Planned);
    };
    let described = call.import(positions, false)?;
    let f64 = described.dtype == DLDataType::F64;
    let address = described.buffer("the positions", count * 2, if f64 { 0 } else { 1 })?;
    Ok(Shifts::From(Positions {
        address,
        f64,
        per_image: if channel_layout { per_image } else { 0 },
    }))
}

/// The images of an extraction: `(B, S, S)` or `(B, S, S, 1)`, any strides.
fn images_of(d: &Described, extraction: &CoreExtraction) -> PyResult<Images> {
    let lanes = lanes_of(d.dtype, "images")?;
    let (count, _, _) = extraction.output_shape();
    let b = (count / extraction.per_image().max(1)) as i64;
    let s = extraction.image_side() as i64;
    let shape_ok = d.shape == [b, s, s] || d.shape == [b, s, s, 1];
    if !shape_ok {
        return Err(PyValueError::new_err(format!(
            "images have shape {:?}; expected ({b}, {s}, {s}) or ({b}, {s}, {s}, 1)",
            d.shape
        )));
    }
    let strides = match &d.strides {
        Some(st) => [st[0], st[1], st[2]],
        None => [s * s, s, 1],
    };
    check_aligned(d.address, "images").map_err(gpu_error)?;
    Ok(Images {
        address: d.address,
        strides,
        lanes,
    })
}

/// `Extraction.extract_cuda`: the patches of images in device memory, into `out`.
pub(crate) fn extract(
    py: Python<'_>,
    extraction: &CoreExtraction,
    images: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    stream: Option<usize>,
    (positions, channel_layout): (Option<&Bound<'_, PyAny>>, bool),
) -> PyResult<()> {
    let (mut call, first) = DeviceCall::new(py, images, stream)?;
    let images = images_of(&first, extraction)?;
    let (count, n, _) = extraction.output_shape();
    let out = call
        .import(out, true)?
        .buffer("the patches", count * n * n, images.lanes)?;
    let at = (count, extraction.per_image());
    let shifts = shifts_from(&mut call, positions, at, channel_layout)?;
    call.run(py, |gpu, on| {
        // SAFETY: the images, `out` and the positions are imported tensors of the checked sizes
        // on this GPU, held until the work is queued (or done, without a caller's stream).
        unsafe { gpu.enqueue_extract(on, extraction, images, shifts, out) }
    })
}

/// `Extraction.vjp_cuda`: the extraction's backward on device memory, into the caller's outputs.
#[allow(clippy::too_many_arguments)]
pub(crate) fn extract_vjp(
    py: Python<'_>,
    extraction: &CoreExtraction,
    images: &Bound<'_, PyAny>,
    cot: &Bound<'_, PyAny>,
    grads: (Option<&Bound<'_, PyAny>>, Option<&Bound<'_, PyAny>>),
    channel_layout: bool,
    stream: Option<usize>,
    positions: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let (mut call, first) = DeviceCall::new(py, images, stream)?;
    let images = images_of(&first, extraction)?;
    let (count, n, _) = extraction.output_shape();
    let (l, s) = (images.lanes, extraction.image_side());
    let b = count / extraction.per_image().max(1);
    let cot = call
        .import(cot, false)?
        .buffer("the cotangent", count * n * n, l)?;
    let image_grad = call.optional(grads.0, true, "the images' cotangent", b * s * s, l)?;
    let offsets_grad = call.optional(grads.1, true, "the offsets' cotangent", count * 2, 0)?;
    let at = (count, extraction.per_image());
    let shifts = shifts_from(&mut call, positions, at, channel_layout)?;
    let io = ExtractVjp {
        images,
        cot,
        image_grad,
        offsets_grad,
        channel_layout,
        shifts,
    };
    call.run(py, |gpu, on| {
        // SAFETY: as in `extract`.
        unsafe { gpu.enqueue_extract_vjp(on, extraction, io) }
    })
}

/// The patches `(B, C, N, N)` (C order) and float32 weights `(1|B, 1|C, N, N)` (C order) of a
/// region call.
fn region_inputs(
    call: &mut DeviceCall,
    first: &Described,
    region: &CoreRegion,
    weights: &Bound<'_, PyAny>,
    (positions, channel_layout): (Option<&Bound<'_, PyAny>>, bool),
) -> PyResult<RegionInputs> {
    let l = lanes_of(first.dtype, "patches")?;
    let (b, c, n) = (region.samples(), region.channels(), region.patch_size());
    let patches = first.buffer("the patches", b * c * n * n, l)?;
    let w = call.import(weights, false)?;
    let dims: Vec<usize> = w.shape.iter().map(|&d| d.max(0) as usize).collect();
    let (w0, w1) = match dims[..] {
        [w0, w1, wn, wm] if wn == n && wm == n && [1, b].contains(&w0) && [1, c].contains(&w1) => {
            (w0, w1)
        }
        _ => {
            return Err(PyValueError::new_err(format!(
                "weights have shape {:?}; expected (1|{b}, 1|{c}, {n}, {n})",
                w.shape
            )));
        }
    };
    let weights = w.buffer("the weights", w0 * w1 * n * n, 1)?;
    let shifts = shifts_from(call, positions, (b * c, c), channel_layout)?;
    Ok(RegionInputs {
        patches,
        lanes: l,
        weights,
        weight_shape: [w0, w1],
        shifts,
    })
}

/// `Region.reassemble_cuda`: the regions of patches `(B, C, N, N)` (C order) with weights
/// `(1|B, 1|C, N, N)` (`float32`, C order) in device memory, into `out` (`B·P·P` C order).
pub(crate) fn region(
    py: Python<'_>,
    region: &CoreRegion,
    patches: &Bound<'_, PyAny>,
    weights: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    stream: Option<usize>,
    positions: (Option<&Bound<'_, PyAny>>, bool),
) -> PyResult<()> {
    let (mut call, first) = DeviceCall::new(py, patches, stream)?;
    let inputs = region_inputs(&mut call, &first, region, weights, positions)?;
    let p = region.side();
    let out =
        call.import(out, true)?
            .buffer("the regions", region.samples() * p * p, inputs.lanes)?;
    call.run(py, |gpu, on| {
        // SAFETY: as in `extract`.
        unsafe { gpu.enqueue_region(on, region, inputs, out) }
    })
}

/// `Region.support_cuda`: the support mask of patches `(B, C, N, N)` with weights
/// `(1|B, 1|C, N, N)` in device memory, into `out` (bool, `B·P·P`, C order).
pub(crate) fn region_support(
    py: Python<'_>,
    region: &CoreRegion,
    patches: &Bound<'_, PyAny>,
    weights: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    stream: Option<usize>,
    positions: (Option<&Bound<'_, PyAny>>, bool),
) -> PyResult<()> {
    let (mut call, first) = DeviceCall::new(py, patches, stream)?;
    let inputs = region_inputs(&mut call, &first, region, weights, positions)?;
    let p = region.side();
    let mask = call.import(out, true)?;
    let elements = region.samples() * p * p;
    if !(mask.dtype == DLDataType::BOOL || mask.dtype == DLDataType::U8)
        || mask.elements() != elements as i64
        || !mask.c_contiguous()
    {
        return Err(PyValueError::new_err(format!(
            "the support mask on the GPU must be a C-contiguous bool array of {elements} elements; shape {:?}, strides {:?} given",
            mask.shape, mask.strides
        )));
    }
    let out = mask.address;
    call.run(py, |gpu, on| {
        // SAFETY: as in `extract`; the mask holds B·P·P bytes.
        unsafe { gpu.enqueue_region_support(on, region, inputs, out) }
    })
}

/// `Region.vjp_cuda`: the patches' and positions' cotangents of the region reassembly on device
/// memory, into the caller's outputs.
#[allow(clippy::too_many_arguments)]
pub(crate) fn region_vjp(
    py: Python<'_>,
    region: &CoreRegion,
    patches: &Bound<'_, PyAny>,
    weights: &Bound<'_, PyAny>,
    cot: &Bound<'_, PyAny>,
    grads: (Option<&Bound<'_, PyAny>>, Option<&Bound<'_, PyAny>>),
    channel_layout: bool,
    stream: Option<usize>,
    positions: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let (mut call, first) = DeviceCall::new(py, patches, stream)?;
    let inputs = region_inputs(
        &mut call,
        &first,
        region,
        weights,
        (positions, channel_layout),
    )?;
    let l = inputs.lanes;
    let (b, c, n, p) = (
        region.samples(),
        region.channels(),
        region.patch_size(),
        region.side(),
    );
    let cot = call
        .import(cot, false)?
        .buffer("the cotangent", b * p * p, l)?;
    let patch_grad = call.optional(grads.0, true, "the patches' cotangent", b * c * n * n, l)?;
    let positions_grad = call.optional(grads.1, true, "the positions' cotangent", b * c * 2, 0)?;
    let io = RegionVjp {
        inputs,
        cot,
        patch_grad,
        positions_grad,
        channel_layout,
    };
    call.run(py, |gpu, on| {
        // SAFETY: as in `extract`.
        unsafe { gpu.enqueue_region_vjp(on, region, io) }
    })
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
    let (mut call, first) = DeviceCall::new(py, patches, stream)?;
    let stack = stack_of(&first)?;
    // Building the GPU tables (the first call of a plan on a device) waits for their upload:
    // with the GIL released.
    let ordinal = call.gpu.ordinal();
    let gpu_plan = py.detach(|| plans.on(plan, ordinal)).map_err(gpu_error)?;
    let side = plan.canvas_shape().0;
    match out {
        Some(out) => {
            let canvas = call.import(out, true)?;
            if lanes_of(canvas.dtype, "`out`")? != stack.lanes {
                return Err(PyTypeError::new_err(
                    "`out` must have the patches' dtype (complex64 or float32)",
                ));
            }
            check_canvas_layout(&canvas.shape, canvas.strides.as_deref(), side)
                .map_err(gpu_error)?;
            check_aligned(canvas.address, "`out`").map_err(gpu_error)?;
            let image = canvas.address;
            call.run(py, |_, on| {
                // SAFETY: `stack` and `image` describe the imported tensors, held until the
                // kernel is queued and kept alive by their producers for work queued on the
                // caller's stream; without one the call waits.
                unsafe { gpu_plan.enqueue(on, operation, stack, image) }
            })?;
            Ok(None)
        }
        None => {
            let canvas = gpu_plan
                .alloc_canvas(stack.lanes, &call.on)
                .map_err(gpu_error)?;
            let image = canvas.address();
            call.run(py, |_, on| {
                // SAFETY: `stack` describes the imported patches; `canvas` is this plan's side
                // and lanes; the work is waited for below.
                unsafe { gpu_plan.enqueue(on, operation, stack, image) }?;
                on.synchronize()
            })?;
            let (side, lanes) = (canvas.side() as i64, canvas.lanes());
            Ok(Some(DeviceArray {
                memory: Arc::new(canvas.into_buffer()),
                shape: vec![side, side, 1],
                dtype: if lanes == 2 {
                    DLDataType::C64
                } else {
                    DLDataType::F32
                },
            }))
        }
    }
}

/// An array in GPU memory this package allocated: a stitched canvas (`(S, S, 1)`, complete when
/// returned), or an output from `device_empty` for the device kernels to write (a framework
/// whose arrays are immutable, JAX or TensorFlow, cannot lend one). C order, complex64, float32
/// or float64. Import it with any framework's `from_dlpack` (torch, CuPy, JAX; TensorFlow through
/// `__dlpack__()`): zero-copy, the memory is freed when the last importer lets go.
#[pyclass(module = "ptychostitch._native", frozen)]
pub(crate) struct DeviceArray {
    memory: Arc<DeviceBuffer>,
    shape: Vec<i64>,
    dtype: DLDataType,
}

impl DeviceArray {
    fn device(&self) -> DLDevice {
        DLDevice::cuda(self.memory.gpu().ordinal() as i32)
    }

    fn managed<M: ManagedTensorBase>(&self) -> PyResult<Managed<M>> {
        let mut init = Dynamic::compact(self.shape.clone())
            .initialize_as::<M>(Box::new(Arc::clone(&self.memory)))
            .map_err(dlpack_error)?;
        init.set_data(self.memory.address() as *mut c_void)
            .set_device(self.device())
            .set_dtype(self.dtype);
        // SAFETY: the compact shape describes `elements · itemsize` bytes, no more than the
        // buffer holds (`device_empty`, `run`); the boxed Arc keeps the allocation alive until
        // the tensor's deleter runs; it is writable (no flags). A canvas is complete when made;
        // an empty output is written by calls that wait for their kernels.
        Ok(unsafe { init.finish() })
    }
}

/// The DLPack type of a NumPy dtype name the kernels read or write.
fn dlpack_dtype(name: &str) -> PyResult<DLDataType> {
    match name {
        "complex64" => Ok(DLDataType::C64),
        "float32" => Ok(DLDataType::F32),
        "float64" => Ok(DLDataType::F64),
        "bool" => Ok(DLDataType::BOOL),
        other => Err(PyTypeError::new_err(format!(
            "device arrays are complex64, float32, float64 or bool, not {other}"
        ))),
    }
}

/// An uninitialised C-ordered array of `shape` and `dtype` on GPU `ordinal`, for a device
/// entry (called without a stream) to write: the output of an operation on arrays a framework
/// cannot lend writable (JAX, TensorFlow). Allocated on the legacy default stream.
/// `wait_for_all_streams`: its free waits for every stream of the GPU first (TensorFlow,
/// whose non-blocking streams may still read it when it lets go).
#[pyfunction]
#[pyo3(signature = (shape, dtype, ordinal, wait_for_all_streams=false))]
pub(crate) fn device_empty(
    py: Python<'_>,
    shape: Vec<i64>,
    dtype: &str,
    ordinal: usize,
    wait_for_all_streams: bool,
) -> PyResult<DeviceArray> {
    let dt = dlpack_dtype(dtype)?;
    if shape.iter().any(|&d| d < 0) {
        return Err(PyValueError::new_err(format!(
            "a device array's shape has no negative sizes: {shape:?}"
        )));
    }
    let elements = shape
        .iter()
        .try_fold(1_usize, |n, &d| n.checked_mul(d as usize));
    let bytes = elements
        .and_then(|n| n.checked_mul(usize::from(dt.bits) / 8))
        .ok_or_else(|| PyValueError::new_err(format!("{shape:?} is too large")))?;
    let gpu = Gpu::on(ordinal).map_err(gpu_error)?;
    let memory = py
        .detach(|| gpu.alloc(bytes, &gpu.default_stream()))
        .map_err(gpu_error)?;
    let memory = if wait_for_all_streams {
        memory.wait_for_all_streams_before_free()
    } else {
        memory
    };
    Ok(DeviceArray {
        memory: Arc::new(memory),
        shape,
        dtype: dt,
    })
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

    /// The shape, a tuple.
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyTuple>> {
        pyo3::types::PyTuple::new(py, &self.shape)
    }

    /// "complex64", "float32", "float64" or "bool".
    #[getter]
    fn dtype(&self) -> &'static str {
        if self.dtype == DLDataType::C64 {
            "complex64"
        } else if self.dtype == DLDataType::F64 {
            "float64"
        } else if self.dtype == DLDataType::BOOL {
            "bool"
        } else {
            "float32"
        }
    }
}
