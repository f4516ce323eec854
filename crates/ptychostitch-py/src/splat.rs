//! `splat`: PtychoPINN's torch inference accumulators, in place on NumPy arrays.

#[allow(unused_imports)]
use crate::*;
use numpy::{PyReadonlyArray2, PyReadonlyArray3, PyReadwriteArray2};
use ptychostitch::splat::{Edge, Splat};

/// Adds `patches` `(N, P, P)` complex64 centred at `positions` `(N, 2)` float32 `[x, y]` into
/// `canvas` `(H, W)` complex64 and their weights into `weights` `(H, W)` float32, in place,
/// with PtychoPINN's arithmetic; `patch_weight` `(P, P)` float32 is the weighted accumulator's
/// `|P|²` (`None`: the barycentric one). `edge` is `"clip"` or `"ptychopinn"`. Returns
/// `(accepted, clipped)`. The GIL is released.
#[pyfunction]
#[pyo3(signature = (canvas, weights, patches, positions, patch_weight=None, edge="clip", threads=0, reference=false))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn splat(
    py: Python<'_>,
    mut canvas: PyReadwriteArray2<'_, Complex32>,
    mut weights: PyReadwriteArray2<'_, f32>,
    patches: PyReadonlyArray3<'_, Complex32>,
    positions: PyReadonlyArray2<'_, f32>,
    patch_weight: Option<PyReadonlyArray2<'_, f32>>,
    edge: &str,
    threads: usize,
    reference: bool,
) -> PyResult<(usize, usize)> {
    let edge = match edge {
        "clip" => Edge::Clip,
        "ptychopinn" => Edge::Drop,
        other => {
            return Err(PyValueError::new_err(format!(
                "edge={other:?}; expected \"clip\" (keep what lands on the canvas) or \"ptychopinn\" (drop the patch, PtychoPINN's bounds check)"
            )));
        }
    };
    let plan = Splat::new(edge)
        .with_threads(threads)
        .with_implementation(implementation(reference));
    let (c, w) = (canvas.as_array_mut(), weights.as_array_mut());
    let (p, x) = (patches.as_array(), positions.as_array());
    let pw = patch_weight.as_ref().map(|a| a.as_array());
    let placed = py
        .detach(|| plan.run(c, w, p, x, pw))
        .map_err(|e| to_py(e, &Signals::default()))?;
    Ok((placed.accepted, placed.clipped))
}
