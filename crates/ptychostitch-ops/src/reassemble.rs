//! `reassemble`: PtychoPINN's `shift_and_sum` / `reassemble_position` (`_kernels.Reassembly`):
//! patches `(n, N, N[, 1])`, offsets `(n, …, 2)` -> the canvas `(S, S, 1)`.

use crate::device::{self, Buffer, OffsetsGrad};
use crate::{
    Operand, Outcome, Output, Spec, Typed, arg, canvas, copy, implementation, input, operator,
    output, put_f64, ret, text,
};
use ndarray::ArrayViewD;
use ptychostitch::geometry::patch_stack;
use ptychostitch::gpu::compose::{self, Launcher, ReassemblyVjp};
use ptychostitch::gpu::launch::Stack;
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

/// The plan of a device call: the offsets read to the host, the patch side from the stack.
///
/// # Safety
/// As [`device::run`].
unsafe fn device_plan(
    spec: &Spec,
    args: &[Buffer],
    launcher: &mut dyn Launcher,
) -> Result<(Plan, Stack), String> {
    device::host_only(spec)?;
    let x = device::buffer(args, 0, "patches")?;
    let lanes = x.lanes("patches")?;
    let n = *x.dims.get(1).ok_or("the patches must be (n, N, N[, 1])")?;
    // SAFETY: per this function's contract.
    let offsets =
        unsafe { device::host_values(launcher, device::buffer(args, 1, "offsets")?, "offsets") }?;
    let plan = Plan::new(offsets.view(), n, spec.int("crop")?).map_err(text)?;
    let dims: Vec<i64> = x.dims.iter().map(|&d| d as i64).collect();
    let stack = Stack::from_layout(x.address, &dims, None, lanes).map_err(text)?;
    Ok((plan, stack))
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
    // SAFETY: per this function's contract.
    let (plan, stack) = unsafe { device_plan(spec, args, launcher) }?;
    let side = plan.canvas_shape().0;
    let out = device::buffer(rets, 0, "canvas")?;
    if out.len() != side * side {
        return Err(format!(
            "these offsets give a ({side}, {side}, 1) canvas, not the {:?} promised by canvas_side",
            out.dims
        ));
    }
    let image = out.expect("canvas", side * side, stack.lanes)?;
    let (lists, tables) = compose::upload_plan(launcher, plan.geometry()).map_err(text)?;
    // SAFETY: the stack and the canvas are the call's buffers of the checked sizes, the
    // tables this plan's, in the launcher's memory (this function's contract).
    unsafe {
        compose::reassembly(
            launcher,
            plan.geometry(),
            &lists,
            tables,
            operation(spec)?,
            stack,
            image,
        )
    }
    .map_err(text)
}

/// [`backward`] on the device kernels.
///
/// # Safety
/// As [`device::run`].
unsafe fn backward_device(
    spec: &Spec,
    args: &[Buffer],
    rets: &[Buffer],
    launcher: &mut dyn Launcher,
) -> Outcome {
    // SAFETY: per this function's contract.
    let (plan, stack) = unsafe { device_plan(spec, args, launcher) }?;
    let (side, count, l) = (plan.canvas_shape().0, plan.len(), stack.lanes);
    let n = plan.geometry().patch_size();
    let output =
        device::buffer(args, 2, "forward's result")?.expect("forward's result", side * side, l)?;
    let cot = device::buffer(args, 3, "cotangent")?.expect("cotangent", side * side, l)?;
    let patch_grad = device::buffer(rets, 0, "patches' cotangent")?.expect(
        "patches' cotangent",
        count * n * n,
        l,
    )?;
    let offsets = OffsetsGrad::new(
        launcher,
        device::buffer(rets, 1, "offsets' cotangent")?,
        count * 2,
    )?;
    let (lists, tables) = compose::upload_plan(launcher, plan.geometry()).map_err(text)?;
    let io = ReassemblyVjp {
        stack,
        cot,
        output,
        patch_grad,
        offsets_grad: offsets.at,
    };
    // SAFETY: as in `forward_device`, for every buffer of `io` (checked sizes).
    unsafe {
        compose::reassembly_vjp(
            launcher,
            plan.geometry(),
            &lists,
            tables,
            operation(spec)?,
            io,
        )
        .map_err(text)?;
        offsets.finish(launcher)
    }
}

operator!(Reassemble, "reassemble", "patches", device);
