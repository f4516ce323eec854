//! `ptychostitch._native`: the extension module behind the `ptychostitch` Python package.
//!
//! Thin wrappers over the library: NumPy arrays come in as read-only views (no copy, any
//! strides), the work runs with the GIL released, and results move into NumPy arrays without
//! a copy. Dtype conversion and PtychoPINN's signatures live in `python/ptychostitch/__init__.py`.

use ndarray::{Array2, Array3, ArrayViewD, Ix3};
use numpy::{IntoPyArray, PyArray2, PyReadonlyArrayDyn};
use ptychostitch::geometry::patch_stack;
use ptychostitch::{
    Complex32, Error, Extraction as CoreExtraction, Gradients, Implementation, Interrupt,
    Operation, Plan as CorePlan, Sample, Wrt,
};
use pyo3::create_exception;
use pyo3::exceptions::{
    PyKeyboardInterrupt, PyMemoryError, PyRuntimeError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `$body` with `$a` bound to the array `$patches` holds, whichever element type
/// ([`Patches::Complex`] or [`Patches::Real`]): the one place the two arms are written.
macro_rules! with_sample {
    ($patches:expr, |$a:ident| $body:expr) => {
        match $patches {
            $crate::Patches::Complex($a) => $body,
            $crate::Patches::Real($a) => $body,
        }
    };
}

/// `$body` with `$a`, `$b` bound to two arrays of one element type; arrays of two types are
/// a `TypeError` saying `$what` must agree.
macro_rules! with_sample_pair {
    ($first:expr, $second:expr, |$a:ident, $b:ident| $body:expr, $what:expr) => {
        match ($first, $second) {
            ($crate::Patches::Complex($a), $crate::Patches::Complex($b)) => $body,
            ($crate::Patches::Real($a), $crate::Patches::Real($b)) => $body,
            _ => Err(pyo3::exceptions::PyTypeError::new_err(concat!(
                $what,
                " must both be complex64 or both float32"
            ))),
        }
    };
}

mod extraction;
mod files;
#[cfg(feature = "cuda")]
mod gpu;
use ptychostitch_ops as ops;
mod plan;
mod region;
mod splat;
mod xla;

create_exception!(
    _native,
    GpuUnavailable,
    PyRuntimeError,
    "No GPU can be used here: no NVIDIA driver, no such device, no NVRTC, or a build without CUDA."
);

/// Maps a library error to the precise Python exception. An interrupt re-raises what Python's
/// signal handler raised (KeyboardInterrupt for Ctrl-C).
pub(crate) fn to_py(err: Error, signals: &Signals) -> PyErr {
    match err {
        Error::Interrupted => signals
            .raised
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| PyKeyboardInterrupt::new_err("interrupted")),
        Error::OutOfMemory { .. } | Error::MemoryHeld { .. } => {
            PyMemoryError::new_err(err.to_string())
        }
        Error::ThreadPool { .. } | Error::Gpu { .. } => PyRuntimeError::new_err(err.to_string()),
        // The exception's type already says GpuUnavailable: its message is the reason alone.
        Error::GpuUnavailable { reason } => GpuUnavailable::new_err(reason),
        _ => PyValueError::new_err(err.to_string()),
    }
}

/// Python's pending signals, checked from inside long runs (with the GIL taken back briefly at
/// most every 20 ms), so that Ctrl-C stops the reference path within a fraction of a second.
#[derive(Clone, Default)]
pub(crate) struct Signals {
    raised: Arc<Mutex<Option<PyErr>>>,
}

impl Signals {
    fn interrupt(&self) -> Interrupt {
        let raised = Arc::clone(&self.raised);
        let last = Mutex::new(Instant::now());
        Interrupt::new(move || {
            let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() < Duration::from_millis(20) {
                return false;
            }
            *last = Instant::now();
            match Python::attach(|py| py.check_signals()) {
                Ok(()) => false,
                Err(e) => {
                    *raised.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    true
                }
            }
        })
    }
}

/// The implementation a binding's `reference` flag asks for.
pub(crate) fn implementation(reference: bool) -> Implementation {
    if reference {
        Implementation::Reference
    } else {
        Implementation::Fast
    }
}

/// Patches of either supported element type, borrowed from NumPy.
#[derive(FromPyObject)]
pub(crate) enum Patches<'py> {
    Complex(PyReadonlyArrayDyn<'py, Complex32>),
    Real(PyReadonlyArrayDyn<'py, f32>),
}

/// A canvas `(S, S)` or `(S, S, 1)` as `(S, S)` ([`ops::canvas`]), a ValueError otherwise.
pub(crate) fn canvas<T>(a: ArrayViewD<'_, T>) -> PyResult<ndarray::ArrayView2<'_, T>> {
    ops::canvas(a, "cotangent/output").map_err(PyValueError::new_err)
}

/// `(n, …)` as `(n, A, B)` when the trailing axes are `(A, B)` or `(A, B, 1)`.
pub(crate) fn stack3<'a, T>(
    a: ArrayViewD<'a, T>,
    what: &str,
) -> PyResult<ndarray::ArrayView3<'a, T>> {
    let shape = a.shape().to_vec();
    let a = if shape.len() == 4 && shape[3] == 1 {
        a.index_axis_move(ndarray::Axis(3), 0)
    } else {
        a
    };
    a.into_dimensionality::<Ix3>().map_err(|_| {
        PyValueError::new_err(format!(
            "{what} has shape {shape:?}; expected (k, A, A, 1) or (k, A, A)"
        ))
    })
}

/// The cotangents of the patches (or images) and of the offsets, each `None` unless asked for.
pub(crate) type PyGradients<'py> = (Option<Bound<'py, PyAny>>, Option<Bound<'py, PyArray2<f64>>>);

pub(crate) fn gradients_to_py<'py, T: Sample + numpy::Element>(
    py: Python<'py>,
    g: Gradients<T>,
) -> PyGradients<'py> {
    (
        g.patches.map(|a: Array3<T>| a.into_pyarray(py).into_any()),
        g.offsets.map(|a| a.into_pyarray(py)),
    )
}

/// Whether a GPU can be used: `(True, device name, None)` or `(False, None, reason)`.
#[pyfunction]
fn gpu_available(py: Python<'_>) -> (bool, Option<String>, Option<String>) {
    #[cfg(feature = "cuda")]
    let found = py.detach(ptychostitch::gpu::cuda::available);
    #[cfg(not(feature = "cuda"))]
    let found: Result<String, Error> = {
        let _ = py;
        Err(Error::GpuUnavailable {
            reason: "this build has no CUDA support".into(),
        })
    };
    match found {
        Ok(name) => (true, Some(name), None),
        Err(Error::GpuUnavailable { reason }) => (false, None, Some(reason)),
        Err(e) => (false, None, Some(e.to_string())),
    }
}

/// Folders to search for NVRTC before the loader's path: the Python environment's
/// `nvidia/*/lib` (what pip installs with torch, JAX or CuPy), registered at import.
#[pyfunction]
fn add_library_dirs(dirs: Vec<std::path::PathBuf>) {
    ptychostitch::gpu::libraries::add_search_dirs(dirs);
}

/// Runs the command-line tool on `argv` (`argv[0]` the program) and returns its exit status:
/// what the wheel's `ptychostitch` console command does (`ptychostitch._cli`). It is the
/// process's whole work: it takes over SIGINT and SIGTERM, and bad arguments or a signal end
/// the process; not for use inside another program.
#[pyfunction]
fn cli(py: Python<'_>, argv: Vec<std::ffi::OsString>) -> i32 {
    py.detach(|| ptychostitch_cli::run(argv))
}

/// Runs that started more than one worker thread in this process (tests use it to show that a
/// thread count really ran in parallel).
#[pyfunction]
fn parallel_runs() -> u64 {
    ptychostitch::parallel_runs()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(plan::stitch, m)?)?;
    m.add_function(wrap_pyfunction!(cli, m)?)?;
    m.add_function(wrap_pyfunction!(gpu_available, m)?)?;
    m.add_class::<plan::Plan>()?;
    m.add_class::<extraction::Extraction>()?;
    m.add_class::<region::Region>()?;
    m.add_function(wrap_pyfunction!(region::check_region_options, m)?)?;
    m.add_function(wrap_pyfunction!(parallel_runs, m)?)?;
    m.add("NVRTC_OPTIONS", ptychostitch::gpu::NVRTC_OPTIONS.to_vec())?;
    #[cfg(feature = "cuda")]
    m.add_class::<gpu::DeviceArray>()?;
    #[cfg(feature = "cuda")]
    m.add_function(wrap_pyfunction!(gpu::dlpack_probe, m)?)?;
    #[cfg(feature = "cuda")]
    m.add_function(wrap_pyfunction!(gpu::device_empty, m)?)?;
    m.add_function(wrap_pyfunction!(add_library_dirs, m)?)?;
    m.add_function(wrap_pyfunction!(files::read_npy_crops, m)?)?;
    m.add_function(wrap_pyfunction!(splat::splat, m)?)?;
    m.add_function(wrap_pyfunction!(xla::xla_handlers, m)?)?;
    m.add("GpuUnavailable", m.py().get_type::<GpuUnavailable>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
