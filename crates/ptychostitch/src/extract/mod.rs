//! Extraction: PtychoPINN's `extract_patches_position`, the operation that cuts patches back
//! out of an image at sub-pixel positions, and its vector–Jacobian product
//! (`docs/semantics.md` §9).
//!
//! Image `b` (`S×S`) is translated by each of its `C` offsets `[x, y]` with the arithmetic of
//! the reassembly's translation (§2 step 4: bilinear, zero outside the image; the offsets are
//! cast to `f32`, **not** re-centred, **not** negated), and the centre `N×N` of each translated
//! image is kept (`(S − N)/2` trimmed from each side). Output row `b·C + c` is image `b` at its
//! `c`-th offset, PtychoPINN's flat layout.
//!
//! As for the reassembly, a literal [`reference`] (every translated image computed whole, then
//! trimmed; its adjoint scattered over the whole image) is the oracle, and a [`fast`] path that
//! computes only the kept window gives the same bits for every input and thread count.

pub(crate) mod fast;
pub(crate) mod reference;

use crate::Implementation;
use crate::adjoint::{Gradients, Wrt, raw_shifts};
use crate::error::{Error, Result};
use crate::geometry::{offset_pairs, patch_stack};
use crate::kernel::{Convention, ShiftGradient};
use crate::parallel::Schedule;
use crate::sample::{Sample, c_order_lanes};
use ndarray::{Array2, Array3, ArrayView, ArrayView3, Dimension};
use std::borrow::Cow;

/// An extraction plan: the offsets, the number of patches per image `C`, the image side `S`
/// and the patch side `N`, validated once.
///
/// ```
/// use ndarray::{Array2, Array3};
/// use ptychostitch::Extraction;
///
/// // One 16×16 image, two 8×8 patches: at the centre, and shifted by x = +1 (content moves
/// // right, so the patch's pixel (r, c) shows the image at column c + 4 − 1).
/// let offsets = Array2::from_shape_vec((2, 2), vec![0.0, 0.0, 1.0, 0.0]).unwrap();
/// let plan = Extraction::new(offsets.view(), 2, 16, 8).unwrap();
/// let image = Array3::from_shape_fn((1, 16, 16), |(_, r, c)| (r * 16 + c) as f32);
/// let patches = plan.extract(image.view()).unwrap();
/// assert_eq!(patches.dim(), (2, 8, 8));
/// assert_eq!(patches[[0, 0, 0]], image[[0, 4, 4]]);
/// assert_eq!(patches[[1, 0, 1]], image[[0, 4, 4]]);
/// ```
#[derive(Debug, Clone)]
pub struct Extraction {
    per_image: usize,
    side: usize,
    patch: usize,
    trim: usize,
    shifts: Vec<[f32; 2]>,
    convention: Convention,
    schedule: Schedule,
    implementation: Implementation,
}

impl Extraction {
    /// Plans the extraction of one `N×N` patch per offset from `S×S` images, `C` = `per_image`
    /// consecutive offsets per image. Offsets have `B·C` leading and two values `[x, y]` after
    /// it (`(B·C, 2)`, `(B·C, 1, 1, 2)`, …), in PtychoPINN's flat order (row `b·C + c`).
    pub fn new<D: Dimension>(
        offsets: ArrayView<'_, f64, D>,
        per_image: usize,
        image_side: usize,
        patch_size: usize,
    ) -> Result<Self> {
        Self::new_in(
            Convention::TensorFlow,
            offsets,
            per_image,
            image_side,
            patch_size,
        )
    }

    /// [`Extraction::new`] with `convention`'s translation arithmetic:
    /// [`Convention::TensorFlow`] (PtychoPINN's `extract_patches_position`, which needs `N < S`)
    /// or [`Convention::Torch`] (its torch `extract_channels_from_region`, where `N = S` keeps
    /// the whole translated region).
    pub fn new_in<D: Dimension>(
        convention: Convention,
        offsets: ArrayView<'_, f64, D>,
        per_image: usize,
        image_side: usize,
        patch_size: usize,
    ) -> Result<Self> {
        Self::checked(
            convention, offsets, per_image, image_side, patch_size, false,
        )
    }

    /// Each `S×S` image translated by its offset (`(B, 2)` `[x, y]`, one per image) in its own
    /// frame, TensorFlow's arithmetic: the extraction with `N = S`, which PtychoPINN's
    /// `center_channels` computes (with the offsets negated) and [`Extraction::new`] refuses
    /// because PtychoPINN's `extract_patches_position` returns an empty array there.
    pub fn translation<D: Dimension>(offsets: ArrayView<'_, f64, D>, side: usize) -> Result<Self> {
        Self::checked(Convention::TensorFlow, offsets, 1, side, side, true)
    }

    fn checked<D: Dimension>(
        convention: Convention,
        offsets: ArrayView<'_, f64, D>,
        per_image: usize,
        image_side: usize,
        patch_size: usize,
        same_frame: bool,
    ) -> Result<Self> {
        let pairs = offset_pairs(offsets)?;
        if pairs.is_empty() {
            return Err(Error::NoPatches);
        }
        let too_large = match convention {
            Convention::TensorFlow if same_frame => patch_size != image_side,
            Convention::TensorFlow => patch_size >= image_side,
            Convention::Torch => patch_size > image_side || image_side < 2,
        };
        if patch_size == 0 || too_large || !(image_side - patch_size).is_multiple_of(2) {
            return Err(Error::ExtractSize {
                side: image_side,
                patch: patch_size,
            });
        }
        if per_image == 0 || pairs.len() % per_image != 0 {
            return Err(Error::ExtractCount {
                images: pairs.len() / per_image.max(1),
                per_image,
                offsets: pairs.len(),
                expected: (pairs.len() / per_image.max(1) + 1) * per_image,
            });
        }
        let mut shifts =
            crate::memory::try_with_capacity(pairs.len(), || "the offsets as f32".into())?;
        for (index, &[x, y]) in pairs.iter().enumerate() {
            let single = [x as f32, y as f32];
            for (axis, (v, raw)) in single.iter().zip([x, y]).enumerate() {
                if !v.is_finite() {
                    return Err(Error::NonFiniteOffset {
                        index,
                        axis: ["x", "y"][axis],
                        value: raw,
                    });
                }
            }
            shifts.push(single);
        }
        Ok(Self {
            per_image,
            side: image_side,
            patch: patch_size,
            trim: (image_side - patch_size) / 2,
            shifts,
            convention,
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

    /// Runs `implementation` in [`Extraction::run`] and [`Extraction::vjp`]: the fast path (the
    /// default) or the reference, the oracle (same bits).
    pub fn with_implementation(mut self, implementation: Implementation) -> Self {
        self.implementation = implementation;
        self
    }

    /// Uses fewer workers when each would get fewer than `pixels` pixels (0: always all, as
    /// the tests do). The result does not depend on it.
    pub fn with_min_pixels_per_worker(mut self, pixels: usize) -> Self {
        self.schedule.min_pixels_per_worker = pixels;
        self
    }

    /// Number of images `B` the plan expects.
    pub fn images(&self) -> usize {
        self.shifts.len() / self.per_image
    }

    /// Output shape `(B·C, N, N)`.
    pub fn output_shape(&self) -> (usize, usize, usize) {
        (self.shifts.len(), self.patch, self.patch)
    }

    /// The image side `S`.
    pub fn image_side(&self) -> usize {
        self.side
    }

    /// Patches per image, `C`.
    pub fn per_image(&self) -> usize {
        self.per_image
    }

    /// Pixels trimmed from each side of a translated image: `(S − N)/2`.
    pub fn trim(&self) -> usize {
        self.trim
    }

    /// Whose translation arithmetic this extraction uses.
    pub fn convention(&self) -> Convention {
        self.convention
    }

    /// The offsets `[x, y]` as `f32`.
    pub fn shifts(&self) -> &[[f32; 2]] {
        &self.shifts
    }

    /// The patches cut from `(B, S, S)` or `(B, S, S, 1)` images: `(B·C, N, N)`. Fast path.
    pub fn extract<T: Sample, D: Dimension>(
        &self,
        images: ArrayView<'_, T, D>,
    ) -> Result<Array3<T>> {
        let images = self.check_images(images)?;
        let out = fast::extract(self, images, self.schedule)?;
        Ok(Array3::from_shape_vec(self.output_shape(), out).expect("B·C·N·N values"))
    }

    /// The reference (oracle) of [`Extraction::extract`]: every image translated whole, then
    /// trimmed.
    pub fn extract_reference<T: Sample, D: Dimension>(
        &self,
        images: ArrayView<'_, T, D>,
    ) -> Result<Array3<T>> {
        let images = self.check_images(images)?;
        let out = reference::extract(self, images)?;
        Ok(Array3::from_shape_vec(self.output_shape(), out).expect("B·C·N·N values"))
    }

    /// The extraction by this plan's implementation ([`Extraction::with_implementation`]): the
    /// one entry the front ends dispatch through.
    pub fn run<T: Sample, D: Dimension>(&self, images: ArrayView<'_, T, D>) -> Result<Array3<T>> {
        match self.implementation {
            Implementation::Fast => self.extract(images),
            Implementation::Reference => self.extract_reference(images),
        }
    }

    /// The VJP by this plan's implementation: the one entry the front ends dispatch through.
    pub fn vjp<T: Sample, D: Dimension>(
        &self,
        images: ArrayView<'_, T, D>,
        cotangent: ArrayView3<'_, T>,
        wrt: Wrt,
    ) -> Result<Gradients<T>> {
        match self.implementation {
            Implementation::Fast => self.extract_vjp(images, cotangent, wrt),
            Implementation::Reference => self.extract_vjp_reference(images, cotangent, wrt),
        }
    }

    /// The vector–Jacobian product of [`Extraction::extract`]: from the `(B·C, N, N)` cotangent
    /// of the patches, the images' cotangent (`(B, S, S)`, in [`Gradients::patches`]) and the
    /// offsets' (`(B·C, 2)`, `[x, y]`), as `wrt` asks. Fast path.
    pub fn extract_vjp<T: Sample, D: Dimension>(
        &self,
        images: ArrayView<'_, T, D>,
        cotangent: ArrayView3<'_, T>,
        wrt: Wrt,
    ) -> Result<Gradients<T>> {
        let images = self.check_images(images)?;
        let cot = self.cotangent_lanes(cotangent)?;
        let (grads, sums) = fast::extract_vjp(self, images, &cot, wrt, self.schedule)?;
        Ok(self.gradients(grads, sums, wrt))
    }

    /// The reference (oracle) of [`Extraction::extract_vjp`].
    pub fn extract_vjp_reference<T: Sample, D: Dimension>(
        &self,
        images: ArrayView<'_, T, D>,
        cotangent: ArrayView3<'_, T>,
        wrt: Wrt,
    ) -> Result<Gradients<T>> {
        let images = self.check_images(images)?;
        let cot = self.cotangent_lanes(cotangent)?;
        let (grads, sums) = reference::extract_vjp(self, images, &cot, wrt)?;
        Ok(self.gradients(grads, sums, wrt))
    }

    fn gradients<T: Sample>(
        &self,
        grads: Option<Vec<T>>,
        sums: Vec<ShiftGradient>,
        wrt: Wrt,
    ) -> Gradients<T> {
        let s = self.side;
        Gradients {
            patches: grads
                .map(|v| Array3::from_shape_vec((self.images(), s, s), v).expect("B·S·S values")),
            offsets: wrt.offsets.then(|| Array2::from(raw_shifts(&sums))),
        }
    }

    /// The images as `(B, S, S)`, or the error for a shape or count this extraction does not
    /// take (what every extraction and its VJP check first).
    pub fn check_images<'a, T, D: Dimension>(
        &self,
        images: ArrayView<'a, T, D>,
    ) -> Result<ArrayView3<'a, T>> {
        let shape = images.shape().to_vec();
        let stack = patch_stack(images).map_err(|_| Error::ImageShape {
            shape: shape.clone(),
        })?;
        let (b, s, _) = stack.dim();
        if s != self.side {
            return Err(Error::ImageShape { shape });
        }
        if b * self.per_image != self.shifts.len() {
            return Err(Error::ExtractCount {
                images: b,
                per_image: self.per_image,
                offsets: self.shifts.len(),
                expected: b * self.per_image,
            });
        }
        Ok(stack)
    }

    /// The patches' cotangent `(B·C, N, N)` as C-ordered lanes (borrowed, or copied if
    /// strided), or the error for another shape: what every VJP of this extraction reads.
    pub fn cotangent_lanes<'v, T: Sample>(&self, cot: ArrayView3<'v, T>) -> Result<Cow<'v, [f32]>> {
        let (n, p, _) = self.output_shape();
        if cot.dim() != (n, p, p) {
            return Err(Error::CotangentShape {
                what: "cotangent",
                expected: vec![n, p, p],
                found: cot.shape().to_vec(),
            });
        }
        c_order_lanes(cot, || "the patches' cotangent".into())
    }
}

/// The images' C-ordered lanes, `S·S·LANES` per image (borrowed, or copied if strided).
pub(crate) fn image_lanes<'v, T: Sample>(images: ArrayView3<'v, T>) -> Result<Cow<'v, [f32]>> {
    c_order_lanes(images, || "a copy of the images".into())
}
