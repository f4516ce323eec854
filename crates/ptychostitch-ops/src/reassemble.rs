//! `reassemble`: PtychoPINN's `shift_and_sum` / `reassemble_position` (`_kernels.Reassembly`):
//! patches `(n, N, N[, 1])`, offsets `(n, …, 2)` -> the canvas `(S, S, 1)`.

use crate::{
    Operand, Outcome, Output, Spec, Typed, arg, canvas, copy, implementation, input, operator,
    output, put_f64, ret, text,
};
use ndarray::ArrayViewD;
use ptychostitch::geometry::patch_stack;
use ptychostitch::{Operation, Plan, Wrt};

pub struct Reassemble;

fn operation(spec: &Spec) -> Result<Operation, String> {
    match spec.text("op")? {
        "shift_and_sum" => Ok(Operation::ShiftAndSum),
        "reassemble_position" => Ok(Operation::ReassemblePosition),
        other => Err(format!(
            "op must be 'shift_and_sum' or 'reassemble_position', not {other:?}"
        )),
    }
}

/// The plan `_native.stitch` makes: the patch side from the stack, the crop and the threads
/// from the spec.
fn plan<T>(spec: &Spec, x: &ArrayViewD<'_, T>, offsets: &Operand<'_>) -> Result<Plan, String> {
    let n = patch_stack(x.view()).map_err(text)?.dim().1;
    let offsets = crate::offsets(offsets, "offsets")?;
    Ok(Plan::new(offsets.view(), n, spec.int("crop")?)
        .map_err(text)?
        .with_threads(spec.count("threads")?)
        .with_implementation(implementation(spec)?))
}

fn forward<T: Typed>(spec: &Spec, args: &[Operand<'_>], rets: &mut [Output<'_>]) -> Outcome {
    let x = input::<T>(args, 0, "patches")?;
    let plan = plan(spec, x, arg(args, 1, "offsets")?)?;
    let out = output::<T>(rets, 0, "canvas")?;
    let side = plan.canvas_shape().0;
    if out.len() != side * side {
        return Err(format!(
            "these offsets give a ({side}, {side}, 1) canvas, not the {:?} promised by canvas_side",
            out.shape()
        ));
    }
    let canvas = plan.run(operation(spec)?, x.view()).map_err(text)?;
    copy(out, canvas.iter().copied())
}

fn backward<T: Typed>(spec: &Spec, args: &[Operand<'_>], rets: &mut [Output<'_>]) -> Outcome {
    let x = input::<T>(args, 0, "patches")?;
    let plan = plan(spec, x, arg(args, 1, "offsets")?)?;
    let out = input::<T>(args, 2, "forward's result")?;
    let cot = input::<T>(args, 3, "cotangent")?;
    let g = plan
        .vjp(
            operation(spec)?,
            x.view(),
            Some(canvas(out.clone(), "forward's result")?),
            canvas(cot.clone(), "cotangent")?,
            Wrt::ALL,
        )
        .map_err(text)?;
    let dx = g.patches.ok_or("the patches' cotangent was not computed")?;
    copy(
        output::<T>(rets, 0, "patches' cotangent")?,
        dx.iter().copied(),
    )?;
    let doff = g.offsets.ok_or("the offsets' cotangent was not computed")?;
    put_f64(ret(rets, 1, "offsets' cotangent")?, doff.into_dyn().view())
}

operator!(Reassemble, "reassemble", "patches");
