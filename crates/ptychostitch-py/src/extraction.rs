//! `Extraction`: PtychoPINN's `extract_patches_position` (or torch's
//! `extract_channels_from_region`) as a plan, and its VJP.

#[allow(unused_imports)]
use crate::*;
use ptychostitch::kernel::Convention;

/// [`Extraction`]'s forward on images of one element type, with the GIL released.
fn extract_typed<'py, T: Sample + numpy::Element>(
    py: Python<'py>,
    ext: &Extraction,
    images: PyReadonlyArrayDyn<'py, T>,
    reference: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let (plan, v) = (ext.selected(reference), images.as_array());
    let out = py
        .detach(|| plan.run(v))
        .map_err(|e| to_py(e, &ext.signals))?;
    Ok(out.into_pyarray(py).into_any())
}

/// [`Extraction`]'s VJP on arrays of one element type, with the GIL released.
fn extract_vjp_typed<'py, T: Sample + numpy::Element>(
    py: Python<'py>,
    ext: &Extraction,
    images: PyReadonlyArrayDyn<'py, T>,
    cotangent: PyReadonlyArrayDyn<'py, T>,
    wrt: Wrt,
    reference: bool,
) -> PyResult<PyGradients<'py>> {
    let (plan, i, c) = (
        ext.selected(reference),
        images.as_array(),
        stack3(cotangent.as_array(), "cotangent")?,
    );
    let g = py
        .detach(|| plan.vjp(i, c, wrt))
        .map_err(|e| to_py(e, &ext.signals))?;
    Ok(gradients_to_py(py, g))
}

/// PtychoPINN's `extract_patches_position` as a plan: `offsets` `(B·C, 2)` `[x, y]` in its
/// flat order, `per_image` = C, the image side S and the patch side N.
#[pyclass(name = "Extraction", module = "ptychostitch._native", frozen)]
pub(crate) struct Extraction {
    inner: CoreExtraction,
    signals: Signals,
}

impl Extraction {
    /// The plan, or a copy of it running the reference (the oracle) when `reference`.
    fn selected(&self, reference: bool) -> std::borrow::Cow<'_, CoreExtraction> {
        if reference {
            std::borrow::Cow::Owned(self.inner.clone().with_implementation(implementation(true)))
        } else {
            std::borrow::Cow::Borrowed(&self.inner)
        }
    }
}

#[pymethods]
impl Extraction {
    /// `same_frame`: each image translated in its own frame (`Extraction::translation`:
    /// `per_image` 1, `patch_size` = `image_side`, TensorFlow's arithmetic), what PtychoPINN's
    /// `center_channels` computes.
    #[new]
    #[pyo3(signature = (offsets, per_image, image_side, patch_size, threads=0, convention="tf", same_frame=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        offsets: PyReadonlyArrayDyn<'_, f64>,
        per_image: usize,
        image_side: usize,
        patch_size: usize,
        threads: usize,
        convention: &str,
        same_frame: bool,
    ) -> PyResult<Self> {
        let signals = Signals::default();
        let convention = region::convention(convention)?;
        if same_frame
            && (per_image != 1 || patch_size != image_side || convention != Convention::TensorFlow)
        {
            return Err(PyValueError::new_err(
                "same_frame=True translates each image in its own frame: per_image=1, patch_size=image_side, convention='tf'",
            ));
        }
        let made = if same_frame {
            CoreExtraction::translation(offsets.as_array(), image_side)
        } else {
            CoreExtraction::new_in(
                convention,
                offsets.as_array(),
                per_image,
                image_side,
                patch_size,
            )
        };
        let inner = made.map_err(|e| to_py(e, &signals))?.with_threads(threads);
        Ok(Self { inner, signals })
    }

    /// `(B·C, N, N)` patches from `(B, S, S[, 1])` images (fast path, or the reference).
    #[pyo3(signature = (images, reference=false))]
    fn extract<'py>(
        &self,
        py: Python<'py>,
        images: Patches<'py>,
        reference: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        with_sample!(images, |a| extract_typed(py, self, a, reference))
    }

    /// The vector–Jacobian product: the images' cotangent `(B, S, S)` and the offsets'
    /// `(B·C, 2)` from the patches' cotangent `(B·C, N, N[, 1])`.
    #[pyo3(signature = (images, cotangent, wrt_images=true, wrt_offsets=true, reference=false))]
    fn vjp<'py>(
        &self,
        py: Python<'py>,
        images: Patches<'py>,
        cotangent: Patches<'py>,
        wrt_images: bool,
        wrt_offsets: bool,
        reference: bool,
    ) -> PyResult<PyGradients<'py>> {
        let wrt = Wrt {
            patches: wrt_images,
            offsets: wrt_offsets,
        };
        with_sample_pair!(
            images,
            cotangent,
            |i, c| extract_vjp_typed(py, self, i, c, wrt, reference),
            "images and cotangent"
        )
    }

    /// The patches on the GPU for images in GPU memory (DLPack; `(B, S, S[, 1])`, any
    /// strides) into `out` (C-contiguous, the images' dtype, `B·C·N·N` elements). `stream` as
    /// in `Plan.run_cuda`. `positions`: the offsets in GPU memory (C-contiguous float32 or
    /// float64; PtychoPINN's `(B, 1, 2, C)` when `channel_layout`, else `[x, y]` rows), from
    /// which the device plans the translations -- none read on the host; this plan's own then
    /// serve only as its shape. Bit-identical to `extract`.
    #[pyo3(signature = (images, out, stream=None, positions=None, channel_layout=false))]
    fn extract_cuda(
        &self,
        py: Python<'_>,
        images: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
        stream: Option<usize>,
        positions: Option<&Bound<'_, PyAny>>,
        channel_layout: bool,
    ) -> PyResult<()> {
        #[cfg(feature = "cuda")]
        {
            crate::gpu::extract(
                py,
                &self.inner,
                images,
                out,
                stream,
                (positions, channel_layout),
            )
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (py, images, out, stream, positions, channel_layout);
            Err(crate::GpuUnavailable::new_err(
                "this build has no CUDA support",
            ))
        }
    }

    /// The vector–Jacobian product on the GPU for arrays in GPU memory, into the caller's
    /// outputs: `image_grad` (`B·S·S` elements of the images' dtype) and `offsets_grad`
    /// (float64, `B·C·2`: rows `[x, y]`, or PtychoPINN's `(B, 1, 2, C)` when
    /// `channel_layout`), each omitted when not wanted. `positions` as in `extract_cuda` (in the
    /// layout `channel_layout` says). Bit-identical to `vjp`.
    #[pyo3(signature = (images, cotangent, image_grad=None, offsets_grad=None, channel_layout=false, stream=None, positions=None))]
    #[allow(clippy::too_many_arguments)]
    fn vjp_cuda(
        &self,
        py: Python<'_>,
        images: &Bound<'_, PyAny>,
        cotangent: &Bound<'_, PyAny>,
        image_grad: Option<&Bound<'_, PyAny>>,
        offsets_grad: Option<&Bound<'_, PyAny>>,
        channel_layout: bool,
        stream: Option<usize>,
        positions: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        #[cfg(feature = "cuda")]
        {
            crate::gpu::extract_vjp(
                py,
                &self.inner,
                images,
                cotangent,
                (image_grad, offsets_grad),
                channel_layout,
                stream,
                positions,
            )
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (
                py,
                images,
                cotangent,
                image_grad,
                offsets_grad,
                channel_layout,
                stream,
                positions,
            );
            Err(crate::GpuUnavailable::new_err(
                "this build has no CUDA support",
            ))
        }
    }

    /// Output shape `(B·C, N, N)`.
    #[getter]
    fn output_shape(&self) -> (usize, usize, usize) {
        self.inner.output_shape()
    }
}
