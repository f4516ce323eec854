//! `region_support`: the support mask `Σ w > threshold` of a region reassembly
//! (`_region.RegionSupport`), `(B, P, P)` bool, from the same operands. No gradient.

use crate::options::threshold;
use crate::reassemble_regions::{planned, support};
use crate::{Operand, Outcome, Output, Spec, Typed, copy, operator, ret, text};

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

operator!(RegionSupport, "region_support", "patches");
