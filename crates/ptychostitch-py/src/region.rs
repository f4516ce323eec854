//! `_native.Region`: the training-path operator (`ptychostitch::region`) for Python.
//!
//! Layouts, dtypes and PtychoPINN's signatures live in `python/ptychostitch/_region.py`; this is
//! the thin wrapper: views in, the GIL released, arrays out without a copy.

use crate::{Patches, Signals, to_py};
use ndarray::{ArrayViewD, Ix3, Ix4};
use numpy::{IntoPyArray, PyArray2, PyArray3, PyArray4, PyReadonlyArrayDyn};
use ptychostitch::Sample;
use ptychostitch::region::{Convention, Region as CoreRegion, RegionWrt, Threshold};
pub(crate) use ptychostitch_ops::options::{options_from, parse_convention};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

fn view4<'a, T>(a: ArrayViewD<'a, T>, what: &str) -> PyResult<ndarray::ArrayView4<'a, T>> {
    let shape = a.shape().to_vec();
    a.into_dimensionality::<Ix4>().map_err(|_| {
        PyValueError::new_err(format!("{what} has shape {shape:?}; expected four axes"))
    })
}

fn view3<'a, T>(a: ArrayViewD<'a, T>, what: &str) -> PyResult<ndarray::ArrayView3<'a, T>> {
    let shape = a.shape().to_vec();
    a.into_dimensionality::<Ix3>().map_err(|_| {
        PyValueError::new_err(format!("{what} has shape {shape:?}; expected (B, P, P)"))
    })
}

/// [`parse_convention`] for the bindings: a ValueError.
pub(crate) fn convention(name: &str) -> PyResult<Convention> {
    parse_convention(name).map_err(PyValueError::new_err)
}

fn threshold(kind: &str, value: f32) -> PyResult<Threshold> {
    ptychostitch_ops::options::threshold(kind, value).map_err(PyValueError::new_err)
}

/// The cotangents of the patches, the positions and the weights, each `None` unless asked for.
type PyRegionGradients<'py> = (
    Option<Bound<'py, PyAny>>,
    Option<Bound<'py, PyArray2<f64>>>,
    Option<Bound<'py, PyArray4<f32>>>,
);

/// A region-reassembly plan: `positions` `(B·C, 2)` `[x, y]`, `samples` B, the patch side N,
/// the region side P, and the options (see `ptychostitch.region_reassemble`).
#[pyclass(name = "Region", module = "ptychostitch._native", frozen)]
pub(crate) struct Region {
    inner: CoreRegion,
    signals: Signals,
}

/// Checks region-reassembly options up front (the public functions call it before any data
/// is touched, so that a graph-mode call fails when it is built, not when it runs).
#[pyfunction]
#[pyo3(signature = (convention, recentre, numerator, denominator, epsilon, support=None, threshold_value=0.0, scale=1.0))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_region_options(
    convention: &str,
    recentre: bool,
    numerator: &str,
    denominator: &str,
    epsilon: f32,
    support: Option<&str>,
    threshold_value: f32,
    scale: f32,
) -> PyResult<()> {
    options_from(
        convention,
        recentre,
        numerator,
        denominator,
        epsilon,
        support,
        threshold_value,
        scale,
    )
    .map(|_| ())
    .map_err(PyValueError::new_err)
}

#[pymethods]
impl Region {
    #[new]
    #[pyo3(signature = (positions, samples, patch_size, side, convention, recentre, numerator, denominator, epsilon, support=None, threshold_value=0.0, threads=0, scale=1.0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        positions: PyReadonlyArrayDyn<'_, f64>,
        samples: usize,
        patch_size: usize,
        side: usize,
        convention: &str,
        recentre: bool,
        numerator: &str,
        denominator: &str,
        epsilon: f32,
        support: Option<&str>,
        threshold_value: f32,
        threads: usize,
        scale: f32,
    ) -> PyResult<Self> {
        let options = options_from(
            convention,
            recentre,
            numerator,
            denominator,
            epsilon,
            support,
            threshold_value,
            scale,
        )
        .map_err(PyValueError::new_err)?;
        let signals = Signals::default();
        let inner = CoreRegion::new(positions.as_array(), samples, patch_size, side, options)
            .map_err(|e| to_py(e, &signals))?
            .with_threads(threads);
        Ok(Self { inner, signals })
    }

    /// `(B, P, P)` regions from `(B, C, N, N)` patches and `(1|B, 1|C, N, N)` float32 weights.
    #[pyo3(signature = (patches, weights, reference=false))]
    fn reassemble<'py>(
        &self,
        py: Python<'py>,
        patches: Patches<'py>,
        weights: PyReadonlyArrayDyn<'py, f32>,
        reference: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        with_sample!(patches, |a| self
            .reassemble_typed(py, a, weights, reference))
    }

    /// The support mask on the GPU (the plan's own support option) for the inputs of
    /// `reassemble_cuda`, into `out` (C-contiguous bool, `B·P·P` elements). Bit-identical to
    /// `support`.
    #[pyo3(signature = (patches, weights, out, stream=None, positions=None, channel_layout=false))]
    #[allow(clippy::too_many_arguments)]
    fn support_cuda(
        &self,
        py: Python<'_>,
        patches: &Bound<'_, PyAny>,
        weights: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
        stream: Option<usize>,
        positions: Option<&Bound<'_, PyAny>>,
        channel_layout: bool,
    ) -> PyResult<()> {
        #[cfg(feature = "cuda")]
        {
            crate::gpu::region_support(
                py,
                &self.inner,
                patches,
                weights,
                out,
                stream,
                (positions, channel_layout),
            )
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (py, patches, weights, out, stream, positions, channel_layout);
            Err(crate::GpuUnavailable::new_err(
                "this build has no CUDA support",
            ))
        }
    }

    /// The regions on the GPU for patches `(B, C, N, N)` and float32 weights
    /// `(1|B, 1|C, N, N)` in GPU memory (DLPack, C-contiguous) into `out` (C-contiguous, the
    /// patches' dtype, `B·P·P` elements). `stream` as in `Plan.run_cuda`. Bit-identical to
    /// `reassemble`.
    ///
    /// `positions`: the positions in GPU memory (C-contiguous float32 or float64; PtychoPINN's
    /// `(B, 1, 2, C)` when `channel_layout`, else `[x, y]` rows), from which the device plans the
    /// translations -- none read on the host; this plan's own then serve only as its shape.
    #[pyo3(signature = (patches, weights, out, stream=None, positions=None, channel_layout=false))]
    #[allow(clippy::too_many_arguments)]
    fn reassemble_cuda(
        &self,
        py: Python<'_>,
        patches: &Bound<'_, PyAny>,
        weights: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
        stream: Option<usize>,
        positions: Option<&Bound<'_, PyAny>>,
        channel_layout: bool,
    ) -> PyResult<()> {
        #[cfg(feature = "cuda")]
        {
            crate::gpu::region(
                py,
                &self.inner,
                patches,
                weights,
                out,
                stream,
                (positions, channel_layout),
            )
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (py, patches, weights, out, stream, positions, channel_layout);
            Err(crate::GpuUnavailable::new_err(
                "this build has no CUDA support",
            ))
        }
    }

    /// The vector–Jacobian product on the GPU for arrays in GPU memory (DLPack, C-contiguous):
    /// patches, float32 weights and the regions' cotangent (`B·P·P`, the patches' dtype) in;
    /// `patch_grad` (`B·C·N·N`, the patches' dtype) and `positions_grad` (float64, `B·C·2`:
    /// rows `[x, y]`, or PtychoPINN's `(B, 1, 2, C)` when `channel_layout`) out, each omitted
    /// when not wanted. The weights' cotangent has no device kernel. `positions` as in
    /// `reassemble_cuda` (in the layout `channel_layout` says). Bit-identical to `vjp`.
    #[pyo3(signature = (patches, weights, cotangent, patch_grad=None, positions_grad=None, channel_layout=false, stream=None, positions=None))]
    #[allow(clippy::too_many_arguments)]
    fn vjp_cuda(
        &self,
        py: Python<'_>,
        patches: &Bound<'_, PyAny>,
        weights: &Bound<'_, PyAny>,
        cotangent: &Bound<'_, PyAny>,
        patch_grad: Option<&Bound<'_, PyAny>>,
        positions_grad: Option<&Bound<'_, PyAny>>,
        channel_layout: bool,
        stream: Option<usize>,
        positions: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        #[cfg(feature = "cuda")]
        {
            crate::gpu::region_vjp(
                py,
                &self.inner,
                patches,
                weights,
                cotangent,
                (patch_grad, positions_grad),
                channel_layout,
                stream,
                positions,
            )
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (
                py,
                patches,
                weights,
                cotangent,
                patch_grad,
                positions_grad,
                channel_layout,
                stream,
                positions,
            );
            Err(crate::GpuUnavailable::new_err(
                "this build has no CUDA support",
            ))
        }
    }

    /// The boolean support mask `Σ w > threshold`, `(B, P, P)`.
    fn support<'py>(
        &self,
        py: Python<'py>,
        weights: PyReadonlyArrayDyn<'py, f32>,
        kind: &str,
        value: f32,
    ) -> PyResult<Bound<'py, PyArray3<bool>>> {
        let t = threshold(kind, value)?;
        let w = view4(weights.as_array(), "weights")?;
        let mask = py
            .detach(|| self.inner.support(w, t))
            .map_err(|e| to_py(e, &self.signals))?;
        Ok(mask.into_pyarray(py))
    }

    /// The VJP: the cotangents of the patches `(B, C, N, N)`, the positions `(B·C, 2)` and the
    /// weights (their shape), each computed only when asked for. `output`: the forward's
    /// regions `(B, P, P)` (the patches' dtype), which spare the fast path recomputing them.
    #[pyo3(signature = (patches, weights, cotangent, wrt_patches=true, wrt_positions=true, wrt_weights=false, reference=false, output=None))]
    #[allow(clippy::too_many_arguments)]
    fn vjp<'py>(
        &self,
        py: Python<'py>,
        patches: Patches<'py>,
        weights: PyReadonlyArrayDyn<'py, f32>,
        cotangent: Patches<'py>,
        wrt_patches: bool,
        wrt_positions: bool,
        wrt_weights: bool,
        reference: bool,
        output: Option<Patches<'py>>,
    ) -> PyResult<PyRegionGradients<'py>> {
        let wrt = RegionWrt {
            patches: wrt_patches,
            positions: wrt_positions,
            weights: wrt_weights,
        };
        use Patches::{Complex, Real};
        match (patches, cotangent, output) {
            (Complex(p), Complex(c), None) => {
                self.vjp_typed(py, p, weights, None, c, wrt, reference)
            }
            (Complex(p), Complex(c), Some(Complex(o))) => {
                self.vjp_typed(py, p, weights, Some(o), c, wrt, reference)
            }
            (Real(p), Real(c), None) => self.vjp_typed(py, p, weights, None, c, wrt, reference),
            (Real(p), Real(c), Some(Real(o))) => {
                self.vjp_typed(py, p, weights, Some(o), c, wrt, reference)
            }
            _ => Err(pyo3::exceptions::PyTypeError::new_err(
                "patches, cotangent and output must all be complex64 or all float32",
            )),
        }
    }

    /// `(B, C, P)`: samples, patches per sample, region side.
    /// The support option, `(kind, value)`, or None.
    #[getter]
    fn support_option(&self) -> Option<(&'static str, f32)> {
        self.inner.options().support.map(|t| match t {
            Threshold::Above(v) => ("above", v),
            Threshold::AboveMaxFraction(v) => ("above_max_fraction", v),
        })
    }

    #[getter]
    fn shape(&self) -> (usize, usize, usize) {
        (
            self.inner.samples(),
            self.inner.channels(),
            self.inner.side(),
        )
    }
}

impl Region {
    /// The plan, or its reference (the oracle) when `reference`.
    fn plan(&self, reference: bool) -> std::borrow::Cow<'_, CoreRegion> {
        if reference {
            std::borrow::Cow::Owned(
                self.inner
                    .clone()
                    .with_implementation(crate::implementation(true)),
            )
        } else {
            std::borrow::Cow::Borrowed(&self.inner)
        }
    }

    fn reassemble_typed<'py, T: Sample + numpy::Element>(
        &self,
        py: Python<'py>,
        patches: PyReadonlyArrayDyn<'py, T>,
        weights: PyReadonlyArrayDyn<'py, f32>,
        reference: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let p = view4(patches.as_array(), "patches")?;
        let w = view4(weights.as_array(), "weights")?;
        let out = py
            .detach(|| self.plan(reference).reassemble(p, w))
            .map_err(|e| to_py(e, &self.signals))?;
        Ok(out.into_pyarray(py).into_any())
    }

    #[allow(clippy::too_many_arguments)]
    fn vjp_typed<'py, T: Sample + numpy::Element>(
        &self,
        py: Python<'py>,
        patches: PyReadonlyArrayDyn<'py, T>,
        weights: PyReadonlyArrayDyn<'py, f32>,
        output: Option<PyReadonlyArrayDyn<'py, T>>,
        cotangent: PyReadonlyArrayDyn<'py, T>,
        wrt: RegionWrt,
        reference: bool,
    ) -> PyResult<PyRegionGradients<'py>> {
        let p = view4(patches.as_array(), "patches")?;
        let w = view4(weights.as_array(), "weights")?;
        let c = view3(cotangent.as_array(), "cotangent")?;
        let o = output
            .as_ref()
            .map(|o| view3(o.as_array(), "output"))
            .transpose()?;
        let g = py
            .detach(|| self.plan(reference).vjp(p, w, o, c, wrt))
            .map_err(|e| to_py(e, &self.signals))?;
        Ok((
            g.patches.map(|a| a.into_pyarray(py).into_any()),
            g.positions.map(|a| a.into_pyarray(py)),
            g.weights.map(|a| a.into_pyarray(py)),
        ))
    }
}
