//! `extract_regions`: the inverse of a torch-layout region reassembly (`_region.ExtractKernel`,
//! `ptycho_torch.helper.extract_channels_from_region`): regions `(B, 1, P, P)` or `(B, P, P)`,
//! positions `(B, C, 1, 2)` or `(B, C, 2)` `[x, y]` -> patches `(B, C, N, N)`.

use crate::options::parse_convention;
use crate::{
    Operand, Outcome, Output, Spec, Typed, arg, copy, input, operator, output, put_f64, ret,
    row_pairs, stack_of, text,
};
use ndarray::{ArrayD, ArrayView3, ArrayViewD, Axis, Ix3};
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

/// The extraction `ExtractKernel.plan_for` makes.
fn plan(
    spec: &Spec,
    images: &ArrayView3<'_, impl Sized>,
    positions: &ArrayD<f64>,
) -> Result<Extraction, String> {
    let (b, p, _) = images.dim();
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
    let patches = plan(spec, &imgs, &positions)?.run(imgs).map_err(text)?;
    copy(output::<T>(rets, 0, "patches")?, patches.iter().copied())
}

fn backward<T: Typed>(spec: &Spec, args: &[Operand<'_>], rets: &mut [Output<'_>]) -> Outcome {
    let imgs = images(input::<T>(args, 0, "regions")?)?;
    let positions = crate::offsets(arg(args, 1, "positions")?, "positions")?;
    let extraction = plan(spec, &imgs, &positions)?;
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

operator!(ExtractRegions, "extract_regions", "regions");
