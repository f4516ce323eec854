//! `extract_regions`: the inverse of a torch-layout region reassembly (`_region.ExtractKernel`,
//! `ptycho_torch.helper.extract_channels_from_region`): regions `(B, 1, P, P)` or `(B, P, P)`,
//! positions `(B, C, 1, 2)` or `(B, C, 2)` `[x, y]` -> patches `(B, C, N, N)`.

use crate::device::{self, Buffer};
use crate::options::parse_convention;
use crate::{
    Operand, Outcome, Output, Spec, Typed, arg, copy, input, operator, output, put_f64, ret,
    row_pairs, stack_of, text,
};
use ndarray::{ArrayD, ArrayView3, ArrayViewD, Axis, Ix3};
use ptychostitch::gpu::compose::{Images, Launcher, Shifts};
use ptychostitch::{Extraction, Wrt};

pub struct ExtractRegions;

/// The regions as images `(B, P, P)`.
fn images<'a, T>(regions: &ArrayViewD<'a, T>) -> Result<ArrayView3<'a, T>, String> {
    let v = regions.clone();
    let v = if v.ndim() == 4 && v.shape()[1] == 1 {
        v.index_axis_move(Axis(1), 0)
    } else {
        v
    };
    let shape = regions.shape().to_vec();
    let v = v
        .into_dimensionality::<Ix3>()
        .map_err(|_| format!("regions have shape {shape:?}; expected (B, 1, P, P) or (B, P, P)"))?;
    if v.dim().1 != v.dim().2 {
        return Err(format!(
            "regions have shape {shape:?}; expected (B, 1, P, P) or (B, P, P)"
        ));
    }
    Ok(v)
}

/// The extraction `ExtractKernel.plan_for` makes for `B` regions of side `P`.
fn plan(
    spec: &Spec,
    (b, p): (usize, usize),
    positions: &ArrayD<f64>,
) -> Result<Extraction, String> {
    let c = spec.count("channels")?;
    let pairs = row_pairs(positions, b, c)?;
    let convention = parse_convention(spec.text("convention")?)?;
    let threads = spec.count("threads")?;
    Ok(
        Extraction::new_in(convention, pairs.view(), c, p, spec.count("patch_size")?)
            .map_err(text)?
            .with_threads(threads),
    )
}

fn forward<T: Typed>(spec: &Spec, args: &[Operand<'_>], rets: &mut [Output<'_>]) -> Outcome {
    let imgs = images(input::<T>(args, 0, "regions")?)?;
    let positions = crate::offsets(arg(args, 1, "positions")?, "positions")?;
    let patches = plan(spec, (imgs.dim().0, imgs.dim().1), &positions)?
        .run(imgs)
        .map_err(text)?;
    copy(output::<T>(rets, 0, "patches")?, patches.iter().copied())
}

fn backward<T: Typed>(spec: &Spec, args: &[Operand<'_>], rets: &mut [Output<'_>]) -> Outcome {
    let imgs = images(input::<T>(args, 0, "regions")?)?;
    let positions = crate::offsets(arg(args, 1, "positions")?, "positions")?;
    let extraction = plan(spec, (imgs.dim().0, imgs.dim().1), &positions)?;
    let n = spec.count("patch_size")?;
    let cot = stack_of(
        input::<T>(args, 3, "cotangent")?,
        (n, n),
        "cotangent",
        "(B, C, N, N)",
    )?;
    let g = extraction.vjp(imgs, cot, Wrt::ALL).map_err(text)?;
    let dimg = g.patches.ok_or("the regions' cotangent was not computed")?;
    copy(
        output::<T>(rets, 0, "regions' cotangent")?,
        dimg.iter().copied(),
    )?;
    let dflat = g
        .offsets
        .ok_or("the positions' cotangent was not computed")?;
    put_f64(
        ret(rets, 1, "positions' cotangent")?,
        dflat.into_dyn().view(),
    )
}

/// The extraction of a device call, its regions as images `(B, P, P)` and its translations
/// planned on the device from the positions (none read on the host).
fn device_plan(spec: &Spec, args: &[Buffer]) -> Result<(Extraction, (Images, Shifts)), String> {
    let regions = device::buffer(args, 0, "regions")?;
    let lanes = regions.lanes("regions")?;
    let (b, p) = match regions.dims[..] {
        [b, 1, p, q] | [b, p, q] if p == q => (b, p),
        _ => {
            return Err(format!(
                "regions have shape {:?}; expected (B, 1, P, P) or (B, P, P)",
                regions.dims
            ));
        }
    };
    let (shape_only, at) =
        device::positions(device::buffer(args, 1, "positions")?, 0, "positions")?;
    let plan = plan(spec, (b, p), &shape_only)?;
    Ok((
        plan,
        (Images::c_order(regions.address, p, lanes), Shifts::From(at)),
    ))
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

/// [`backward`] on the device kernels: the positions' cotangent as `(B·C, 2)` rows.
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
    unsafe {
        device::extract_vjp(
            launcher,
            &plan,
            at,
            (args, rets),
            "regions' cotangent",
            false,
        )
    }
}

operator!(ExtractRegions, "extract_regions", "regions", device);
