//! The operators on the device kernels: the same operations, the same spec, the framework's
//! buffers in device memory, run through [`ptychostitch::gpu::compose`] on a [`Launcher`] --
//! the CUDA driver on the framework's stream (XLA's, for a custom call compiled for a GPU), or
//! the CPU emulator in the tests, which check every operator against its host implementation
//! bit for bit (`tests/device.rs`).
//!
//! What crosses to the host: for the reassembly, the offsets (`n·2` values, read once per call
//! to plan its canvas and tile lists, which depend on their values) and its tables going back
//! up. The extractions and the region reassembly plan on the device
//! ([`compose::Shifts::From`]: the host's arithmetic, bit for
//! bit): nothing is read back and nothing waits, but for the region reassembly's denominators
//! where its normalisation needs the whole batch's maximum (not PtychoPINN's options). Their
//! non-finite positions, an error on the host, give non-finite results here.

use ndarray::{ArrayD, IxDyn};
use ptychostitch::Extraction;
use ptychostitch::gpu::compose::{self, ExtractVjp, Images, Launcher, Shifts};

/// An element type of a device buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// float32.
    F32,
    /// float64.
    F64,
    /// complex64.
    C64,
    /// bool (one byte).
    Bool,
}

impl DType {
    /// Its name, for errors.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::C64 => "complex64",
            DType::Bool => "bool",
        }
    }
}

/// A dense row-major buffer of the launcher's memory: an operand or a result of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buffer {
    /// The element type.
    pub dtype: DType,
    /// The dims, row-major.
    pub dims: Vec<usize>,
    /// The address of the first element.
    pub address: u64,
}

impl Buffer {
    /// Elements.
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    /// Whether it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `f32` lanes per sample: 1 for float32, 2 for complex64; else an error naming `what`.
    pub fn lanes(&self, what: &str) -> Result<usize, String> {
        match self.dtype {
            DType::F32 => Ok(1),
            DType::C64 => Ok(2),
            other => Err(format!(
                "the {what} must be float32 or complex64, not {}",
                other.name()
            )),
        }
    }

    /// Checks that it holds `len` elements of `lanes` `f32` lanes (the samples' type).
    pub fn expect(&self, what: &str, len: usize, lanes: usize) -> Result<u64, String> {
        if self.lanes(what)? != lanes {
            return Err(format!("the {what} must have the samples' dtype"));
        }
        if self.len() != len {
            return Err(format!(
                "the {what} has shape {:?} ({} elements) where the operation has {len}",
                self.dims,
                self.len()
            ));
        }
        Ok(self.address)
    }
}

/// `buffers[i]`, or an error naming what is missing.
pub fn buffer<'b>(buffers: &'b [Buffer], i: usize, what: &str) -> Result<&'b Buffer, String> {
    buffers
        .get(i)
        .ok_or_else(|| format!("the call lacks its {what}"))
}

/// The offsets or positions, read to the host as `f64` in their dims (what planning needs).
///
/// # Safety
/// `b` must be a live buffer of the launcher's memory, of its dims and dtype.
pub unsafe fn host_values(
    launcher: &mut dyn Launcher,
    b: &Buffer,
    what: &str,
) -> Result<ArrayD<f64>, String> {
    let values = match b.dtype {
        // SAFETY: per this function's contract.
        DType::F64 => unsafe { launcher.read_f64(b.address, b.len()) },
        // SAFETY: per this function's contract.
        DType::F32 => unsafe { launcher.read_f32(b.address, b.len()) }
            .map(|v| v.into_iter().map(f64::from).collect()),
        other => {
            return Err(format!(
                "{what} must be float32 or float64, not {}",
                other.name()
            ));
        }
    }
    .map_err(crate::text)?;
    ArrayD::from_shape_vec(IxDyn(&b.dims), values).map_err(|e| e.to_string())
}

/// Positions the device plans from ([`compose::Shifts::From`]):
/// an array of their dims filled with zeros on the host -- for the shape checks and the plan's
/// sizes; no value is read there -- and where the values are (`per_image`: `C` for PtychoPINN's
/// `(B, 1, 2, C)`, 0 for `[x, y]` rows).
pub fn positions(
    b: &Buffer,
    per_image: usize,
    what: &str,
) -> Result<(ArrayD<f64>, compose::Positions), String> {
    let f64 = match b.dtype {
        DType::F64 => true,
        DType::F32 => false,
        other => {
            return Err(format!(
                "{what} must be float32 or float64, not {}",
                other.name()
            ));
        }
    };
    let at = compose::Positions {
        address: b.address,
        f64,
        per_image,
    };
    Ok((ArrayD::zeros(IxDyn(&b.dims)), at))
}

/// Where the device fold writes an offsets' cotangent: the result itself when it is `f64`,
/// else `f64` scratch that [`OffsetsGrad::finish`] rounds into the `f32` result.
#[derive(Debug, Clone, Copy)]
pub struct OffsetsGrad {
    /// The `f64` the fold writes.
    pub at: u64,
    narrow_into: Option<(u64, usize)>,
}

impl OffsetsGrad {
    /// For the result `ret`, which must hold `len` float32 or float64 values.
    pub fn new(launcher: &mut dyn Launcher, ret: &Buffer, len: usize) -> Result<Self, String> {
        if ret.len() != len {
            return Err(format!(
                "the offsets' cotangent has shape {:?} where the operation has {len} values",
                ret.dims
            ));
        }
        match ret.dtype {
            DType::F64 => Ok(Self {
                at: ret.address,
                narrow_into: None,
            }),
            DType::F32 => Ok(Self {
                at: launcher.zeros_f64(len).map_err(crate::text)?,
                narrow_into: Some((ret.address, len)),
            }),
            other => Err(format!(
                "an offsets' cotangent must be float32 or float64, not {}",
                other.name()
            )),
        }
    }

    /// Rounds the `f64` into the `f32` result, where it is one (the host's `as f32`).
    ///
    /// # Safety
    /// The result buffer must be live, as when [`OffsetsGrad::new`] was given it.
    pub unsafe fn finish(self, launcher: &mut dyn Launcher) -> Result<(), String> {
        match self.narrow_into {
            Some((to, len)) => {
                // SAFETY: `at` holds `len` f64 (scratch of this launcher), `to` `len` f32 (the
                // caller's contract).
                unsafe { compose::narrow(launcher, self.at, to, len) }.map_err(crate::text)
            }
            None => Ok(()),
        }
    }
}

/// An extraction's forward on the device kernels: `images` (checked by the caller against
/// `plan`) into the patches `rets[0]`.
///
/// # Safety
/// As [`run`].
pub unsafe fn extract(
    launcher: &mut dyn Launcher,
    plan: &Extraction,
    (images, shifts): (Images, Shifts),
    rets: &[Buffer],
) -> crate::Outcome {
    let (count, n, _) = plan.output_shape();
    let out = buffer(rets, 0, "patches")?.expect("patches", count * n * n, images.lanes)?;
    // SAFETY: the images (checked by the caller) and the patches (checked here) are the call's
    // buffers, per this function's contract.
    unsafe { compose::extract(launcher, plan, images, shifts, out) }.map_err(crate::text)
}

/// An extraction's backward on the device kernels: `args[3]` the patches' cotangent; `rets`
/// the images' cotangent (`what` names them) and the offsets', as PtychoPINN's `(B, 1, 2, C)`
/// when `channel_layout`, else `(B·C, 2)` rows.
///
/// # Safety
/// As [`run`].
pub unsafe fn extract_vjp(
    launcher: &mut dyn Launcher,
    plan: &Extraction,
    (images, shifts): (Images, Shifts),
    (args, rets): (&[Buffer], &[Buffer]),
    what: &str,
    channel_layout: bool,
) -> crate::Outcome {
    let (count, n, _) = plan.output_shape();
    let (l, s) = (images.lanes, plan.image_side());
    let b = count / plan.per_image().max(1);
    let cot = buffer(args, 3, "cotangent")?.expect("cotangent", count * n * n, l)?;
    let image_grad = buffer(rets, 0, what)?.expect(what, b * s * s, l)?;
    let offsets = OffsetsGrad::new(launcher, buffer(rets, 1, "offsets' cotangent")?, count * 2)?;
    let io = ExtractVjp {
        images,
        cot,
        image_grad,
        offsets_grad: offsets.at,
        channel_layout,
        shifts,
    };
    // SAFETY: as in `extract`, for every buffer of `io` (checked sizes).
    unsafe {
        compose::extract_vjp(launcher, plan, io).map_err(crate::text)?;
        offsets.finish(launcher)
    }
}

/// The error for a spec that asks for the reference implementation on the device.
pub fn host_only(spec: &crate::Spec) -> Result<(), String> {
    if spec.flag("reference")? {
        return Err("the reference implementation runs on the host only".into());
    }
    Ok(())
}

/// Runs `op` (`<OP>` or `<OP>_backward`) on the device kernels.
///
/// # Safety
/// Every buffer of `args` and `rets` must be a live buffer of the launcher's memory of its
/// dims and dtype, the results not aliasing the operands or each other, until the launcher
/// has run the work queued on them.
pub unsafe fn run(
    op: &str,
    spec: &crate::Spec,
    args: &[Buffer],
    rets: &[Buffer],
    launcher: &mut dyn Launcher,
) -> crate::Outcome {
    let (operator, backward) = crate::find(op)?;
    if backward {
        // SAFETY: per this function's contract.
        unsafe { operator.backward_device(spec, args, rets, launcher) }
    } else {
        // SAFETY: per this function's contract.
        unsafe { operator.forward_device(spec, args, rets, launcher) }
    }
}
