//! The training-path operator: batched region reassembly, one canvas per sample, with a
//! weighted normalisation (`docs/semantics.md` §10).
//!
//! PtychoPINN's training step reassembles the `C = gridsize²` patches of each sample onto a
//! `P×P` region of its own (TensorFlow's `ReassemblePatchesLayer`, torch's
//! `reassemble_patches_position_real`), divides by the same reassembly of a weight (a centre
//! mask, ones, `|probe|²`), and cuts the patches back out. For sample `b`, canvas pixel `p`:
//!
//! ```text
//! u_c(p) = T(t_bc)·x_bc (p)          the patch, zero-padded to P×P and translated
//! v_c(p) = T(t_bc)·w_bc (p)          its weight, translated the same way
//! num(p) = Σ_c u_c(p)                (Numerator::Sum, TensorFlow)
//!        | Σ_c u_c(p)·v_c(p)         (Numerator::Weighted, torch)
//! den(p) = Σ_c v_c(p)
//! out(p) = num(p)·k(p) / g(den(p))   g: Denominator, k: the optional support mask
//! ```
//!
//! Channels are summed in order from `+0.0`. The translation `t_bc = −(pos_bc − centre)`
//! moves content by minus the position (both frameworks' sign), with `centre` the `f32` mean
//! of all `B·C` positions when [`RegionOptions::recentre`] is set (TensorFlow) and zero
//! otherwise (torch). The arithmetic of one sample is [`Convention`]'s.
//!
//! As everywhere in the crate, a literal `reference` (each patch padded to the whole region
//! and translated whole) is the oracle and a `fast` path (only each patch's `(N+1)²`
//! footprint, samples in parallel) gives the same bits for every input and thread count; they
//! share only [`crate::kernel`]'s per-pixel arithmetic. Memory stays `O(B·P² + B·C·N²)`: no
//! `B·C·P²` buffer exists on the fast path.

pub(crate) mod fast;
pub(crate) mod reference;

use crate::Implementation;
use crate::adjoint::centred;
use crate::error::{Error, Result};
use crate::geometry::{centre_of_mass, offset_pairs};
use crate::kernel::ShiftGradient;
pub use crate::kernel::{Convention, Denominator};
use crate::memory;
use crate::parallel::{Schedule, Simd};
use crate::sample::{Sample, c_order_lanes};
use ndarray::{Array2, Array3, Array4, ArrayView, ArrayView3, ArrayView4, Dimension};
use std::borrow::Cow;

/// What the numerator sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Numerator {
    /// `Σ_c u_c`: the translated patches (TensorFlow's `reassemble_patches`).
    #[default]
    Sum,
    /// `Σ_c u_c·v_c`: each translated patch times its translated weight (torch's centre-mask and
    /// probe paths).
    Weighted,
}

/// Where the support mask holds: `den > threshold`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// `den > value`.
    Above(f32),
    /// `den > fraction · max(den)`, the maximum over every sample's region (torch's probe path;
    /// a NaN anywhere makes the maximum NaN and the mask empty, as torch's `max` does).
    AboveMaxFraction(f32),
}

/// The options of a region reassembly; [`RegionOptions::tensorflow`] and
/// [`RegionOptions::torch_center_mask`] are PtychoPINN's two training paths.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionOptions {
    /// Whose translation arithmetic.
    pub convention: Convention,
    /// Re-centre the positions on their `f32` mean over all `B·C` (TensorFlow's
    /// `_center_reassembly_offsets`).
    pub recentre: bool,
    /// What the numerator sums.
    pub numerator: Numerator,
    /// `g(den)`.
    pub denominator: Denominator,
    /// A support mask multiplied into the numerator before the division, or none.
    pub support: Option<Threshold>,
}

impl RegionOptions {
    /// PtychoPINN's TensorFlow `ReassemblePatchesLayer`: re-centred, `Σ u / (Σ v + 0.001)`.
    pub const fn tensorflow() -> Self {
        Self {
            convention: Convention::TensorFlow,
            recentre: true,
            numerator: Numerator::Sum,
            denominator: Denominator::Add(0.001),
            support: None,
        }
    }

    /// Checks that the normalisation is defined for every non-negative weight: `ε` (added,
    /// clamped to, the affine offset) finite and positive, `scale` finite and non-negative, the
    /// regularised form's fraction `α` in `(0, 1]` (at 0 its denominator `scale·Σw` is 0 where
    /// no weight lands), support thresholds finite (a fraction of the maximum in `[0, 1]`).
    /// [`Region::new`] calls it; the error names the parameter as the Python functions do.
    pub fn validate(&self) -> Result<()> {
        const POSITIVE: &str = "finite and > 0";
        let bad = |parameter, value: f32, reason, expected| {
            Err(Error::Normalisation {
                parameter,
                value,
                reason,
                expected,
            })
        };
        let positive = |value: f32, reason| {
            if value.is_finite() && value > 0.0 {
                Ok(())
            } else {
                bad("epsilon", value, reason, POSITIVE)
            }
        };
        let scale = |value: f32| {
            if value.is_finite() && value >= 0.0 {
                Ok(())
            } else {
                bad(
                    "scale",
                    value,
                    "would give a negative or undefined denominator",
                    "finite and >= 0",
                )
            }
        };
        match self.denominator {
            Denominator::Add(eps) => positive(
                eps,
                "is added to Σw, which is 0 wherever no weight lands (the result would be NaN or inf there)",
            )?,
            Denominator::Clamp(eps) => positive(
                eps,
                "is the denominator's floor max(Σw, ε), 0 wherever no weight lands (the result would be NaN or inf there)",
            )?,
            Denominator::One => {}
            Denominator::Affine { scale: s, offset } => {
                scale(s)?;
                positive(
                    offset,
                    "is the denominator scale·Σw + ε where no weight lands (the result would be NaN or inf there)",
                )?;
            }
            Denominator::Regularised {
                scale: s,
                max_fraction,
            } => {
                // α first: its default scale 1 − α is negative where α is out of range.
                if !(max_fraction > 0.0 && max_fraction <= 1.0) {
                    return bad(
                        "epsilon",
                        max_fraction,
                        "is the regularised form's α (at 0 the denominator scale·Σw is 0 wherever no weight lands)",
                        "0 < epsilon <= 1",
                    );
                }
                scale(s)?;
            }
        }
        match self.support {
            None => Ok(()),
            Some(Threshold::Above(t)) if t.is_finite() => Ok(()),
            Some(Threshold::Above(t)) => bad(
                "support",
                t,
                "is the threshold t of the mask Σw > t",
                "a finite threshold",
            ),
            Some(Threshold::AboveMaxFraction(f)) if (0.0..=1.0).contains(&f) => Ok(()),
            Some(Threshold::AboveMaxFraction(f)) => bad(
                "support",
                f,
                "is the fraction f of the mask Σw > f·max(Σw)",
                "0 <= f <= 1",
            ),
        }
    }

    /// PtychoPINN's torch `reassemble_patches_position_real` (centre-mask path): not
    /// re-centred, `(Σ u·v)·[Σ v > 1e-6] / (Σ v + 0.001)`.
    pub const fn torch_center_mask() -> Self {
        Self {
            convention: Convention::Torch,
            recentre: false,
            numerator: Numerator::Weighted,
            denominator: Denominator::Add(0.001),
            support: Some(Threshold::Above(1e-6)),
        }
    }
}

/// Which cotangents a [`Region::vjp`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionWrt {
    /// The patches'.
    pub patches: bool,
    /// The positions'.
    pub positions: bool,
    /// The weights'.
    pub weights: bool,
}

impl RegionWrt {
    /// Every cotangent.
    pub const ALL: RegionWrt = RegionWrt {
        patches: true,
        positions: true,
        weights: true,
    };
}

/// The cotangents of a region reassembly, in the shapes of its inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionGradients<T> {
    /// `(B, C, N, N)`, when asked for.
    pub patches: Option<Array4<T>>,
    /// `(B·C, 2)` `[x, y]`, when asked for.
    pub positions: Option<Array2<f64>>,
    /// The weights' shape `(1 | B, 1 | C, N, N)`, summed over the axes they are broadcast
    /// along (in sample-major order), when asked for.
    pub weights: Option<Array4<f32>>,
}

/// A region-reassembly plan: positions, shapes and options, validated once.
///
/// ```
/// use ndarray::{Array2, Array4};
/// use ptychostitch::region::{Region, RegionOptions};
///
/// // Two samples of two 8×8 patches on 12×12 regions, PtychoPINN's TensorFlow training path.
/// let positions = Array2::from_shape_vec((4, 2), vec![-1.0, 0.0, 1.0, 0.0, 0.0, -1.5, 0.0, 1.5]).unwrap();
/// let plan = Region::new(positions.view(), 2, 8, 12, RegionOptions::tensorflow()).unwrap();
/// let patches = Array4::<f32>::from_elem((2, 2, 8, 8), 3.0);
/// let mut mask = Array4::<f32>::zeros((1, 1, 8, 8));
/// mask.slice_mut(ndarray::s![.., .., 2..6, 2..6]).fill(1.0);
/// let regions = plan.reassemble(patches.view(), mask.view()).unwrap();
/// assert_eq!(regions.dim(), (2, 12, 12));
/// // Where the masks overlap, 3·count / (count + 0.001).
/// assert!((regions[[0, 6, 6]] - 6.0 / 2.001).abs() < 1e-5);
/// ```
#[derive(Debug, Clone)]
pub struct Region {
    samples: usize,
    channels: usize,
    patch: usize,
    side: usize,
    origin: usize,
    options: RegionOptions,
    shifts: Vec<[f32; 2]>,
    schedule: Schedule,
    implementation: Implementation,
}

impl Region {
    /// Plans `samples` regions of `side × side` (`P`) pixels from `N×N` patches (`patch`) at
    /// `positions` `[x, y]` (`B·C` of them, sample-major: row `b·C + c`; any `(B·C, …)` shape
    /// whose trailing axes hold two values). Each patch is zero-padded to `P×P` with
    /// `(P − N)/2` (rounded down) zeros before it on each axis, as PtychoPINN pads.
    pub fn new<D: Dimension>(
        positions: ArrayView<'_, f64, D>,
        samples: usize,
        patch: usize,
        side: usize,
        options: RegionOptions,
    ) -> Result<Self> {
        options.validate()?;
        let pairs = offset_pairs(positions)?;
        if samples == 0 {
            return Err(Error::NoSamples);
        }
        if pairs.is_empty() {
            return Err(Error::NoPatches);
        }
        if patch == 0 || side < patch || side < 2 {
            return Err(Error::RegionSize { side, patch });
        }
        if pairs.len() % samples != 0 {
            return Err(Error::RegionCount {
                samples,
                positions: pairs.len(),
            });
        }
        let (single, centre) = centre_of_mass(&pairs)?;
        let centre = if options.recentre { centre } else { [0.0, 0.0] };
        // t = −(pos − centre): content moves by minus the position (an exact negation).
        let mut shifts = memory::try_with_capacity(single.len(), || "the translations".into())?;
        shifts.extend(
            single
                .iter()
                .map(|p| [-(p[0] - centre[0]), -(p[1] - centre[1])]),
        );
        // In f64: `side * side` overflows usize for P ≥ 2³² (it wrapped to a small number, and
        // a region of 2⁶⁰ pixels passed this check).
        let lanes = 2.0; // complex, the larger case
        let bytes = samples as f64 * (side as f64 * side as f64) * 4.0 * (lanes + 1.0);
        memory::check(bytes, side as f64).map_err(|error| match error {
            Error::CanvasTooLarge {
                side,
                needed_bytes,
                limit_bytes,
                limit_source,
            } => Error::RegionTooLarge {
                side,
                samples,
                needed_bytes,
                limit_bytes,
                limit_source,
            },
            other => other,
        })?;
        Ok(Self {
            samples,
            channels: pairs.len() / samples,
            patch,
            side,
            origin: (side - patch) / 2,
            options,
            shifts,
            schedule: Schedule::default(),
            implementation: Implementation::Fast,
        })
    }

    /// Splits the work for `threads` workers (0, the default: all cores). The result does not
    /// depend on it.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.schedule.threads = threads;
        self
    }

    /// Uses fewer workers when each would get fewer than `pixels` footprint pixels (0: always
    /// all, as the tests do). The result does not depend on it.
    pub fn with_min_pixels_per_worker(mut self, pixels: usize) -> Self {
        self.schedule.min_pixels_per_worker = pixels;
        self
    }

    /// Runs `implementation`: the fast path (the default) or the reference, the oracle (same
    /// bits).
    pub fn with_implementation(mut self, implementation: Implementation) -> Self {
        self.implementation = implementation;
        self
    }

    /// Which instruction set the fast path may use ([`Simd::Portable`]: no FMA instructions,
    /// each `mul_add` a call; the same bits).
    pub fn with_simd(mut self, simd: Simd) -> Self {
        self.schedule.simd = simd;
        self
    }

    /// Number of samples `B`.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Patches per sample `C`.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Region side `P`.
    pub fn side(&self) -> usize {
        self.side
    }

    /// Patch side `N`.
    pub fn patch_size(&self) -> usize {
        self.patch
    }

    /// The options.
    pub fn options(&self) -> RegionOptions {
        self.options
    }

    /// Each patch's translation `t = −(pos − centre)` `[x, y]` in `f32`.
    pub fn shifts(&self) -> &[[f32; 2]] {
        &self.shifts
    }

    /// `(P − N)/2`: where each patch's first pixel lies in its zero-padded `P×P` frame.
    pub fn origin(&self) -> usize {
        self.origin
    }

    /// Whether the normalisation depends on the whole batch's denominators (a support
    /// threshold relative to their maximum, or the regularised form's maximum); otherwise
    /// [`Region::normalisation`] and [`Region::maximum`] need none and take an empty slice.
    pub fn needs_batch_facts(&self) -> bool {
        matches!(self.options.support, Some(Threshold::AboveMaxFraction(_)))
            || matches!(self.options.denominator, Denominator::Regularised { .. })
    }

    /// What the backward needs besides [`Region::normalisation`]: the first index of the
    /// maximum denominator and the fraction of it in the denominator, for
    /// [`Denominator::Regularised`] (`None` and 0 otherwise).
    pub fn maximum(&self, den: &[f32]) -> Result<(Option<usize>, f32)> {
        let Normalisation { argmax, .. } = Normalisation::of(self, den)?;
        Ok(match self.options.denominator {
            Denominator::Regularised { max_fraction, .. } => (argmax, max_fraction),
            _ => (None, 0.0),
        })
    }

    /// The normalisation's whole-batch facts from the `B·P·P` denominators `Σ w` (what a
    /// driver that computes the sums elsewhere, a GPU, needs to divide as this plan divides):
    /// the support threshold (`None` without a support mask) and the denominator's form,
    /// resolved against the maximum for [`Denominator::Regularised`].
    /// [`Error::ZeroDenominator`] where the regularised form's maximum is 0 (all-zero weights).
    pub fn normalisation(&self, den: &[f32]) -> Result<(Option<f32>, Denominator)> {
        let Normalisation { limit, g, .. } = Normalisation::of(self, den)?;
        Ok((self.options.support.map(|_| limit), g))
    }

    /// The `(B, P, P)` regions.
    pub fn reassemble<T: Sample>(
        &self,
        patches: ArrayView4<'_, T>,
        weights: ArrayView4<'_, f32>,
    ) -> Result<Array3<T>> {
        let inputs = self.inputs(patches, weights)?;
        let out = match self.implementation {
            Implementation::Fast => fast::reassemble(self, &inputs)?,
            Implementation::Reference => reference::reassemble(self, &inputs)?,
        };
        Ok(self.regions(out))
    }

    /// The support mask `den > threshold` of each region, `(B, P, P)` (fast path; the mask does
    /// not depend on the patches).
    pub fn support(
        &self,
        weights: ArrayView4<'_, f32>,
        threshold: Threshold,
    ) -> Result<Array3<bool>> {
        let weights = self.weights(weights)?;
        let den = fast::denominators(self, &weights)?;
        let limit = threshold_value(threshold, &den);
        let (b, p) = (self.samples, self.side);
        Ok(
            Array3::from_shape_vec((b, p, p), den.iter().map(|&d| d > limit).collect())
                .expect("B·P·P values"),
        )
    }

    /// The vector–Jacobian product of [`Region::reassemble`]: from the `(B, P, P)` cotangent of
    /// the regions, the cotangents `wrt` asks for. `output` is the forward's result for these
    /// inputs, as [`crate::Plan::vjp`] takes it: pass it when you have it (autodiff frameworks
    /// keep it) and the fast path sums only the denominators again, not the numerators; `None`
    /// recomputes it. The reference always recomputes.
    pub fn vjp<T: Sample>(
        &self,
        patches: ArrayView4<'_, T>,
        weights: ArrayView4<'_, f32>,
        output: Option<ArrayView3<'_, T>>,
        cotangent: ArrayView3<'_, T>,
        wrt: RegionWrt,
    ) -> Result<RegionGradients<T>> {
        let inputs = self.inputs(patches, weights)?;
        let cot = self.cotangent_lanes(cotangent)?;
        let output = output.map(|o| self.region_lanes(o, "output")).transpose()?;
        let raw = match self.implementation {
            Implementation::Fast => fast::vjp(self, &inputs, output.as_deref(), &cot, wrt)?,
            Implementation::Reference => reference::vjp(self, &inputs, &cot, wrt)?,
        };
        self.gradients(raw, &inputs, wrt)
    }

    fn regions<T: Sample>(&self, out: Vec<T>) -> Array3<T> {
        Array3::from_shape_vec((self.samples, self.side, self.side), out).expect("B·P·P values")
    }

    fn inputs<'v, T: Sample>(
        &self,
        patches: ArrayView4<'v, T>,
        weights: ArrayView4<'v, f32>,
    ) -> Result<Inputs<'v>> {
        let (b, c, n) = (self.samples, self.channels, self.patch);
        if patches.dim() != (b, c, n, n) {
            return Err(Error::RegionShape {
                what: "patches",
                expected: format!("({b}, {c}, {n}, {n})"),
                found: patches.shape().to_vec(),
            });
        }
        Ok(Inputs {
            patches: c_order_lanes(patches, || "a copy of the patches".into())?,
            weights: self.weights(weights)?,
        })
    }

    fn weights<'v>(&self, weights: ArrayView4<'v, f32>) -> Result<WeightLanes<'v>> {
        let (b, c, n) = (self.samples, self.channels, self.patch);
        let (wb, wc, wn, wm) = weights.dim();
        if !((wb == 1 || wb == b) && (wc == 1 || wc == c) && wn == n && wm == n) {
            return Err(Error::RegionShape {
                what: "weights",
                expected: format!("(1 or {b}, 1 or {c}, {n}, {n})"),
                found: weights.shape().to_vec(),
            });
        }
        Ok(WeightLanes {
            values: c_order_lanes(weights, || "a copy of the weights".into())?,
            per_sample: wb != 1,
            per_channel: wc != 1,
        })
    }

    /// The regions' cotangent `(B, P, P)` as C-ordered lanes (borrowed, or copied if strided),
    /// or the error for another shape: what every VJP of this plan reads.
    pub fn cotangent_lanes<'v, T: Sample>(&self, cot: ArrayView3<'v, T>) -> Result<Cow<'v, [f32]>> {
        self.region_lanes(cot, "cotangent")
    }

    /// A `(B, P, P)` array of the regions' shape (`what` names it in errors) as C-order lanes.
    fn region_lanes<'v, T: Sample>(
        &self,
        values: ArrayView3<'v, T>,
        what: &'static str,
    ) -> Result<Cow<'v, [f32]>> {
        let (b, p) = (self.samples, self.side);
        if values.dim() != (b, p, p) {
            return Err(Error::CotangentShape {
                what,
                expected: vec![b, p, p],
                found: values.shape().to_vec(),
            });
        }
        c_order_lanes(values, || format!("a copy of the {what}"))
    }

    fn gradients<T: Sample>(
        &self,
        raw: RawGradients<T>,
        inputs: &Inputs<'_>,
        wrt: RegionWrt,
    ) -> Result<RegionGradients<T>> {
        let (b, c, n) = (self.samples, self.channels, self.patch);
        let positions = wrt.positions.then(|| {
            // t = −(pos − centre): dL/dpos = −(g − mean g) re-centred, −g otherwise.
            let g: Vec<[f64; 2]> = raw.sums.iter().map(|s| s.shift_gradient()).collect();
            if self.options.recentre {
                -centred(&g)
            } else {
                -Array2::from(g)
            }
        });
        let weights = match raw.weights {
            Some(per_patch) => Some(fold_weights(&per_patch, &inputs.weights, b, c, n)?),
            None => None,
        };
        Ok(RegionGradients {
            patches: raw
                .patches
                .map(|v| Array4::from_shape_vec((b, c, n, n), v).expect("B·C·N·N values")),
            positions,
            weights,
        })
    }
}

/// The checked inputs as C-ordered lanes.
pub(crate) struct Inputs<'v> {
    pub patches: Cow<'v, [f32]>,
    pub weights: WeightLanes<'v>,
}

/// The weights `(1 | B, 1 | C, N, N)` as lanes, with the patch `j = b·C + c` → weight map.
pub(crate) struct WeightLanes<'v> {
    pub values: Cow<'v, [f32]>,
    pub per_sample: bool,
    pub per_channel: bool,
}

impl WeightLanes<'_> {
    /// Which `N×N` weight patch `(b, c)` uses.
    pub fn index(&self, b: usize, c: usize, channels: usize) -> usize {
        match (self.per_sample, self.per_channel) {
            (true, true) => b * channels + c,
            (true, false) => b,
            (false, true) => c,
            (false, false) => 0,
        }
    }

    /// Number of `N×N` weight patches.
    fn count(&self, samples: usize, channels: usize) -> usize {
        (if self.per_sample { samples } else { 1 }) * (if self.per_channel { channels } else { 1 })
    }
}

/// What a VJP path returns before the positions' re-centring and the weights' fold.
pub(crate) struct RawGradients<T> {
    pub patches: Option<Vec<T>>,
    /// One per patch: `∂L/∂t` from the patch and from its weight.
    pub sums: Vec<ShiftGradient>,
    /// `(B·C, N, N)`: each patch's weight cotangent, before the fold.
    pub weights: Option<Vec<f32>>,
}

impl<T: Sample> RawGradients<T> {
    /// Zeroed buffers for what `wrt` asks (patches `B·C·N²`, per-patch weights `B·C·N²`) and one
    /// empty offset-gradient reduction per patch, each allocated fallibly.
    pub(crate) fn zeroed(plan: &Region, wrt: RegionWrt) -> Result<Self> {
        let count = plan.samples * plan.channels;
        let nn = plan.patch * plan.patch;
        Ok(Self {
            patches: match wrt.patches {
                true => Some(memory::try_zeroed_vec(count * nn, || {
                    "the patches' cotangent".into()
                })?),
                false => None,
            },
            sums: memory::try_filled_vec(count, ShiftGradient::default(), || {
                "the positions' gradients".into()
            })?,
            weights: match wrt.weights {
                true => Some(memory::try_zeroed_vec(count * nn, || {
                    "the weights' cotangent".into()
                })?),
                false => None,
            },
        })
    }
}

/// Sums the per-patch weight cotangents over the axes the weights are broadcast along, patch
/// order (`b` major, `c` minor), from `+0.0`.
fn fold_weights(
    per_patch: &[f32],
    weights: &WeightLanes<'_>,
    samples: usize,
    channels: usize,
    n: usize,
) -> Result<Array4<f32>> {
    let nn = n * n;
    let count = weights.count(samples, channels);
    let mut out = memory::try_zeroed_vec::<f32>(count * nn, || "the weights' cotangent".into())?;
    for b in 0..samples {
        for c in 0..channels {
            let j = b * channels + c;
            let dst = weights.index(b, c, channels) * nn;
            for (o, v) in out[dst..dst + nn]
                .iter_mut()
                .zip(&per_patch[j * nn..(j + 1) * nn])
            {
                *o += v;
            }
        }
    }
    let wb = if weights.per_sample { samples } else { 1 };
    let wc = if weights.per_channel { channels } else { 1 };
    Ok(Array4::from_shape_vec((wb, wc, n, n), out).expect("weight values"))
}

/// The mask's threshold for these denominators.
pub(crate) fn threshold_value(threshold: Threshold, den: &[f32]) -> f32 {
    match threshold {
        Threshold::Above(value) => value,
        Threshold::AboveMaxFraction(fraction) => {
            let mut max = f32::NEG_INFINITY;
            for &v in den {
                if v.is_nan() {
                    max = v;
                    break;
                }
                if v > max {
                    max = v;
                }
            }
            max * fraction
        }
    }
}

/// What the normalisation of these regions needs from all of them at once: the support mask's
/// threshold, the denominator (at the regions' maximum, for the regularised form) and where that
/// maximum lies.
pub(crate) struct Normalisation {
    pub limit: f32,
    pub g: Denominator,
    pub argmax: Option<usize>,
}

impl Normalisation {
    pub(crate) fn of(plan: &Region, den: &[f32]) -> Result<Self> {
        let limit = plan
            .options
            .support
            .map_or(0.0, |t| threshold_value(t, den));
        let (g, argmax) = resolved(plan.options.denominator, den)?;
        Ok(Self { limit, g, argmax })
    }
}

/// The denominator at these regions' maximum, and where the maximum lies (its first index, in
/// sample-major row-major order) when the form depends on it ([`Denominator::Regularised`]).
/// A maximum that is not positive (all-zero weights) would make the denominator 0 wherever no
/// weight lands: [`Error::ZeroDenominator`] (a NaN maximum stays NaN, as torch's `max`).
pub(crate) fn resolved(g: Denominator, den: &[f32]) -> Result<(Denominator, Option<usize>)> {
    let Denominator::Regularised { .. } = g else {
        return Ok((g, None));
    };
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in den.iter().enumerate() {
        if v.is_nan() {
            return Ok((g.at_max(v), Some(i)));
        }
        if best.is_none_or(|(_, m)| v > m) {
            best = Some((i, v));
        }
    }
    let (at, max) = best.unwrap_or((0, 0.0));
    if max <= 0.0 {
        return Err(Error::ZeroDenominator { max });
    }
    Ok((g.at_max(max), Some(at)))
}

/// For [`Denominator::Regularised`]: the cotangent its maximum adds at the maximum's pixel,
/// `max_fraction·Σ_p ∂L/∂g_p` (the sum in `f64`, pixel order, then rounded to `f32`).
pub(crate) fn max_cotangent(
    plan: &Region,
    g: Denominator,
    cot: &[f32],
    out: &[f32],
    den: &[f32],
    lanes: usize,
) -> f32 {
    let Denominator::Regularised { max_fraction, .. } = plan.options.denominator else {
        return 0.0;
    };
    let total = crate::kernel::blocked_sum(den.len(), |p| {
        let at = p * lanes..(p + 1) * lanes;
        crate::kernel::region_g_cotangent(&cot[at.clone()], &out[at], den[p], g) as f64
    });
    max_fraction * total as f32
}
