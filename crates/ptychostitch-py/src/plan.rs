//! `Plan` (a scan's geometry, reused) and `stitch` (the one-shot call): PtychoPINN's
//! `shift_and_sum` / `reassemble_position`, their windows and their VJP.

#[allow(unused_imports)]
use crate::*;

fn run<'py>(
    py: Python<'py>,
    plan: &CorePlan,
    signals: &Signals,
    patches: Patches<'py>,
    op: Operation,
    reference: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let plan = selected(plan, reference);
    with_sample!(patches, |a| {
        let view = a.as_array();
        let out = py
            .detach(|| plan.run(op, view))
            .map_err(|e| to_py(e, signals))?;
        Ok(out.into_pyarray(py).into_any())
    })
}

/// `plan`, or a copy of it running the reference (the oracle) when `reference`.
fn selected(plan: &CorePlan, reference: bool) -> std::borrow::Cow<'_, CorePlan> {
    if reference {
        std::borrow::Cow::Owned(plan.clone().with_implementation(implementation(true)))
    } else {
        std::borrow::Cow::Borrowed(plan)
    }
}

/// The patch side `N`, after checking the stack is `(n, N, N)` or `(n, N, N, 1)`.
fn patch_size(patches: &Patches<'_>) -> PyResult<usize> {
    let dims = with_sample!(patches, |a| patch_stack(a.as_array()).map(|s| s.dim()));
    dims.map(|(_, n, _)| n)
        .map_err(|e| to_py(e, &Signals::default()))
}

fn plan_from(
    offsets: &PyReadonlyArrayDyn<'_, f64>,
    patch_size: usize,
    crop: i64,
    threads: usize,
    signals: &Signals,
) -> PyResult<CorePlan> {
    Ok(CorePlan::new(offsets.as_array(), patch_size, crop)
        .map_err(|e| to_py(e, signals))?
        .with_threads(threads)
        .with_interrupt(signals.interrupt()))
}

fn warning_texts(plan: &CorePlan) -> Vec<String> {
    plan.warnings().iter().map(ToString::to_string).collect()
}

/// One-shot stitching: builds a plan and runs it. `op` is "shift_and_sum" or
/// "reassemble_position"; `reference` selects the oracle. Returns the (S, S) array and the
/// plan's warnings (text).
#[pyfunction]
#[pyo3(signature = (patches, offsets, crop, op, reference=false, threads=0))]
pub(crate) fn stitch<'py>(
    py: Python<'py>,
    patches: Patches<'py>,
    offsets: PyReadonlyArrayDyn<'py, f64>,
    crop: i64,
    op: &str,
    reference: bool,
    threads: usize,
) -> PyResult<(Bound<'py, PyAny>, Vec<String>)> {
    let op = parse_op(op)?;
    let signals = Signals::default();
    let plan = plan_from(&offsets, patch_size(&patches)?, crop, threads, &signals)?;
    let out = run(py, &plan, &signals, patches, op, reference)?;
    Ok((out, warning_texts(&plan)))
}

fn parse_op(op: &str) -> PyResult<Operation> {
    match op {
        "shift_and_sum" => Ok(Operation::ShiftAndSum),
        "reassemble_position" => Ok(Operation::ReassemblePosition),
        other => Err(PyValueError::new_err(format!(
            "op must be 'shift_and_sum' or 'reassemble_position', not {other:?}"
        ))),
    }
}

/// A reassembly plan: positions fixed, patches changing (see `ptychostitch.Plan`).
#[pyclass(name = "Plan", module = "ptychostitch._native", frozen)]
pub(crate) struct Plan {
    inner: CorePlan,
    signals: Signals,
    #[cfg(feature = "cuda")]
    gpu_plans: gpu::GpuPlans,
}

#[pymethods]
impl Plan {
    #[new]
    #[pyo3(signature = (offsets, patch_size, crop, threads=0))]
    fn new(
        offsets: PyReadonlyArrayDyn<'_, f64>,
        patch_size: usize,
        crop: i64,
        threads: usize,
    ) -> PyResult<Self> {
        let signals = Signals::default();
        Ok(Self {
            inner: plan_from(&offsets, patch_size, crop, threads, &signals)?,
            signals,
            #[cfg(feature = "cuda")]
            gpu_plans: Default::default(),
        })
    }

    /// Warnings about the scan (text): an outlier that inflates the canvas, sub-pixel spans.
    #[getter]
    fn warnings(&self) -> Vec<String> {
        warning_texts(&self.inner)
    }

    /// Runs the plan: `op` as in `stitch`.
    #[pyo3(signature = (patches, op, reference=false))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        patches: Patches<'py>,
        op: &str,
        reference: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        run(
            py,
            &self.inner,
            &self.signals,
            patches,
            parse_op(op)?,
            reference,
        )
    }

    /// Runs the plan on the GPU for patches in GPU memory (any object with `__dlpack__`, or a
    /// DLPack capsule): `stream` is the caller's current CUDA stream (`None`: the legacy
    /// default stream, and the call waits); the canvas goes into `out` (a writable C-contiguous
    /// `(S, S, 1)` or `(S, S)` tensor of the patches' dtype on the same GPU; returns `None`) or
    /// into a new `DeviceArray` (the call waits). Raises `GpuUnavailable` without a GPU.
    #[pyo3(signature = (patches, op, stream=None, out=None))]
    fn run_cuda(
        &self,
        py: Python<'_>,
        patches: &Bound<'_, PyAny>,
        op: &str,
        stream: Option<usize>,
        out: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let op = parse_op(op)?;
        #[cfg(feature = "cuda")]
        {
            let made = gpu::run(py, &self.inner, &self.gpu_plans, patches, op, stream, out)?;
            made.map(|a| Ok(Bound::new(py, a)?.into_any().unbind()))
                .transpose()
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (py, patches, op, stream, out);
            Err(GpuUnavailable::new_err("this build has no CUDA support"))
        }
    }

    /// The vector–Jacobian product of `op` on the GPU for arrays in GPU memory (DLPack), into
    /// the caller's outputs: `patch_grad` (C-contiguous, the patches' dtype, `n·N·N` elements)
    /// and `offsets_grad` (C-contiguous float64, `n·2`), each omitted when not wanted; `output`
    /// is `reassemble_position`'s forward result (recomputed on the GPU when omitted). `stream`
    /// as in `run_cuda`. Bit-identical to `vjp`.
    #[pyo3(signature = (patches, cotangent, op, output=None, patch_grad=None, offsets_grad=None, stream=None))]
    #[allow(clippy::too_many_arguments)]
    fn vjp_cuda(
        &self,
        py: Python<'_>,
        patches: &Bound<'_, PyAny>,
        cotangent: &Bound<'_, PyAny>,
        op: &str,
        output: Option<&Bound<'_, PyAny>>,
        patch_grad: Option<&Bound<'_, PyAny>>,
        offsets_grad: Option<&Bound<'_, PyAny>>,
        stream: Option<usize>,
    ) -> PyResult<()> {
        let op = parse_op(op)?;
        #[cfg(feature = "cuda")]
        {
            gpu::vjp(
                py,
                &self.inner,
                &self.gpu_plans,
                patches,
                cotangent,
                op,
                output,
                (patch_grad, offsets_grad),
                stream,
            )
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (
                py,
                patches,
                cotangent,
                op,
                output,
                patch_grad,
                offsets_grad,
                stream,
            );
            Err(GpuUnavailable::new_err("this build has no CUDA support"))
        }
    }

    /// The window `rows × cols` (half-open `(start, end)` pairs; rows are y, columns x) of
    /// `op`'s canvas from a stack holding the patches `indices` (strictly increasing), bit for
    /// bit the same rectangle of the full canvas. Runs with the GIL released.
    #[pyo3(signature = (patches, indices, op, rows, cols))]
    fn window<'py>(
        &self,
        py: Python<'py>,
        patches: Patches<'py>,
        indices: PyReadonlyArrayDyn<'py, i64>,
        op: &str,
        rows: (usize, usize),
        cols: (usize, usize),
    ) -> PyResult<Bound<'py, PyAny>> {
        let operation = parse_op(op)?;
        let indices: Vec<usize> = indices
            .as_array()
            .iter()
            .map(|&k| usize::try_from(k))
            .collect::<Result<_, _>>()
            .map_err(|_| PyValueError::new_err("window patch indices: must not be negative"))?;
        let (rows, cols) = (rows.0..rows.1, cols.0..cols.1);
        let err = |e| to_py(e, &self.signals);
        with_sample!(patches, |a| {
            let view = a.as_array();
            Ok(py
                .detach(|| self.inner.window(operation, rows, cols, view, &indices))
                .map_err(err)?
                .into_pyarray(py)
                .into_any())
        })
    }

    /// The window `rows × cols` of `op`'s canvas from runs of consecutive patches as they lie:
    /// `chunks[i]` holds patches `starts[i]..starts[i] + len` (scan order, no overlap; all
    /// complex64 or all float32), together every patch that touches the window. Bit for bit
    /// the same rectangle of the full canvas; no patch is copied. Runs with the GIL released.
    #[pyo3(signature = (chunks, starts, op, rows, cols))]
    fn window_runs<'py>(
        &self,
        py: Python<'py>,
        chunks: Vec<Patches<'py>>,
        starts: Vec<usize>,
        op: &str,
        rows: (usize, usize),
        cols: (usize, usize),
    ) -> PyResult<Bound<'py, PyAny>> {
        let operation = parse_op(op)?;
        if chunks.len() != starts.len() {
            return Err(PyValueError::new_err(format!(
                "window_runs: {} chunks but {} starts",
                chunks.len(),
                starts.len()
            )));
        }
        let (rows, cols) = (rows.0..rows.1, cols.0..cols.1);
        let err = |e| to_py(e, &self.signals);
        let mut complex = Vec::new();
        let mut real = Vec::new();
        for chunk in &chunks {
            match chunk {
                Patches::Complex(a) => complex.push(a.as_array()),
                Patches::Real(a) => real.push(a.as_array()),
            }
        }
        if !complex.is_empty() && !real.is_empty() {
            return Err(PyTypeError::new_err(
                "window_runs: chunks must all be complex64 or all float32",
            ));
        }
        Ok(if real.is_empty() {
            let runs: Vec<_> = starts.into_iter().zip(complex).collect();
            py.detach(|| self.inner.window_runs(operation, rows, cols, &runs))
                .map_err(err)?
                .into_pyarray(py)
                .into_any()
        } else {
            let runs: Vec<_> = starts.into_iter().zip(real).collect();
            py.detach(|| self.inner.window_runs(operation, rows, cols, &runs))
                .map_err(err)?
                .into_pyarray(py)
                .into_any()
        })
    }

    /// The vector–Jacobian product of `op`: from the (S, S) cotangent of the canvas, the
    /// patches' cotangent `(n, N, N)` and the offsets' `(n, 2)` `[x, y]` (each `None` unless
    /// asked for). `output` is the forward's result (`reassemble_position` only; recomputed
    /// when `None`). Runs with the GIL released.
    #[pyo3(signature = (patches, cotangent, op, output=None, wrt_patches=true, wrt_offsets=true, reference=false))]
    #[allow(clippy::too_many_arguments)]
    fn vjp<'py>(
        &self,
        py: Python<'py>,
        patches: Patches<'py>,
        cotangent: Patches<'py>,
        op: &str,
        output: Option<Patches<'py>>,
        wrt_patches: bool,
        wrt_offsets: bool,
        reference: bool,
    ) -> PyResult<PyGradients<'py>> {
        let op = parse_op(op)?;
        let wrt = Wrt {
            patches: wrt_patches,
            offsets: wrt_offsets,
        };
        let (plan, signals) = (&self.inner, &self.signals);
        use Patches::{Complex, Real};
        match (patches, cotangent, output) {
            (Complex(p), Complex(c), None) => {
                plan_vjp(py, plan, signals, op, p, c, None, wrt, reference)
            }
            (Complex(p), Complex(c), Some(Complex(o))) => {
                plan_vjp(py, plan, signals, op, p, c, Some(o), wrt, reference)
            }
            (Real(p), Real(c), None) => plan_vjp(py, plan, signals, op, p, c, None, wrt, reference),
            (Real(p), Real(c), Some(Real(o))) => {
                plan_vjp(py, plan, signals, op, p, c, Some(o), wrt, reference)
            }
            _ => Err(PyTypeError::new_err(
                "patches, cotangent and output must all be complex64 or all float32",
            )),
        }
    }

    /// Every patch's footprint on the canvas as an (n, 4) int64 array of half-open spans
    /// `[row_start, row_end, col_start, col_end]`: the pixels it can change.
    fn footprints<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<i64>> {
        let fps = self.inner.geometry().footprints();
        let mut out = Array2::<i64>::zeros((fps.len(), 4));
        for (row, f) in out.rows_mut().into_iter().zip(fps) {
            let mut row = row;
            row[0] = f.rows.start as i64;
            row[1] = f.rows.end as i64;
            row[2] = f.cols.start as i64;
            row[3] = f.cols.end as i64;
        }
        out.into_pyarray(py)
    }

    /// The (S, S) float32 weight canvas (computed once, then cached).
    fn weights<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let w = py
            .detach(|| self.inner.weights().cloned())
            .map_err(|e| to_py(e, &self.signals))?;
        Ok(w.into_pyarray(py))
    }

    #[getter]
    fn canvas_side(&self) -> usize {
        self.inner.canvas_shape().0
    }

    #[getter]
    fn pad(&self) -> usize {
        self.inner.pad()
    }

    #[getter]
    fn center(&self) -> (f32, f32) {
        let [x, y] = self.inner.center();
        (x, y)
    }

    #[getter]
    fn patch_size(&self) -> usize {
        self.inner.patch_size()
    }

    #[getter]
    fn n(&self) -> usize {
        self.inner.len()
    }

    #[getter]
    fn kernel(&self) -> &'static str {
        self.inner.kernel()
    }
}

/// [`Plan`]'s VJP on arrays of one element type, with the GIL released.
#[allow(clippy::too_many_arguments)]
fn plan_vjp<'py, T: Sample + numpy::Element>(
    py: Python<'py>,
    plan: &CorePlan,
    signals: &Signals,
    op: Operation,
    patches: PyReadonlyArrayDyn<'py, T>,
    cotangent: PyReadonlyArrayDyn<'py, T>,
    output: Option<PyReadonlyArrayDyn<'py, T>>,
    wrt: Wrt,
    reference: bool,
) -> PyResult<PyGradients<'py>> {
    let (p, c) = (patches.as_array(), canvas(cotangent.as_array())?);
    let o = output.as_ref().map(|o| canvas(o.as_array())).transpose()?;
    let plan = selected(plan, reference);
    let g = py
        .detach(|| plan.vjp(op, p, o, c, wrt))
        .map_err(|e| to_py(e, signals))?;
    Ok(gradients_to_py(py, g))
}
