//! `region_support`: the support mask `Σ w > threshold` of a region reassembly
//! (`_region.RegionSupport`), `(B, P, P)` bool, from the same operands. No gradient.

use crate::device::{self, Buffer, DType};
use crate::options::threshold;
use crate::reassemble_regions::{device_plan, planned, support};
use crate::{Operand, Outcome, Output, Spec, Typed, copy, operator, ret, text};
use ptychostitch::gpu::compose::{self, Launcher};

pub struct RegionSupport;

fn forward<T: Typed>(spec: &Spec, args: &[Operand<'_>], rets: &mut [Output<'_>]) -> Outcome {
    let p = planned::<T>(spec, args)?;
    let (kind, value) = support(spec)?.ok_or("region_support needs the support option")?;
    let mask = p
        .region
        .support(p.weights, threshold(kind, value)?)
        .map_err(text)?;
    match ret(rets, 0, "mask")? {
        Output::Bool(out) => copy(out, mask.iter().copied()),
        _ => Err("the support mask's result must be bool".into()),
    }
}

// `operator!` calls `backward::<T>` for the samples' type, like every operator's.
#[allow(clippy::extra_unused_type_parameters)]
fn backward<T: Typed>(_spec: &Spec, _args: &[Operand<'_>], _rets: &mut [Output<'_>]) -> Outcome {
    Err("the support mask has no gradient".into())
}

/// [`forward`] on the device kernels: the sums, then the mask, into the bool result.
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
    support(spec)?.ok_or("region_support needs the support option")?;
    let p = region.side();
    let out = device::buffer(rets, 0, "mask")?;
    if out.dtype != DType::Bool || out.len() != region.samples() * p * p {
        return Err(format!(
            "the support mask's result must be bool ({}, {p}, {p}), not {} {:?}",
            region.samples(),
            out.dtype.name(),
            out.dims
        ));
    }
    // SAFETY: the patches, weights and positions (checked by `device_plan`) and the mask
    // (checked here) are the call's buffers, per this function's contract.
    unsafe { compose::region_support(launcher, &region, inputs, out.address) }.map_err(text)
}

/// The support mask has no gradient.
///
/// # Safety
/// None needed; unsafe as every device operator.
unsafe fn backward_device(
    _spec: &Spec,
    _args: &[Buffer],
    _rets: &[Buffer],
    _launcher: &mut dyn Launcher,
) -> Outcome {
    Err("the support mask has no gradient".into())
}

operator!(RegionSupport, "region_support", "patches", device);
