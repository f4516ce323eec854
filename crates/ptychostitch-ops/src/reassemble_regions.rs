//! `reassemble_regions`: the training path's batched region reassembly (`_region.RegionKernel`)
//! in PtychoPINN's two layouts -- `tf`: patches `(B, N, N, C)`, positions `(B, 1, 2, C)`,
//! regions `(B, P, P, 1)`; `torch`: patches `(B, C, N, N)`, positions `(B, C, 1, 2)` or
//! `(B, C, 2)`, regions `(B, P, P)` -- with float32 weights `(1|B, 1|C, N, N)` third.

use crate::device::{self, Buffer, OffsetsGrad};
use crate::options::options_from;
use crate::{
    Operand, Outcome, Output, Spec, Typed, arg, channel_format, channel_pairs, copy, input,
    operator, output, put_f64, ret, row_pairs, spec, stack_of, text,
};
use ndarray::{Array2, ArrayD, ArrayView4, ArrayViewD, Ix4};
use ptychostitch::gpu::compose::{self, Launcher, RegionInputs, RegionVjp, Shifts};
use ptychostitch::gpu::launch::RegionArgs;
use ptychostitch::region::{Region, RegionOptions, RegionWrt};

pub struct ReassembleRegions;

/// Whether the spec's layout is TensorFlow's (else torch's).
fn tf_layout(spec: &Spec) -> Result<bool, String> {
    match spec.text("layout")? {
        "tf" => Ok(true),
        "torch" => Ok(false),
        other => Err(format!("layout must be 'tf' or 'torch', not {other:?}")),
    }
}

/// The `support` option: `None` or `[kind, value]`.
pub fn support(spec: &Spec) -> Result<Option<(&str, f32)>, String> {
    match spec.optional("support")? {
        None => Ok(None),
        Some(spec::Value::List(items)) if items.len() == 2 => match &items[0] {
            spec::Value::Str(kind) => Ok(Some((
                kind.as_str(),
                spec::float("support[1]", &items[1])? as f32,
            ))),
            other => Err(format!("support[0] must be a string, not {other:?}")),
        },
        Some(other) => Err(format!(
            "support must be None or [kind, value], not {other:?}"
        )),
    }
}

/// The region options the spec declares (`RegionKernel.options`).
fn options(spec: &Spec) -> Result<RegionOptions, String> {
    let support = support(spec)?;
    options_from(
        spec.text("convention")?,
        spec.flag("recentre")?,
        spec.text("numerator")?,
        spec.text("denominator")?,
        spec.float("epsilon")? as f32,
        support.map(|s| s.0),
        support.map_or(0.0, |s| s.1),
        spec.float("scale")? as f32,
    )
}

/// The patches as `(B, C, N, N)` (a view: TensorFlow's layout permuted, not copied).
pub fn bcnn<'a, T>(x: &ArrayViewD<'a, T>, tf: bool) -> Result<ArrayView4<'a, T>, String> {
    let x4 = x
        .clone()
        .into_dimensionality::<Ix4>()
        .map_err(|_| format!("patches have shape {:?}; expected four axes", x.shape()))?;
    let x4 = if tf {
        x4.permuted_axes([0, 3, 1, 2])
    } else {
        x4
    };
    let (_, _, n, m) = x4.dim();
    if n != m {
        return Err(format!(
            "patches have shape {:?}: the patches must be square",
            x.shape()
        ));
    }
    Ok(x4)
}

/// `(B·C, 2)` `[x, y]` in sample-major order (`RegionKernel.pairs`).
fn pairs(positions: &ArrayD<f64>, b: usize, c: usize, tf: bool) -> Result<Array2<f64>, String> {
    if !tf {
        return row_pairs(positions, b, c);
    }
    if positions.shape() != [b, 1, 2, c] {
        return Err(format!(
            "positions have shape {:?}; expected ({b}, 1, 2, {c}) [x, y] in channel format",
            positions.shape()
        ));
    }
    channel_pairs(positions, b, c, false)
}

/// The plan `RegionKernel.plan` makes, the patches as `(B, C, N, N)` and the weights.
pub struct Planned<'a, T> {
    pub region: Region,
    pub patches: ArrayView4<'a, T>,
    pub weights: ArrayView4<'a, f32>,
    pub tf: bool,
}

pub fn planned<'a, T: Typed>(spec: &Spec, args: &[Operand<'a>]) -> Result<Planned<'a, T>, String> {
    let tf = tf_layout(spec)?;
    let patches = bcnn(input::<T>(args, 0, "patches")?, tf)?;
    let (b, c, n, _) = patches.dim();
    let positions = crate::offsets(arg(args, 1, "positions")?, "positions")?;
    let weights = crate::weights(arg(args, 2, "weights")?)?
        .clone()
        .into_dimensionality::<Ix4>()
        .map_err(|_| "the weights must be (1|B, 1|C, N, N)".to_string())?;
    let implementation = crate::implementation(spec)?;
    let region = Region::new(
        pairs(&positions, b, c, tf)?.view(),
        b,
        n,
        spec.count("side")?,
        options(spec)?,
    )
    .map_err(text)?
    .with_threads(spec.count("threads")?)
    .with_implementation(implementation);
    Ok(Planned {
        region,
        patches,
        weights,
        tf,
    })
}

fn forward<T: Typed>(spec: &Spec, args: &[Operand<'_>], rets: &mut [Output<'_>]) -> Outcome {
    let p = planned::<T>(spec, args)?;
    let regions = p.region.reassemble(p.patches, p.weights).map_err(text)?;
    copy(output::<T>(rets, 0, "regions")?, regions.iter().copied())
}

fn backward<T: Typed>(spec: &Spec, args: &[Operand<'_>], rets: &mut [Output<'_>]) -> Outcome {
    let p = planned::<T>(spec, args)?;
    let (b, c, _, _) = p.patches.dim();
    let side = spec.count("side")?;
    let cot = stack_of(
        input::<T>(args, 4, "cotangent")?,
        (side, side),
        "cotangent",
        "the regions'",
    )?;
    let wrt = RegionWrt {
        patches: true,
        positions: true,
        weights: false,
    };
    // The forward's regions (XLA keeps them for the backward): only the denominators are
    // summed again.
    let out = stack_of(
        input::<T>(args, 3, "forward's result")?,
        (side, side),
        "forward's result",
        "the regions'",
    )?;
    let g = p
        .region
        .vjp(p.patches, p.weights, Some(out), cot, wrt)
        .map_err(text)?;
    let dx = g.patches.ok_or("the patches' cotangent was not computed")?;
    // (B, C, N, N) back to the layout's own order.
    let dx = if p.tf {
        dx.view().permuted_axes([0, 2, 3, 1])
    } else {
        dx.view()
    };
    copy(
        output::<T>(rets, 0, "patches' cotangent")?,
        dx.iter().copied(),
    )?;
    let dpos = g
        .positions
        .ok_or("the positions' cotangent was not computed")?;
    let dpos = if p.tf {
        channel_format(dpos, b, c, false)?
    } else {
        dpos.into_dyn()
    };
    put_f64(ret(rets, 1, "positions' cotangent")?, dpos.view())
}

/// The region of a device call and its inputs, its translations planned on the device from
/// the positions (none read on the host). The device kernels read the patches as
/// `(B, C, N, N)`: the torch layout. A framework holding the tf layout transposes first
/// (`RegionKernel.device_twin`), and says so by declaring the torch layout with the tf
/// convention.
pub(crate) fn device_plan(spec: &Spec, args: &[Buffer]) -> Result<(Region, RegionInputs), String> {
    device::host_only(spec)?;
    if tf_layout(spec)? {
        return Err(
            "the device kernels read the torch layout (B, C, N, N): transpose TensorFlow's patches first".into(),
        );
    }
    let x = device::buffer(args, 0, "patches")?;
    let lanes = x.lanes("patches")?;
    let w = device::buffer(args, 2, "weights")?;
    let (patches, weights) = match (&x.dims[..], &w.dims[..]) {
        (&[b, c, n, m], &[w0, w1, wn, wm]) => ((b, c, n, m), (w0, w1, wn, wm)),
        _ => {
            return Err(format!(
                "patches {:?} and weights {:?}: expected (B, C, N, N) and (1|B, 1|C, N, N)",
                x.dims, w.dims
            ));
        }
    };
    if w.dtype != device::DType::F32 {
        return Err("the weights must be float32".into());
    }
    let (shape_only, at) =
        device::positions(device::buffer(args, 1, "positions")?, 0, "positions")?;
    let (b, c, n, _) = patches;
    let region = Region::new(
        row_pairs(&shape_only, b, c)?.view(),
        b,
        n,
        spec.count("side")?,
        options(spec)?,
    )
    .map_err(text)?;
    // The shapes the kernels read, as every device path checks them.
    RegionArgs::check_inputs(&region, patches, weights).map_err(text)?;
    let weight_shape = [weights.0, weights.1];
    let inputs = RegionInputs {
        patches: x.address,
        lanes,
        weights: w.address,
        weight_shape,
        shifts: Shifts::From(at),
    };
    Ok((region, inputs))
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
    let (region, inputs) = device_plan(spec, args)?;
    let p = region.side();
    let out = device::buffer(rets, 0, "regions")?.expect(
        "regions",
        region.samples() * p * p,
        inputs.lanes,
    )?;
    // SAFETY: the patches, weights (their dims checked) and regions are the call's buffers.
    unsafe { compose::region(launcher, &region, inputs, out) }.map_err(text)
}

/// [`backward`] on the device kernels: the positions' cotangent in the positions' layout.
///
/// # Safety
/// As [`device::run`].
unsafe fn backward_device(
    spec: &Spec,
    args: &[Buffer],
    rets: &[Buffer],
    launcher: &mut dyn Launcher,
) -> Outcome {
    let (region, inputs) = device_plan(spec, args)?;
    let (b, c, n, p) = (
        region.samples(),
        region.channels(),
        region.patch_size(),
        region.side(),
    );
    let l = inputs.lanes;
    let cot = device::buffer(args, 4, "cotangent")?.expect("cotangent", b * p * p, l)?;
    let patch_grad = device::buffer(rets, 0, "patches' cotangent")?.expect(
        "patches' cotangent",
        b * c * n * n,
        l,
    )?;
    let positions = OffsetsGrad::new(
        launcher,
        device::buffer(rets, 1, "positions' cotangent")?,
        b * c * 2,
    )?;
    let io = RegionVjp {
        inputs,
        cot,
        patch_grad,
        positions_grad: positions.at,
        channel_layout: false,
    };
    // SAFETY: as in `forward_device`, for every buffer of `io` (checked sizes).
    unsafe {
        compose::region_vjp(launcher, &region, io).map_err(text)?;
        positions.finish(launcher)
    }
}

operator!(ReassembleRegions, "reassemble_regions", "patches", device);
