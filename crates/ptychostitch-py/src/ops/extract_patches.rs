//! `extract_patches`: PtychoPINN's `extract_patches_position` (`_kernels.Extract`): images
//! `(B, S, S, 1)`, offsets `(B, 1, 2, C)` `[x, y]` -> patches `(B·C, N, N, 1)`, row `b·C + c`.

use super::{
    Operand, Operator, Outcome, Output, Spec, Typed, arg, by_sample, copy, input, output, put_f64,
    ret, text,
};
use ndarray::{Array2, ArrayD, Axis, Ix3, IxDyn};
use ptychostitch::{Extraction, Wrt};

pub(crate) struct ExtractPatches;

/// `(B, 1, 2, C)` -> `(B·C, 2)` in the flat order (`Extract.flat_offsets`).
fn flat(offsets: &ArrayD<f64>) -> Result<Array2<f64>, String> {
    let shape = offsets.shape();
    let (b, c) = (shape[0], shape[shape.len() - 1]);
    let grid = offsets
        .view()
        .into_shape_with_order((b, 2, c))
        .map_err(|_| format!("offsets have shape {shape:?}; expected (B, 1, 2, C)"))?;
    let pairs = grid.permuted_axes([0, 2, 1]);
    Array2::from_shape_vec((b * c, 2), pairs.iter().copied().collect()).map_err(|e| e.to_string())
}

/// The extraction `Extract.plan` makes for images `(B, S, S[, 1])`.
fn plan(spec: &Spec, image_shape: &[usize], offsets: &ArrayD<f64>) -> Result<Extraction, String> {
    let side = *image_shape
        .get(1)
        .ok_or("the images must be (B, S, S, 1)")?;
    let threads = spec.count("threads")?;
    let (per_image, patch) = (spec.count("per_image")?, spec.count("patch_size")?);
    Ok(
        Extraction::new(flat(offsets)?.view(), per_image, side, patch)
            .map_err(text)?
            .with_threads(threads),
    )
}

fn forward<T: Typed>(spec: &Spec, args: &[Operand<'_>], rets: &mut [Output<'_>]) -> Outcome {
    let imgs = input::<T>(args, 0, "images")?;
    let offsets = super::offsets(arg(args, 1, "offsets")?, "offsets")?;
    let plan = plan(spec, imgs.shape(), &offsets)?;
    let patches = plan.run(imgs.view()).map_err(text)?;
    copy(output::<T>(rets, 0, "patches")?, patches.iter().copied())
}

fn backward<T: Typed>(spec: &Spec, args: &[Operand<'_>], rets: &mut [Output<'_>]) -> Outcome {
    let imgs = input::<T>(args, 0, "images")?;
    let offsets = super::offsets(arg(args, 1, "offsets")?, "offsets")?;
    let plan = plan(spec, imgs.shape(), &offsets)?;
    let cot = input::<T>(args, 3, "cotangent")?;
    let n = spec.count("patch_size")?;
    let cot = cot
        .view()
        .into_shape_with_order(IxDyn(&[cot.len() / (n * n).max(1), n, n]))
        .map_err(|_| {
            format!(
                "the cotangent has shape {:?}; expected (B·C, N, N, 1)",
                cot.shape()
            )
        })?
        .into_dimensionality::<Ix3>()
        .map_err(|e| e.to_string())?;
    let g = plan.vjp(imgs.view(), cot, Wrt::ALL).map_err(text)?;
    let dimgs = g.patches.ok_or("the images' cotangent was not computed")?;
    copy(
        output::<T>(rets, 0, "images' cotangent")?,
        dimgs.iter().copied(),
    )?;
    // (B·C, 2) -> (B, C, 2) -> (B, 2, C): PtychoPINN's (B, 1, 2, C) in row-major order.
    let dflat = g.offsets.ok_or("the offsets' cotangent was not computed")?;
    let (b, c) = (offsets.shape()[0], offsets.shape()[offsets.ndim() - 1]);
    let grid = dflat
        .into_shape_with_order((b, c, 2))
        .map_err(|e| e.to_string())?;
    let grid = grid.view().permuted_axes([0, 2, 1]).insert_axis(Axis(1));
    put_f64(ret(rets, 1, "offsets' cotangent")?, grid.into_dyn())
}

impl Operator for ExtractPatches {
    fn name(&self) -> &'static str {
        "extract_patches"
    }

    fn forward(&self, spec: &Spec, args: &[Operand<'_>], rets: &mut [Output<'_>]) -> Outcome {
        by_sample!(arg(args, 0, "images")?, forward(spec, args, rets))
    }

    fn backward(&self, spec: &Spec, args: &[Operand<'_>], rets: &mut [Output<'_>]) -> Outcome {
        by_sample!(arg(args, 0, "images")?, backward(spec, args, rets))
    }
}
