//! JAX's XLA FFI: every operator (`crate::ops`) as an XLA custom call, so that `jax.jit`
//! compiles it into the program -- no Python callback, no GIL, no host copy of the framework's
//! buffers.
//!
//! `frame.c` decodes XLA's call frame with the vendored C API header into a [`RawCall`]; this
//! module turns its buffers into typed views and runs the operator the `op` attribute names
//! with the parameters of the `spec` attribute (the declaration's `spec()` string). A `rank`
//! attribute gives the first operand's rank as traced: when XLA hands over one more axis
//! (`jax.vmap` with `vmap_method="broadcast_all"`, used for operators whose samples are
//! independent), the mapped axis is folded into every buffer's leading (batch) axis, which in
//! row-major memory is the same bytes: one call over `V·B` samples, not `V` calls.
//!
//! On the GPU (`cuda` builds) the CUDA handler gets XLA's stream and device ordinal and runs the
//! operator's device kernels on that stream through `ptychostitch_ops::device`, on XLA's
//! buffers in place: the extractions, the region reassembly and its support mask plan on the
//! device (nothing read back, no wait); the reassembly reads its offsets to the host to plan
//! (`n·2` values, a wait on the stream) and its tables go back up. Scratch is allocated
//! stream-ordered on XLA's stream from CUDA's own pool (outside XLA's allocator). Operators
//! without device kernels (`center_channels`) and the reference are lowered to the callback on
//! a GPU by `python/ptychostitch/_frameworks/jax_adapter.py`, which also puts TensorFlow-layout
//! region operands into the torch layout the device kernels read.
//!
//! `xla_handlers` hands both handlers to Python as capsules, which
//! `jax.ffi.register_ffi_target` registers under every operator's target name.

use crate::ops::{self, Operand, Output, Spec};
use ndarray::{ArrayViewD, ArrayViewMutD, IxDyn};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::ffi::{c_char, c_void};
use std::ptr::NonNull;

const MAX_BUFFERS: usize = 8;

/// One buffer of the call, as `frame.c`'s `ps_buffer`.
#[repr(C)]
pub struct RawBuffer {
    dtype: i32,
    rank: i64,
    dims: *const i64,
    data: *mut c_void,
}

/// The decoded call, as `frame.c`'s `ps_call`.
#[repr(C)]
pub struct RawCall {
    op: *const c_char,
    op_len: usize,
    spec: *const c_char,
    spec_len: usize,
    rank: i64,
    n_args: i64,
    args: [RawBuffer; MAX_BUFFERS],
    n_rets: i64,
    rets: [RawBuffer; MAX_BUFFERS],
    stream: *mut c_void,
    ordinal: i32,
}

// XLA_FFI_DataType values (c_api.h).
const PRED: i32 = 1;
const F32: i32 = 11;
const F64: i32 = 12;
const C64: i32 = 15;

/// An XLA dtype's name, for errors.
fn dtype_name(code: i32) -> String {
    let name = match code {
        1 => "bool",
        2 => "int8",
        3 => "int16",
        4 => "int32",
        5 => "int64",
        6 => "uint8",
        7 => "uint16",
        8 => "uint32",
        9 => "uint64",
        10 => "float16",
        11 => "float32",
        12 => "float64",
        15 => "complex64",
        16 => "bfloat16",
        18 => "complex128",
        _ => return format!("XLA dtype {code}"),
    };
    name.to_string()
}

unsafe extern "C" {
    /// `frame.c`'s handler for the CPU platform (an `XLA_FFI_Handler`).
    fn ptychostitch_xla_cpu(frame: *mut c_void) -> *mut c_void;
    /// `frame.c`'s handler for the CUDA platform.
    #[cfg(feature = "cuda")]
    fn ptychostitch_xla_cuda(frame: *mut c_void) -> *mut c_void;
}

/// Called by `frame.c` for every executed custom call: 0, or 1 with a message (NUL-terminated,
/// at most `capacity` bytes) that becomes the XLA error JAX raises. Never unwinds into C.
#[unsafe(no_mangle)]
pub extern "C" fn ptychostitch_xla_execute(
    call: *const RawCall,
    message: *mut c_char,
    capacity: usize,
) -> i32 {
    let outcome = std::panic::catch_unwind(|| {
        // SAFETY: `frame.c` passes a pointer to a `ps_call` on its stack, alive and unaliased
        // for this call, whose layout `RawCall` mirrors field for field.
        let call = unsafe { &*call };
        execute(call)
    });
    let text = match outcome {
        Ok(Ok(())) => return 0,
        Ok(Err(text)) => text,
        Err(_) => "the operator panicked".to_string(),
    };
    let text = format!("ptychostitch: {text}");
    if capacity > 0 && !message.is_null() {
        let bytes = text.as_bytes();
        let n = bytes.len().min(capacity - 1);
        // SAFETY: `message` points to `capacity` writable bytes (frame.c's buffer); `n + 1`
        // of them are written.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), message.cast::<u8>(), n);
            *message.add(n) = 0;
        }
    }
    1
}

/// A byte span of the call as text.
fn text_of(ptr: *const c_char, len: usize) -> Result<&'static str, String> {
    if ptr.is_null() {
        return Err("a string attribute is missing".into());
    }
    // SAFETY: XLA's attribute byte spans stay alive for the call; `len` bytes are readable.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) };
    std::str::from_utf8(bytes).map_err(|e| e.to_string())
}

/// A buffer's dims, with the leading two merged when `fold`.
fn dims_of(buffer: &RawBuffer, fold: bool) -> Result<Vec<usize>, String> {
    let rank = usize::try_from(buffer.rank).map_err(|_| "a negative rank".to_string())?;
    let dims: Vec<usize> = if rank == 0 {
        Vec::new()
    } else {
        // SAFETY: XLA's buffer descriptor holds `rank` dims, alive for the call.
        unsafe { std::slice::from_raw_parts(buffer.dims, rank) }
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| "a negative dimension".to_string()))
            .collect::<Result<_, _>>()?
    };
    if !fold {
        return Ok(dims);
    }
    if dims.len() < 2 {
        return Err("a mapped (vmap) operand without a batch axis".into());
    }
    Ok([vec![dims[0] * dims[1]], dims[2..].to_vec()].concat())
}

/// The buffer's data as a pointer ndarray accepts (a dangling one for an empty buffer).
fn data_of<T>(buffer: &RawBuffer, len: usize) -> Result<NonNull<T>, String> {
    if len == 0 {
        return Ok(NonNull::dangling());
    }
    let ptr = NonNull::new(buffer.data.cast::<T>()).ok_or("a buffer without data")?;
    if !(ptr.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>()) {
        return Err("a misaligned buffer".into());
    }
    Ok(ptr)
}

/// A read-only view of a buffer of `T`.
fn view<T>(buffer: &RawBuffer, dims: &[usize]) -> Result<ArrayViewD<'static, T>, String> {
    let ptr = data_of::<T>(buffer, dims.iter().product())?;
    // SAFETY: XLA hands over a dense row-major buffer of `dims` elements of the dtype `T`
    // was chosen for, aligned (checked), alive and unwritten for the call (operands never
    // alias results: the call requests no aliasing); the view does not outlive the call.
    Ok(unsafe { ArrayViewD::from_shape_ptr(IxDyn(dims), ptr.as_ptr()) })
}

/// A writable view of a result buffer of `T`.
fn view_mut<T>(buffer: &RawBuffer, dims: &[usize]) -> Result<ArrayViewMutD<'static, T>, String> {
    let ptr = data_of::<T>(buffer, dims.iter().product())?;
    // SAFETY: as in `view`; XLA allocated the result for this call alone, so this view is its
    // only access, and it does not outlive the call. A `bool` result is XLA's PRED (one byte,
    // 0 or 1), only written here.
    Ok(unsafe { ArrayViewMutD::from_shape_ptr(IxDyn(dims), ptr.as_ptr()) })
}

/// An operand as the operators take it.
fn operand(buffer: &RawBuffer, fold: bool) -> Result<Operand<'static>, String> {
    let dims = dims_of(buffer, fold)?;
    Ok(match buffer.dtype {
        F32 => Operand::F32(view(buffer, &dims)?),
        F64 => Operand::F64(view(buffer, &dims)?),
        C64 => Operand::C64(view(buffer, &dims)?),
        other => {
            return Err(format!(
                "an operand of dtype {}; expected float32, float64 or complex64",
                dtype_name(other)
            ));
        }
    })
}

/// A result as the operators write it.
fn output(buffer: &RawBuffer, fold: bool) -> Result<Output<'static>, String> {
    let dims = dims_of(buffer, fold)?;
    Ok(match buffer.dtype {
        F32 => Output::F32(view_mut(buffer, &dims)?),
        F64 => Output::F64(view_mut(buffer, &dims)?),
        C64 => Output::C64(view_mut(buffer, &dims)?),
        PRED => Output::Bool(view_mut(buffer, &dims)?),
        other => {
            return Err(format!(
                "a result of dtype {}; expected float32, float64, complex64 or bool",
                dtype_name(other)
            ));
        }
    })
}

/// The operator's name, its spec, and whether the first operand carries a folded vmap axis.
fn decode(call: &RawCall) -> Result<(&'static str, Spec, bool, usize, usize), String> {
    let op = text_of(call.op, call.op_len)?;
    let spec = Spec::parse(text_of(call.spec, call.spec_len)?)?;
    let n_args = usize::try_from(call.n_args)
        .unwrap_or(usize::MAX)
        .min(MAX_BUFFERS);
    let n_rets = usize::try_from(call.n_rets)
        .unwrap_or(usize::MAX)
        .min(MAX_BUFFERS);
    let first = call
        .args
        .first()
        .filter(|_| n_args > 0)
        .ok_or("a call without operands")?;
    let fold = first.rank == call.rank + 1;
    if !fold && first.rank != call.rank {
        return Err(format!(
            "the first operand has rank {} where {} was traced",
            first.rank, call.rank
        ));
    }
    Ok((op, spec, fold, n_args, n_rets))
}

fn execute(call: &RawCall) -> Result<(), String> {
    if !call.stream.is_null() {
        return execute_on_device(call);
    }
    let (op, spec, fold, n_args, n_rets) = decode(call)?;
    let args = call.args[..n_args]
        .iter()
        .map(|b| operand(b, fold))
        .collect::<Result<Vec<_>, _>>()?;
    let mut rets = call.rets[..n_rets]
        .iter()
        .map(|b| output(b, fold))
        .collect::<Result<Vec<_>, _>>()?;
    ops::run(op, &spec, &args, &mut rets)
}

/// A buffer of a CUDA call as the device operators take it.
#[cfg(feature = "cuda")]
fn device_buffer(buffer: &RawBuffer, fold: bool) -> Result<ops::device::Buffer, String> {
    use ops::device::DType;
    let dtype = match buffer.dtype {
        F32 => DType::F32,
        F64 => DType::F64,
        C64 => DType::C64,
        PRED => DType::Bool,
        other => {
            return Err(format!(
                "a buffer of dtype {}; expected float32, float64, complex64 or bool",
                dtype_name(other)
            ));
        }
    };
    let dims = dims_of(buffer, fold)?;
    let len: usize = dims.iter().product();
    if len > 0 && buffer.data.is_null() {
        return Err("a buffer without data".into());
    }
    Ok(ops::device::Buffer {
        dtype,
        dims,
        address: buffer.data as u64,
    })
}

/// The CUDA handler's work: the operator's device kernels on XLA's stream.
#[cfg(feature = "cuda")]
fn execute_on_device(call: &RawCall) -> Result<(), String> {
    use ptychostitch::gpu::cuda::{Gpu, StreamLauncher};
    let (op, spec, fold, n_args, n_rets) = decode(call)?;
    let args = call.args[..n_args]
        .iter()
        .map(|b| device_buffer(b, fold))
        .collect::<Result<Vec<_>, _>>()?;
    let rets = call.rets[..n_rets]
        .iter()
        .map(|b| device_buffer(b, fold))
        .collect::<Result<Vec<_>, _>>()?;
    let ordinal = usize::try_from(call.ordinal).map_err(|_| "a negative device ordinal")?;
    let gpu = Gpu::on(ordinal).map_err(ops::text)?;
    // SAFETY: XLA hands the handler its stream of this device (`XLA_FFI_Stream_Get`), alive for
    // the call; the work queued on it is ordered with XLA's own.
    let stream = unsafe { gpu.borrow_stream(call.stream as usize) };
    let mut launcher = StreamLauncher::new(&gpu, &stream).map_err(ops::text)?;
    // SAFETY: XLA's operand and result buffers are dense row-major device buffers of their
    // dims and dtypes on this device, the results allocated for this call alone (no aliasing is
    // requested), alive until the work queued on XLA's stream has run; scratch is released
    // stream-ordered after it when the launcher drops.
    unsafe { ops::device::run(op, &spec, &args, &rets, &mut launcher) }
}

#[cfg(not(feature = "cuda"))]
fn execute_on_device(_call: &RawCall) -> Result<(), String> {
    Err("this build has no CUDA support; its device buffers cannot be read here".into())
}

/// `{"cpu": capsule, "cuda": capsule}` (`"cuda"` in CUDA builds): the handlers
/// `jax.ffi.register_ffi_target(name, capsule, platform=...)` registers under every operator's
/// target name.
#[pyfunction]
pub(crate) fn xla_handlers(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let handlers = PyDict::new(py);
    let capsule = |handler: *mut c_void| {
        // SAFETY: `handler` is a function with static lifetime; the capsule has no name (what
        // JAX's own `jax.ffi.pycapsule` makes) and no destructor, and is owned by the returned
        // object.
        unsafe {
            let raw = pyo3::ffi::PyCapsule_New(handler, std::ptr::null(), None);
            Bound::from_owned_ptr_or_err(py, raw)
        }
    };
    handlers.set_item(
        "cpu",
        capsule(ptychostitch_xla_cpu as *const () as *mut c_void)?,
    )?;
    #[cfg(feature = "cuda")]
    handlers.set_item(
        "cuda",
        capsule(ptychostitch_xla_cuda as *const () as *mut c_void)?,
    )?;
    Ok(handlers)
}
