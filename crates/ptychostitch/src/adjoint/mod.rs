//! Gradients of the reassembly: vector–Jacobian products of `shift_and_sum` and
//! `reassemble_position` with respect to the patches and the offsets (`docs/semantics.md` §8).
//!
//! The forward is `canvas = Σ_k T(a_k)·crop(patch_k)` with `T(a)` the bilinear translation and
//! `a_k = off_k − mean(off)`. Given the cotangent `G` of the canvas (TensorFlow's and PyTorch's
//! convention for complex values: `∂L/∂Re + i·∂L/∂Im`), this module returns
//! - the patches' cotangent: `T(a_k)ᵀ G`, cropped back to `N×N` (zero outside the kept centre);
//! - the offsets' cotangent: `g_k − mean_j g_j`, where `g_k = Σ G·∂(T(a_k) patch_k)/∂a_k` with the
//!   integer part of every sample position held constant, as TensorFlow's autodiff of
//!   PtychoPINN's code does.
//!
//! For `reassemble_position = I / (1e-9 + W)` the quotient rule runs through both the image `I`
//! and the weight canvas `W`, which also moves with the offsets.
//!
//! Two implementations give one answer, as for the forward: [`reference`] scatters over the
//! whole canvas, literally; [`fast`] gathers over each patch's footprint, one patch per task.
//! Both use [`crate::kernel`]'s per-pixel arithmetic and its fixed-order
//! [`ShiftGradient`] reduction, so their bits are equal for every input and thread count.

pub(crate) mod fast;
pub(crate) mod reference;

use crate::error::{Error, Result};
use crate::kernel::{ShiftGradient, weight_cotangent};
use crate::memory::try_zeroed_vec;
use crate::sample::{Sample, c_order_lanes};
use ndarray::{Array2, Array3, ArrayView2};
use std::borrow::Cow;

/// Which cotangents to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wrt {
    /// The patches' (or images') cotangent.
    pub patches: bool,
    /// The offsets' cotangent.
    pub offsets: bool,
}

impl Wrt {
    /// Both cotangents.
    pub const ALL: Wrt = Wrt {
        patches: true,
        offsets: true,
    };
    /// Only the patches' (images') cotangent.
    pub const PATCHES: Wrt = Wrt {
        patches: true,
        offsets: false,
    };
    /// Only the offsets' cotangent.
    pub const OFFSETS: Wrt = Wrt {
        patches: false,
        offsets: true,
    };
}

/// The result of a vector–Jacobian product.
#[derive(Debug, Clone, PartialEq)]
pub struct Gradients<T> {
    /// `(n, N, N)` cotangent of the patches (for extraction: `(B, S, S)` of the images), when
    /// asked for.
    pub patches: Option<Array3<T>>,
    /// `(n, 2)` cotangent `[x, y]` of the offsets, when asked for.
    pub offsets: Option<Array2<f64>>,
}

/// Checks a canvas-shaped argument (`what`: the cotangent or the forward's output) is `(S, S)`
/// and returns its C-ordered lanes (borrowed, or copied if strided).
pub(crate) fn canvas_lanes<'v, T: Sample>(
    side: usize,
    what: &'static str,
    canvas: ArrayView2<'v, T>,
) -> Result<Cow<'v, [f32]>> {
    if canvas.dim() != (side, side) {
        return Err(Error::CotangentShape {
            what,
            expected: vec![side, side],
            found: canvas.shape().to_vec(),
        });
    }
    c_order_lanes(canvas, || format!("a {side}×{side} {what} canvas"))
}

/// `g_k − mean_j g_j` (the derivative of the re-centring), as an `(n, 2)` array.
///
/// The mean is an `f64` sum in patch order by blocks ([`crate::kernel::blocked_sum`], as the
/// GPU's fold sums it) divided by `n`.
pub(crate) fn centred(raw: &[[f64; 2]]) -> Array2<f64> {
    let n = raw.len() as f64;
    let sum = [0, 1].map(|axis| crate::kernel::blocked_sum(raw.len(), |j| raw[j][axis]));
    let mean = [sum[0] / n, sum[1] / n];
    let mut out = Array2::zeros((raw.len(), 2));
    for (mut row, g) in out.rows_mut().into_iter().zip(raw) {
        row[0] = g[0] - mean[0];
        row[1] = g[1] - mean[1];
    }
    out
}

/// Per-patch raw shift gradients `[∂L/∂a_x, ∂L/∂a_y]`.
pub(crate) fn raw_shifts(sums: &[ShiftGradient]) -> Vec<[f64; 2]> {
    sums.iter().map(ShiftGradient::shift_gradient).collect()
}

/// The offsets' cotangent of the reassembly from the partial sums of the image's translation
/// and, for `reassemble_position`, of the weight canvas's: each folded
/// ([`ShiftGradient::shift_gradient`]), the two added per patch, then re-centred. The one fold
/// of the CPU paths; the GPU's is `ptychostitch_offsets_fold` in `kernel.cu`, the same arithmetic.
pub(crate) fn offsets_cotangent(
    image: &[ShiftGradient],
    weights: Option<&[ShiftGradient]>,
) -> Array2<f64> {
    let mut raw = raw_shifts(image);
    if let Some(weights) = weights {
        for (r, o) in raw.iter_mut().zip(raw_shifts(weights)) {
            r[0] += o[0];
            r[1] += o[1];
        }
    }
    centred(&raw)
}

/// The quotient rule of `R = I / (1e-9 + W)`: from the cotangent `G` of `R`, the cotangent of
/// `I` (`G` divided as the forward divides, [`Sample::normalise`]) and, when `output` is given,
/// of `W` (`−Σ_lanes G·R / (W + 1e-9)`, [`weight_cotangent`]).
pub(crate) fn quotient<T: Sample>(
    cot: &[f32],
    weights: &[f32],
    output: Option<&[f32]>,
) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
    let l = T::LANES;
    let mut gi = try_zeroed_vec::<f32>(cot.len(), || "the image cotangent canvas".into())?;
    gi.copy_from_slice(cot);
    for (pixel, &w) in gi.chunks_exact_mut(l).zip(weights) {
        T::normalise(pixel, w);
    }
    let gw = match output {
        None => None,
        Some(out) => {
            let mut gw =
                try_zeroed_vec::<f32>(weights.len(), || "the weight cotangent canvas".into())?;
            for (((g, c), o), &w) in gw
                .iter_mut()
                .zip(cot.chunks_exact(l))
                .zip(out.chunks_exact(l))
                .zip(weights)
            {
                *g = weight_cotangent(c, o, w);
            }
            Some(gw)
        }
    };
    Ok((gi, gw))
}

use crate::Implementation;
use crate::plan::{Operation, Plan};
use ndarray::{ArrayView, ArrayView3, Dimension};

impl Plan {
    /// The vector–Jacobian product of [`Plan::shift_and_sum`]: from the `(S, S)` cotangent of
    /// the canvas, the cotangents of the patches (`(n, N, N)`, zero outside the kept centre) and
    /// of the offsets (`(n, 2)`, `[x, y]`), as `wrt` asks. Fast path, bit-identical to
    /// [`Plan::shift_and_sum_vjp_reference`] for every thread count.
    ///
    /// ```
    /// use ndarray::{Array2, Array3};
    /// use ptychostitch::{Plan, Wrt};
    ///
    /// let offsets = Array2::from_shape_vec((2, 2), vec![0.0, 0.0, 3.5, 1.25]).unwrap();
    /// let plan = Plan::new(offsets.view(), 32, 16).unwrap();
    /// let patches = Array3::<f32>::ones((2, 32, 32));
    /// let cot = Array2::<f32>::ones(plan.canvas_shape());
    /// let grads = plan.shift_and_sum_vjp(patches.view(), cot.view(), Wrt::ALL).unwrap();
    /// // Every kept pixel lands with total weight 1, so the sum's gradient is 1 there.
    /// assert_eq!(grads.patches.unwrap()[[0, 16, 16]], 1.0);
    /// // Offsets' gradients sum to zero (the mean is subtracted before translating).
    /// let g = grads.offsets.unwrap();
    /// assert!((g[[0, 0]] + g[[1, 0]]).abs() < 1e-9);
    /// ```
    pub fn shift_and_sum_vjp<T: Sample, D: Dimension>(
        &self,
        patches: ArrayView<'_, T, D>,
        cotangent: ArrayView2<'_, T>,
        wrt: Wrt,
    ) -> Result<Gradients<T>> {
        self.vjp_by(
            Operation::ShiftAndSum,
            Implementation::Fast,
            patches,
            None,
            cotangent,
            wrt,
        )
    }

    /// The reference (oracle) of [`Plan::shift_and_sum_vjp`]: `O(n·S²)`, one thread.
    pub fn shift_and_sum_vjp_reference<T: Sample, D: Dimension>(
        &self,
        patches: ArrayView<'_, T, D>,
        cotangent: ArrayView2<'_, T>,
        wrt: Wrt,
    ) -> Result<Gradients<T>> {
        self.vjp_by(
            Operation::ShiftAndSum,
            Implementation::Reference,
            patches,
            None,
            cotangent,
            wrt,
        )
    }

    /// The vector–Jacobian product of [`Plan::reassemble_position`], through the quotient
    /// `I / (1e-9 + W)` (the weights `W` move with the offsets too).
    ///
    /// `output` is the forward's result for these patches, which the offsets' cotangent needs;
    /// pass it when you have it (autodiff frameworks keep it), or `None` to recompute it. The
    /// patches' cotangent needs only the (cached) weights.
    pub fn reassemble_position_vjp<T: Sample, D: Dimension>(
        &self,
        patches: ArrayView<'_, T, D>,
        output: Option<ArrayView2<'_, T>>,
        cotangent: ArrayView2<'_, T>,
        wrt: Wrt,
    ) -> Result<Gradients<T>> {
        self.vjp_by(
            Operation::ReassemblePosition,
            Implementation::Fast,
            patches,
            output,
            cotangent,
            wrt,
        )
    }

    /// The reference (oracle) of [`Plan::reassemble_position_vjp`].
    pub fn reassemble_position_vjp_reference<T: Sample, D: Dimension>(
        &self,
        patches: ArrayView<'_, T, D>,
        output: Option<ArrayView2<'_, T>>,
        cotangent: ArrayView2<'_, T>,
        wrt: Wrt,
    ) -> Result<Gradients<T>> {
        self.vjp_by(
            Operation::ReassemblePosition,
            Implementation::Reference,
            patches,
            output,
            cotangent,
            wrt,
        )
    }

    /// The vector–Jacobian product of `op` by this plan's implementation
    /// ([`Plan::with_implementation`]): the one entry the front ends dispatch through (the
    /// named methods above are the same with fixed arguments). `output` is used by
    /// [`Operation::ReassemblePosition`] only (see [`Plan::reassemble_position_vjp`]).
    pub fn vjp<T: Sample, D: Dimension>(
        &self,
        op: Operation,
        patches: ArrayView<'_, T, D>,
        output: Option<ArrayView2<'_, T>>,
        cotangent: ArrayView2<'_, T>,
        wrt: Wrt,
    ) -> Result<Gradients<T>> {
        self.vjp_by(op, self.implementation(), patches, output, cotangent, wrt)
    }

    fn vjp_by<T: Sample, D: Dimension>(
        &self,
        op: Operation,
        path: Implementation,
        patches: ArrayView<'_, T, D>,
        output: Option<ArrayView2<'_, T>>,
        cotangent: ArrayView2<'_, T>,
        wrt: Wrt,
    ) -> Result<Gradients<T>> {
        let g = self.geometry();
        let stack = g.check_patches(patches)?;
        let side = g.side();
        let cot = canvas_lanes(side, "cotangent", cotangent)?;
        let translate = |cot: &[f32], want_patches: bool| match path {
            Implementation::Reference => {
                reference::translate_vjp(g, stack, cot, want_patches, wrt.offsets, self.interrupt())
            }
            Implementation::Fast => fast::translate_vjp(
                g,
                fast::Source::Patches(stack),
                cot,
                want_patches,
                wrt.offsets,
                self.schedule(),
            ),
        };
        let (grads, offsets) = match op {
            Operation::ShiftAndSum => {
                let (grads, sums) = translate(&cot, wrt.patches)?;
                (grads, offsets_cotangent(&sums, None))
            }
            Operation::ReassemblePosition => {
                let weights: Cow<'_, Array2<f32>> = match path {
                    Implementation::Reference => Cow::Owned(self.weights_reference()?),
                    Implementation::Fast => Cow::Borrowed(self.weights()?),
                };
                let weights = weights.as_slice().unwrap_or_default();
                // The forward's output is needed only for the offsets: recomputed when not given.
                let fresh = match (wrt.offsets, output) {
                    (true, None) => Some(match path {
                        Implementation::Reference => self.reassemble_position_reference(stack)?,
                        Implementation::Fast => self.reassemble_position(stack)?,
                    }),
                    _ => None,
                };
                let output = match output.or_else(|| fresh.as_ref().map(|f| f.view())) {
                    Some(o) if wrt.offsets => Some(canvas_lanes(side, "output", o)?),
                    _ => None,
                };
                let (gi, gw) = quotient::<T>(&cot, weights, output.as_deref())?;
                let (grads, sums) = translate(&gi, wrt.patches)?;
                let ones = gw
                    .map(|gw| self.translate_ones_vjp(path, &gw))
                    .transpose()?;
                (grads, offsets_cotangent(&sums, ones.as_deref()))
            }
        };
        let n = g.patch_size();
        Ok(Gradients {
            patches: grads.map(|v| {
                Array3::from_shape_vec((g.len(), n, n), v)
                    .expect("n·N·N values for an (n, N, N) stack")
            }),
            offsets: wrt.offsets.then_some(offsets),
        })
    }

    /// Offset sums of the weight canvas (patches of ones) for the cotangent `gw`.
    fn translate_ones_vjp(&self, path: Implementation, gw: &[f32]) -> Result<Vec<ShiftGradient>> {
        let g = self.geometry();
        Ok(match path {
            Implementation::Reference => {
                let n = g.patch_size();
                let len = g.len() * n * n;
                let mut ones =
                    try_zeroed_vec::<f32>(len, || format!("{len} ones of the reference gradient"))?;
                ones.fill(1.0);
                let ones = ArrayView3::from_shape((g.len(), n, n), &ones)
                    .expect("n·N·N values for an (n, N, N) stack");
                reference::translate_vjp(g, ones, gw, false, true, self.interrupt())?.1
            }
            Implementation::Fast => {
                fast::translate_vjp::<f32>(g, fast::Source::Ones, gw, false, true, self.schedule())?
                    .1
            }
        })
    }
}
