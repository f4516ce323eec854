//! `reassemble`: PtychoPINN's `shift_and_sum` / `reassemble_position` (`_kernels.Reassembly`):
//! patches `(n, N, N[, 1])`, offsets `(n, …, 2)` -> the canvas `(S, S, 1)`.

use super::{
    Operand, Operator, Outcome, Output, Spec, Typed, arg, by_sample, copy, implementation, input,
    output, put_f64, ret, text,
};
use ndarray::{ArrayViewD, Axis, Ix2};
use ptychostitch::geometry::patch_stack;
use ptychostitch::{Operation, Plan, Wrt};

pub(crate) struct Reassemble;

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
    let offsets = super::offsets(offsets, "offsets")?;
    Ok(Plan::new(offsets.view(), n, spec.int("crop")?)
        .map_err(text)?
        .with_threads(spec.count("threads")?)
        .with_implementation(implementation(spec)?))
}

/// A canvas `(S, S[, 1])` as `(S, S)`.
fn canvas<'a, T>(
    a: &'a ArrayViewD<'_, T>,
    what: &str,
) -> Result<ndarray::ArrayView2<'a, T>, String> {
    let v = a.view();
    let v = if v.ndim() == 3 && v.shape()[2] == 1 {
        v.index_axis_move(Axis(2), 0)
    } else {
        v
    };
    v.into_dimensionality::<Ix2>().map_err(|_| {
        format!(
            "the {what} has shape {:?}; expected the canvas's (S, S, 1)",
            a.shape()
        )
    })
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
            Some(canvas(out, "forward's result")?),
            canvas(cot, "cotangent")?,
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

impl Operator for Reassemble {
    fn name(&self) -> &'static str {
        "reassemble"
    }

    fn forward(&self, spec: &Spec, args: &[Operand<'_>], rets: &mut [Output<'_>]) -> Outcome {
        by_sample!(arg(args, 0, "patches")?, forward(spec, args, rets))
    }

    fn backward(&self, spec: &Spec, args: &[Operand<'_>], rets: &mut [Output<'_>]) -> Outcome {
        by_sample!(arg(args, 0, "patches")?, backward(spec, args, rets))
    }
}
