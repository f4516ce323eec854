//! Every operation as a framework operator runs it in compiled code (JAX's XLA custom calls):
//! one module per operation, each the Rust half of its Python declaration
//! (`python/ptychostitch/_kernels.py`'s `Declared`: the same `OP` name, the same `PARAMS` read
//! from the same spec string), taking the framework's own layouts and writing into buffers
//! the framework allocated. Each does what the kernel's NumPy `forward`/`backward` do, through
//! the same library calls, so the bits are the same (`python/tests/test_jax_ffi.py`).
//!
//! Adding an operation: a kernel class in Python, a module here (listed in [`OPERATORS`]),
//! and its device kernel in `kernel.cu`.

pub mod device;
pub mod options;
pub mod spec;

mod center_channels;
mod extract_patches;
mod extract_regions;
mod reassemble;
mod reassemble_regions;
mod region_support;

use ndarray::{Array2, ArrayD, ArrayView3, ArrayViewD, ArrayViewMutD, Ix3, IxDyn};
use ptychostitch::gpu::compose::Launcher;
use ptychostitch::{Complex32, Implementation, Sample};
pub use spec::Spec;

/// An operand of a call, borrowed from the framework.
pub enum Operand<'a> {
    F32(ArrayViewD<'a, f32>),
    F64(ArrayViewD<'a, f64>),
    C64(ArrayViewD<'a, Complex32>),
}

/// A result buffer of a call, allocated by the framework.
pub enum Output<'a> {
    F32(ArrayViewMutD<'a, f32>),
    F64(ArrayViewMutD<'a, f64>),
    C64(ArrayViewMutD<'a, Complex32>),
    Bool(ArrayViewMutD<'a, bool>),
}

pub type Outcome = Result<(), String>;

/// One operation: its forward and its vector–Jacobian product, on the framework's layouts.
pub trait Operator: Sync {
    /// The declaration's `OP` (the backward is `<OP>_backward`).
    fn name(&self) -> &'static str;
    /// `args` as the kernel's `forward` takes them (its `WEIGHTED` weights third); `rets`
    /// the result.
    fn forward(&self, spec: &Spec, args: &[Operand<'_>], rets: &mut [Output<'_>]) -> Outcome;
    /// `args`: the inputs, the forward's result and its cotangent (TensorFlow's and PyTorch's
    /// convention for complex values) — the weights, where weighted, after the inputs;
    /// `rets`: the inputs' cotangents, in their shapes and dtypes.
    fn backward(&self, spec: &Spec, args: &[Operand<'_>], rets: &mut [Output<'_>]) -> Outcome;
    /// [`Operator::forward`] on the device kernels ([`device`]); by default there are none.
    ///
    /// # Safety
    /// As [`device::run`].
    unsafe fn forward_device(
        &self,
        _spec: &Spec,
        _args: &[device::Buffer],
        _rets: &[device::Buffer],
        _launcher: &mut dyn Launcher,
    ) -> Outcome {
        Err(format!("{} has no device kernels", self.name()))
    }
    /// [`Operator::backward`] on the device kernels; by default there are none.
    ///
    /// # Safety
    /// As [`device::run`].
    unsafe fn backward_device(
        &self,
        _spec: &Spec,
        _args: &[device::Buffer],
        _rets: &[device::Buffer],
        _launcher: &mut dyn Launcher,
    ) -> Outcome {
        Err(format!("{} has no device kernels", self.name()))
    }
}

/// Every operator, by name.
pub static OPERATORS: &[&dyn Operator] = &[
    &reassemble::Reassemble,
    &extract_patches::ExtractPatches,
    &reassemble_regions::ReassembleRegions,
    &region_support::RegionSupport,
    &extract_regions::ExtractRegions,
    &center_channels::CenterChannels,
];

/// The operator `op` names (`<OP>` or `<OP>_backward`), and whether it is the backward.
pub(crate) fn find(op: &str) -> Result<(&'static dyn Operator, bool), String> {
    let (name, backward) = match op.strip_suffix("_backward") {
        Some(name) => (name, true),
        None => (op, false),
    };
    let operator = OPERATORS
        .iter()
        .find(|o| o.name() == name)
        .ok_or_else(|| format!("no operator named {op:?}"))?;
    Ok((*operator, backward))
}

/// Runs `op` (`<OP>` or `<OP>_backward`) on the host.
pub fn run(op: &str, spec: &Spec, args: &[Operand<'_>], rets: &mut [Output<'_>]) -> Outcome {
    let (operator, backward) = find(op)?;
    if backward {
        operator.backward(spec, args, rets)
    } else {
        operator.forward(spec, args, rets)
    }
}

/// `args[i]`, or an error naming what is missing.
pub fn arg<'s, 'a>(
    args: &'s [Operand<'a>],
    i: usize,
    what: &str,
) -> Result<&'s Operand<'a>, String> {
    args.get(i)
        .ok_or_else(|| format!("the call lacks its {what}"))
}

/// Offsets or positions as float64 (what `as_offsets` makes of float32 or float64 values).
pub fn offsets(op: &Operand<'_>, what: &str) -> Result<ArrayD<f64>, String> {
    match op {
        Operand::F64(a) => Ok(a.to_owned()),
        Operand::F32(a) => Ok(a.mapv(f64::from)),
        _ => Err(format!("{what} must be float32 or float64")),
    }
}

/// The float32 weights.
pub fn weights<'s, 'a>(op: &'s Operand<'a>) -> Result<&'s ArrayViewD<'a, f32>, String> {
    match op {
        Operand::F32(a) => Ok(a),
        _ => Err("the weights must be float32".into()),
    }
}

/// The implementation a spec's `reference` asks for.
pub fn implementation(spec: &Spec) -> Result<Implementation, String> {
    Ok(if spec.flag("reference")? {
        Implementation::Reference
    } else {
        Implementation::Fast
    })
}

/// Copies `values` into `out` in row-major order (a reshape, as NumPy's), converting float64
/// to the result's float32 where it is one (an offsets cotangent in the offsets' dtype).
pub fn put_f64(out: &mut Output<'_>, values: ArrayViewD<'_, f64>) -> Outcome {
    match out {
        Output::F64(o) => copy(o, values.iter().copied()),
        Output::F32(o) => copy(o, values.iter().map(|&v| v as f32)),
        _ => Err("an offsets cotangent must be float32 or float64".into()),
    }
}

/// Copies `values` (row-major) into `out`, which must hold as many elements.
pub fn copy<T>(
    out: &mut ArrayViewMutD<'_, T>,
    values: impl ExactSizeIterator<Item = T>,
) -> Outcome {
    if values.len() != out.len() {
        return Err(format!(
            "the result buffer has {} elements where the operation makes {} (shape {:?})",
            out.len(),
            values.len(),
            out.shape()
        ));
    }
    for (o, v) in out.iter_mut().zip(values) {
        *o = v;
    }
    Ok(())
}

/// PtychoPINN's channel-format offsets `(B, 1, 2, C)` `[x, y]` as `(B·C, 2)` rows in its flat
/// order (row `b·C + c`), negated where `negate` (`Extract.flat_offsets`).
pub fn channel_pairs(
    offsets: &ArrayD<f64>,
    b: usize,
    c: usize,
    negate: bool,
) -> Result<Array2<f64>, String> {
    let grid = offsets
        .view()
        .into_shape_with_order((b, 2, c))
        .map_err(|_| {
            format!(
                "offsets have shape {:?}; expected ({b}, 1, 2, {c}) [x, y] in channel format",
                offsets.shape()
            )
        })?;
    let values = grid
        .permuted_axes([0, 2, 1])
        .iter()
        .map(|&v| if negate { -v } else { v })
        .collect();
    Array2::from_shape_vec((b * c, 2), values).map_err(|e| e.to_string())
}

/// `(B·C, 2)` rows back in PtychoPINN's channel format `(B, 1, 2, C)` (the inverse of
/// [`channel_pairs`], negated where `negate`).
pub fn channel_format(
    rows: Array2<f64>,
    b: usize,
    c: usize,
    negate: bool,
) -> Result<ArrayD<f64>, String> {
    let grid = rows
        .into_shape_with_order((b, c, 2))
        .map_err(|e| e.to_string())?;
    let grid = grid.permuted_axes([0, 2, 1]).insert_axis(ndarray::Axis(1));
    Ok(if negate {
        grid.mapv(|v| -v)
    } else {
        grid.to_owned()
    }
    .into_dyn())
}

/// Positions `(B, C, 1, 2)` or `(B, C, 2)` `[x, y]` as `(B·C, 2)` rows, sample-major (the torch
/// layout's; `RegionKernel.pairs`, `ExtractKernel.plan_for`).
pub fn row_pairs(positions: &ArrayD<f64>, b: usize, c: usize) -> Result<Array2<f64>, String> {
    let shape = positions.shape();
    if positions.len() != b * c * 2
        || shape.len() < 2
        || shape[..2] != [b, c]
        || shape[shape.len() - 1] != 2
    {
        return Err(format!(
            "positions have shape {shape:?}; expected ({b}, {c}, 1, 2) or ({b}, {c}, 2) [x, y]"
        ));
    }
    Array2::from_shape_vec((b * c, 2), positions.iter().copied().collect())
        .map_err(|e| e.to_string())
}

/// `a` as a stack `(k, n, m)` of its row-major values (`what` and `expected` name it in the
/// error): a cotangent or an output in whichever of its layouts' shapes.
pub fn stack_of<'a, T>(
    a: &ArrayViewD<'a, T>,
    (n, m): (usize, usize),
    what: &str,
    expected: &str,
) -> Result<ArrayView3<'a, T>, String> {
    let k = a.len() / (n * m).max(1);
    a.clone()
        .into_shape_with_order(IxDyn(&[k, n, m]))
        .ok()
        .and_then(|v| v.into_dimensionality::<Ix3>().ok())
        .ok_or_else(|| format!("the {what} has shape {:?}; expected {expected}", a.shape()))
}

/// A canvas `(S, S[, 1])` as `(S, S)` (`what` names it in the error): the reassembly's output
/// and its cotangent, from a framework or from the bindings (`crate::canvas`).
pub fn canvas<'a, T>(
    a: ArrayViewD<'a, T>,
    what: &str,
) -> Result<ndarray::ArrayView2<'a, T>, String> {
    let shape = a.shape().to_vec();
    let a = if shape.len() == 3 && shape[2] == 1 {
        a.index_axis_move(ndarray::Axis(2), 0)
    } else {
        a
    };
    a.into_dimensionality::<ndarray::Ix2>().map_err(|_| {
        format!("the {what} has shape {shape:?}; expected the canvas's (S, S, 1) or (S, S)")
    })
}

/// `impl Operator for $ty` named `$name`: its forward and backward are the module's generic
/// `forward::<T>` and `backward::<T>`, dispatched on the element type of its first operand
/// (`$first` names it in errors); with `device`, the module's `forward_device` and
/// `backward_device` run it on the device kernels.
macro_rules! operator {
    ($ty:ident, $name:literal, $first:literal) => {
        $crate::operator!($ty, $name, $first, {});
    };
    // `device`: also the module's `forward_device` and `backward_device` ([`device`]).
    ($ty:ident, $name:literal, $first:literal, device) => {
        $crate::operator!($ty, $name, $first, {
            unsafe fn forward_device(
                &self,
                spec: &$crate::Spec,
                args: &[$crate::device::Buffer],
                rets: &[$crate::device::Buffer],
                launcher: &mut dyn ptychostitch::gpu::compose::Launcher,
            ) -> $crate::Outcome {
                // SAFETY: forwarded from this method's contract.
                unsafe { forward_device(spec, args, rets, launcher) }
            }

            unsafe fn backward_device(
                &self,
                spec: &$crate::Spec,
                args: &[$crate::device::Buffer],
                rets: &[$crate::device::Buffer],
                launcher: &mut dyn ptychostitch::gpu::compose::Launcher,
            ) -> $crate::Outcome {
                // SAFETY: forwarded from this method's contract.
                unsafe { backward_device(spec, args, rets, launcher) }
            }
        });
    };
    ($ty:ident, $name:literal, $first:literal, { $($device:tt)* }) => {
        impl $crate::Operator for $ty {
            fn name(&self) -> &'static str {
                $name
            }

            fn forward(
                &self,
                spec: &$crate::Spec,
                args: &[$crate::Operand<'_>],
                rets: &mut [$crate::Output<'_>],
            ) -> $crate::Outcome {
                $crate::by_sample!($crate::arg(args, 0, $first)?, forward(spec, args, rets))
            }

            fn backward(
                &self,
                spec: &$crate::Spec,
                args: &[$crate::Operand<'_>],
                rets: &mut [$crate::Output<'_>],
            ) -> $crate::Outcome {
                $crate::by_sample!($crate::arg(args, 0, $first)?, backward(spec, args, rets))
            }

            $($device)*
        }
    };
}
pub(crate) use operator;

/// The library error as one line.
pub fn text(e: ptychostitch::Error) -> String {
    e.to_string()
}

/// A sample element type an operator runs on (float32 or complex64): how to find operands and
/// results of it.
pub trait Typed: Sample {
    fn view<'s, 'a>(op: &'s Operand<'a>) -> Option<&'s ArrayViewD<'a, Self>>;
    fn slot<'s, 'a>(out: &'s mut Output<'a>) -> Option<&'s mut ArrayViewMutD<'a, Self>>;
}

impl Typed for f32 {
    fn view<'s, 'a>(op: &'s Operand<'a>) -> Option<&'s ArrayViewD<'a, f32>> {
        if let Operand::F32(a) = op {
            Some(a)
        } else {
            None
        }
    }
    fn slot<'s, 'a>(out: &'s mut Output<'a>) -> Option<&'s mut ArrayViewMutD<'a, f32>> {
        if let Output::F32(a) = out {
            Some(a)
        } else {
            None
        }
    }
}

impl Typed for Complex32 {
    fn view<'s, 'a>(op: &'s Operand<'a>) -> Option<&'s ArrayViewD<'a, Complex32>> {
        if let Operand::C64(a) = op {
            Some(a)
        } else {
            None
        }
    }
    fn slot<'s, 'a>(out: &'s mut Output<'a>) -> Option<&'s mut ArrayViewMutD<'a, Complex32>> {
        if let Output::C64(a) = out {
            Some(a)
        } else {
            None
        }
    }
}

/// `$f::<T>(args…)` for the element type `T` of the sample operand `$op` (float32 or
/// complex64): the one place the two are dispatched.
macro_rules! by_sample {
    ($op:expr, $f:ident ( $($a:expr),* $(,)? )) => {
        match $op {
            $crate::Operand::F32(_) => $f::<f32>($($a),*),
            $crate::Operand::C64(_) => $f::<ptychostitch::Complex32>($($a),*),
            _ => Err(String::from("the samples must be float32 or complex64")),
        }
    };
}
pub(crate) use by_sample;

/// The sample operand `args[i]` of the element type `T`.
pub fn input<'s, 'a, T: Typed>(
    args: &'s [Operand<'a>],
    i: usize,
    what: &str,
) -> Result<&'s ArrayViewD<'a, T>, String> {
    T::view(arg(args, i, what)?).ok_or_else(|| format!("the {what} must have the samples' dtype"))
}

/// The sample result `rets[i]` of the element type `T`.
pub fn output<'s, 'a, T: Typed>(
    rets: &'s mut [Output<'a>],
    i: usize,
    what: &str,
) -> Result<&'s mut ArrayViewMutD<'a, T>, String> {
    T::slot(ret(rets, i, what)?)
        .ok_or_else(|| format!("the {what} result must have the samples' dtype"))
}

/// `rets[i]`, or an error naming what is missing.
pub fn ret<'s, 'a>(
    rets: &'s mut [Output<'a>],
    i: usize,
    what: &str,
) -> Result<&'s mut Output<'a>, String> {
    rets.get_mut(i)
        .ok_or_else(|| format!("the call lacks its {what} result"))
}
