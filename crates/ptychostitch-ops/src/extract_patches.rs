//! `extract_patches`: PtychoPINN's `extract_patches_position` (`_kernels.Extract`): images
//! `(B, S, S, 1)`, offsets `(B, 1, 2, C)` `[x, y]` -> patches `(B·C, N, N, 1)`, row `b·C + c`.

use crate::device::{self, Buffer};
use crate::{
    Operand, Outcome, Output, Spec, Typed, arg, channel_format, channel_pairs, copy, input,
    operator, output, put_f64, ret, stack_of, text,
};
use ndarray::{Array2, ArrayD};
use ptychostitch::gpu::compose::{Images, Launcher, Shifts};
use ptychostitch::{Extraction, Wrt};

pub struct ExtractPatches;

/// `(B, 1, 2, C)` -> `(B·C, 2)`, `B` and `C` from the shape (`Extract.flat_offsets`).
fn flat(offsets: &ArrayD<f64>) -> Result<Array2<f64>, String> {
    let shape = offsets.shape();
    channel_pairs(offsets, shape[0], shape[shape.len() - 1], false)
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
    let offsets = crate::offsets(arg(args, 1, "offsets")?, "offsets")?;
    let plan = plan(spec, imgs.shape(), &offsets)?;
    let patches = plan.run(imgs.view()).map_err(text)?;
    copy(output::<T>(rets, 0, "patches")?, patches.iter().copied())
}

fn backward<T: Typed>(spec: &Spec, args: &[Operand<'_>], rets: &mut [Output<'_>]) -> Outcome {
    let imgs = input::<T>(args, 0, "images")?;
    let offsets = crate::offsets(arg(args, 1, "offsets")?, "offsets")?;
    let plan = plan(spec, imgs.shape(), &offsets)?;
    let cot = input::<T>(args, 3, "cotangent")?;
    let n = spec.count("patch_size")?;
    let cot = stack_of(cot, (n, n), "cotangent", "(B·C, N, N, 1)")?;
    let g = plan.vjp(imgs.view(), cot, Wrt::ALL).map_err(text)?;
    let dimgs = g.patches.ok_or("the images' cotangent was not computed")?;
    copy(
        output::<T>(rets, 0, "images' cotangent")?,
        dimgs.iter().copied(),
    )?;
    let dflat = g.offsets.ok_or("the offsets' cotangent was not computed")?;
    let (b, c) = (offsets.shape()[0], offsets.shape()[offsets.ndim() - 1]);
    put_f64(
        ret(rets, 1, "offsets' cotangent")?,
        channel_format(dflat, b, c, false)?.view(),
    )
}

/// The extraction of a device call, its images `(B, S, S, 1)` and its translations planned on
/// the device from the offsets `(B, 1, 2, C)` (none read on the host).
fn device_plan(spec: &Spec, args: &[Buffer]) -> Result<(Extraction, (Images, Shifts)), String> {
    let imgs = device::buffer(args, 0, "images")?;
    let lanes = imgs.lanes("images")?;
    let offsets = device::buffer(args, 1, "offsets")?;
    let c = offsets.dims.last().copied().unwrap_or(0);
    let (shape_only, at) = device::positions(offsets, c, "offsets")?;
    let plan = plan(spec, &imgs.dims, &shape_only)?;
    let s = plan.image_side();
    let b = plan.output_shape().0 / plan.per_image().max(1);
    let address = imgs.expect("images", b * s * s, lanes)?;
    Ok((plan, (Images::c_order(address, s, lanes), Shifts::From(at))))
}

/// [`forward`] on the device kernels.
///
/// # Safety
/// As [`device::run`].
unsafe fn forward_device(
    spec: &Spec,
    args: &[Buffer],
    rets: &[Buffer],
    launcher: &mut dyn Launcher,
) -> Outcome {
    let (plan, at) = device_plan(spec, args)?;
    // SAFETY: per this function's contract.
    unsafe { device::extract(launcher, &plan, at, rets) }
}

/// [`backward`] on the device kernels: the offsets' cotangent in PtychoPINN's `(B, 1, 2, C)`.
///
/// # Safety
/// As [`device::run`].
unsafe fn backward_device(
    spec: &Spec,
    args: &[Buffer],
    rets: &[Buffer],
    launcher: &mut dyn Launcher,
) -> Outcome {
    let (plan, at) = device_plan(spec, args)?;
    // SAFETY: per this function's contract.
    unsafe { device::extract_vjp(launcher, &plan, at, (args, rets), "images' cotangent", true) }
}

operator!(ExtractPatches, "extract_patches", "images", device);
